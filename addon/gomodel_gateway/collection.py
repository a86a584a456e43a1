"""Garbage collection for a proxy whose every connection is a reference cycle.

mitmproxy's connection handlers, layers and flows refer to one another, so a finished
connection, with every request and answer body it carried, is freed only by a full garbage
collection, which Python runs rarely: memory grew by about twice the body of every large call
until then (17 MiB for each 8.6 MiB call). And a full collection walks every object, 60-80 ms for
mitmproxy's hundreds of thousands: a pause of the whole proxy.

So once the proxy is up, the objects of its start are frozen out of collections (`gc.freeze`),
which brings a full collection down to a few milliseconds, and one follows closed connections
and finished calls, at most once per interval.

What a collection frees, glibc's allocator keeps for later (the top of each arena, and blocks
too small for their own mapping): after 400 abandoned 2 MiB calls RSS stayed 210 MiB above its
start-up figure. So each collection is followed by `malloc_trim(0)`, which gives free pages
back to the system (where the C library is glibc; elsewhere nothing).
"""

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable

COLLECTION_INTERVAL = 1.0  # seconds


def glibc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)`, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


TRIM = glibc_trim()


def collect_and_trim() -> None:
    gc.collect()
    if TRIM is not None:
        TRIM()


class Collector:
    def __init__(
        self,
        interval: float = COLLECTION_INTERVAL,
        loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.get_running_loop,
        collect: Callable[[], object] = collect_and_trim,
    ) -> None:
        self.interval, self.loop, self.collect = interval, loop, collect
        self.pending: asyncio.TimerHandle | None = None

    @staticmethod
    def freeze_startup() -> None:
        """What exists now (modules, options, the addon) is never garbage: leave it out."""
        gc.collect()
        gc.freeze()

    @staticmethod
    def thaw() -> None:
        """The proxy stops: its objects may be collected again."""
        gc.unfreeze()

    def soon(self) -> None:
        """Garbage was made (a connection closed, a call finished): collect within the
        interval, once for all that comes meanwhile."""
        if self.pending is not None:
            return
        try:
            loop = self.loop()
        except RuntimeError:  # no event loop (hooks called by a unit test): Python's own
            return
        self.pending = loop.call_later(self.interval, self._run)

    def _run(self) -> None:
        self.pending = None
        self.collect()

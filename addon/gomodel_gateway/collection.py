"""Garbage collection for a proxy whose every connection is a reference cycle.

mitmproxy's connection handlers, layers and flows refer to one another, so a finished
connection, with every request and answer body it carried, is freed only by a full garbage
collection, which Python runs rarely: memory grew by about twice the body of every large call
until then (17 MiB for each 8.6 MiB call). And a full collection walks every object, 60-80 ms for
mitmproxy's hundreds of thousands: a pause of the whole proxy.

So once the proxy is up, the objects of its start are frozen out of collections (`gc.freeze`),
which brings a full collection down to a few milliseconds, and one follows closed connections
and finished calls, at most once per interval.
"""

import asyncio
import gc
from collections.abc import Callable

COLLECTION_INTERVAL = 1.0  # seconds


class Collector:
    def __init__(
        self,
        interval: float = COLLECTION_INTERVAL,
        loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.get_running_loop,
        collect: Callable[[], object] = gc.collect,
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

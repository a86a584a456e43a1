"""Client connections that carry no request are closed after a while, while the port is shared.

mitmproxy keeps a client's connection for as long as the client likes. A stranger can open a
thousand connections and send half a request head on each, or nothing, and keep them (about
120 KB each with a 64 KiB unfinished head) until the process runs out of file descriptors.
While pass-through is closed, a client connection with no request in progress (its first request
head not yet complete, or idle between requests) is closed once it has been so for the idle
timeout. A request in progress, a slow upload or a long stream, is never cut by it. (While
pass-through is open, the gateway leaves other hosts' tunnels and WebSockets alone.)
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_IDLE_TIMEOUT = 60.0


@dataclass
class _Connection:
    requests: set[str] = field(default_factory=set)  # ids of its flows in progress
    timer: asyncio.TimerHandle | None = None


class IdleConnections:
    """Which client connections carry a request; a timer on each that carries none.

    `timeout()` says how long one may idle (None: forever); `close(client_id)` closes one.
    """

    def __init__(
        self,
        timeout: Callable[[], float | None],
        close: Callable[[str], None],
        loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.get_running_loop,
    ) -> None:
        self.timeout, self.close, self.loop = timeout, close, loop
        self.connections: dict[str, _Connection] = {}

    def opened(self, client_id: str) -> None:
        self.connections[client_id] = _Connection()
        self._arm(client_id)

    def tunnel_opened(self, client_id: str) -> None:
        """A CONNECT was answered: the tunnel's first request starts the clock again."""
        if (state := self.connections.get(client_id)) and not state.requests:
            self._arm(client_id)

    def request_started(self, client_id: str, flow_id: str) -> None:
        if state := self.connections.get(client_id):  # not a replay's made-up client
            state.requests.add(flow_id)
            self._disarm(state)

    def request_ended(self, client_id: str, flow_id: str) -> None:
        state = self.connections.get(client_id)
        if state and flow_id in state.requests:
            state.requests.discard(flow_id)
            if not state.requests:
                self._arm(client_id)

    def closed(self, client_id: str) -> None:
        if state := self.connections.pop(client_id, None):
            self._disarm(state)

    def _arm(self, client_id: str) -> None:
        state = self.connections[client_id]
        self._disarm(state)
        if (seconds := self.timeout()) is not None:
            state.timer = self.loop().call_later(seconds, self._expire, client_id)

    def _expire(self, client_id: str) -> None:
        if (state := self.connections.get(client_id)) and not state.requests:
            state.timer = None
            self.close(client_id)

    @staticmethod
    def _disarm(state: _Connection) -> None:
        if state.timer:
            state.timer.cancel()
            state.timer = None


def parse_idle_timeout(value: str) -> float | None:
    """gomodel_idle_timeout: seconds (a number above 0), or off."""
    text = value.strip().lower()
    if text == "off":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"gomodel_idle_timeout: {value!r} is not a number of seconds or off")
    return seconds

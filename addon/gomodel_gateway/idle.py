"""Client connections that carry no call are closed after a while, while the port is shared.

mitmproxy keeps a client's connection for as long as the client likes. A stranger can open a
thousand connections and send half a request head on each, or nothing, and keep them (about
120 KB each with a 64 KiB unfinished head) until the process runs out of file descriptors.
While pass-through is closed, a client connection is closed once it has carried no admitted call
for the idle timeout: the clock starts when the connection opens and again when a call ends, and
stops while a call is in progress (a slow upload, a long stream), which is never cut. What a
stranger sends (a refused request, `/health`, a request head that never ends) does not stop it.
Once a connection has carried a call made with a master key, or one sent to Oracle with a
client key, it is its client's to keep: the key holder is known, and an HTTP/2 answer may still
be waiting for the client to read it when its call has ended for mitmproxy. A client key's call
the gateway answers itself (`/v1/models`, a refusal) does not count: any client key could
otherwise hold connections for ever, one such call each. (While pass-through is open, the
gateway leaves connections alone: other hosts' tunnels and WebSockets may idle.)
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Connection:
    calls: set[str] = field(default_factory=set)  # ids of its flows in progress
    timer: asyncio.TimerHandle | None = None
    trusted: bool = False  # it carried a call made with a gateway key


class IdleConnections:
    """Which client connections carry a call; a timer on each that carries none.

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

    def call_started(self, client_id: str, flow_id: str, keyed: bool) -> None:
        """An admitted call (`keyed`: its connection is now its client's to keep; said again
        for a call already started once it is sent to Oracle)."""
        if state := self.connections.get(client_id):  # not a replay's made-up client
            state.calls.add(flow_id)
            state.trusted = state.trusted or keyed
            self._disarm(state)

    def call_ended(self, client_id: str, flow_id: str) -> None:
        state = self.connections.get(client_id)
        if state and flow_id in state.calls:
            state.calls.discard(flow_id)
            if not state.calls:
                self._arm(client_id)

    def closed(self, client_id: str) -> None:
        if state := self.connections.pop(client_id, None):
            self._disarm(state)

    def _arm(self, client_id: str) -> None:
        state = self.connections[client_id]
        self._disarm(state)
        if not state.trusted and (seconds := self.timeout()) is not None:
            state.timer = self.loop().call_later(seconds, self._expire, client_id)

    def _expire(self, client_id: str) -> None:
        if state := self.connections.get(client_id):  # a call's start cancels the timer
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

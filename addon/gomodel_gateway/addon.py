"""The gateway as mitmproxy loads it: four addons sharing one configuration and one desk of
calls, in the order mitmproxy calls their hooks.

- `lifecycle.Runtime`: options, the configuration (reloads included) and everything built from
  it; starts and stops the relay, discovery, the ledger.
- `guard.PortGuard`: traffic that is not for the gateway (pass-through, loops, CONNECTs, every
  connection mitmproxy opens).
- `connections.Connections`: idle client connections, sockets mitmproxy leaves open.
- `gateway.Gateway`: the gateway's requests, each translated between its flow and its `Call`
  (flows.CallDesk) and served by the call service (service.py), which knows nothing of
  mitmproxy.
"""

from .connections import Connections
from .flows import REDACTED, CallDesk
from .gateway import Gateway
from .guard import PortGuard
from .lifecycle import Runtime
from .service import CallService

__all__ = ["REDACTED", "GoModel"]


class GoModel:
    def __init__(self) -> None:
        self.runtime = Runtime()
        self.service = CallService(self.runtime)
        self.desk = CallDesk(self.service)
        self.connections = Connections(self.runtime)
        self.gateway = Gateway(self.runtime, self.desk, self.connections)
        self.addons = [self.runtime, PortGuard(self.runtime, self.desk), self.connections]
        self.addons.append(self.gateway)

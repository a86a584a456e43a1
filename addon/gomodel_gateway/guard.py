"""The port guard, a mitmproxy addon of its own: what the port does with traffic that is not for
the gateway. While pass-through is closed (exposure.py), requests and CONNECTs elsewhere are
refused, and mitmproxy connects nowhere but the stream relay; while it is open, they pass
through, marked with a Via token, and never to this proxy itself (a loop), under any name of
this machine. Gateway requests are the gateway addon's (gateway.py)."""

import asyncio
import logging
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks

from .exposure import is_looping, loop_detected, passthrough_refused
from .flows import CallDesk, Stage, fail_closed, for_gateway, is_gateway_replay
from .hosts import ip_address, is_listen_address
from .lifecycle import Runtime

logger = logging.getLogger("gomodel")

LOOP_REFUSAL = "gomodel: the destination is this proxy itself (a loop)"
GATEWAY_HOST_REFUSAL = "gomodel: the destination is a gateway hostname, served here only"
CLOSED_REFUSAL = "gomodel: pass-through is closed; this proxy connects only for the gateway"
RESOLVE_SECONDS = 2.0


class PortGuard:
    def __init__(self, runtime: Runtime, desk: CallDesk) -> None:
        self.runtime, self.desk = runtime, desk

    @fail_closed(Stage.HEADERS)
    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT elsewhere is refused while pass-through is closed, before any tunnel."""
        if self.runtime.exposure.open or for_gateway(flow, self.runtime.hosts):
            return
        target = f"{flow.request.host}:{flow.request.port}"
        self.desk.refuse(flow, self.desk.start(flow), passthrough_refused(target))

    @fail_closed(Stage.HEADERS)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response:
            return
        request, runtime = flow.request, self.runtime
        if is_looping(request.headers.get_all("via"), runtime.via_token):
            self.desk.refuse_unread(flow, self.desk.start(flow), loop_detected())
        elif is_gateway_replay(flow) or for_gateway(flow, runtime.hosts):
            return  # the gateway's
        elif not runtime.exposure.open:
            refusal = passthrough_refused(request.pretty_url)
            self.desk.refuse_unread(flow, self.desk.start(flow), refusal)
        elif self.connection_refusal((request.host, request.port)):
            self.desk.refuse_unread(flow, self.desk.start(flow), loop_detected())
        else:  # marked, so that a request coming back to this proxy is a loop
            request.headers.add("via", f"1.1 {runtime.via_token}")

    @fail_closed(Stage.REQUEST)
    async def request(self, flow: http.HTTPFlow) -> None:
        """Passed through: a name of this machine that the headers could not tell (it has to be
        resolved) would bring the request back here."""
        if flow in self.desk.calls or flow.response or not self.runtime.exposure.open:
            return
        if await self.resolved_loop((flow.request.host, flow.request.port)):
            self.desk.refuse(flow, self.desk.start(flow), loop_detected())

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Every connection mitmproxy itself opens (HTTP, raw TCP inside a tunnel, UDP): while
        pass-through is closed, only to the relay, since the gateway needs nothing else; never
        to this proxy, under any name of this machine (a hostname is resolved first). (A killed
        TCP flow is still connected by mitmproxy, so this is where raw traffic is stopped.)"""
        try:
            refusal = self.connection_refusal(data.server.address)
            if refusal is None and data.server.address and self.runtime.exposure.open:
                refusal = await self.resolved_loop(data.server.address)
        except Exception:  # fail closed: an unexpected error must not open the proxy
            logger.exception("gomodel: failed to check a server connection")
            refusal = "gomodel: internal error while checking the destination"
        if refusal:
            data.server.error = refusal

    def connection_refusal(self, address: tuple[str, int] | None) -> str | None:
        if address is None:
            return None
        host, port, runtime = address[0], address[1], self.runtime
        if runtime.relay.port and (host, port) == ("127.0.0.1", runtime.relay.port):
            return None
        if not runtime.exposure.open:
            return CLOSED_REFUSAL
        if host.lower().rstrip(".") in runtime.hosts:  # the gateway never connects to itself:
            return GATEWAY_HOST_REFUSAL  # a body streamed by stream_large_bodies stays home
        if is_listen_address(host, port, listen_addresses()):
            return LOOP_REFUSAL
        return None

    async def resolved_loop(self, address: tuple[str, int]) -> str | None:
        """A hostname that resolves to this proxy (the machine's own name, say) is a loop too."""
        host, port = address[0], address[1]
        if ip_address(host) is not None:
            return None
        try:
            async with asyncio.timeout(RESOLVE_SECONDS):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        except (OSError, TimeoutError):
            return None  # mitmproxy's own connection attempt will fail and say why
        listening = listen_addresses()
        if any(is_listen_address(str(info[4][0]), port, listening) for info in infos):
            return LOOP_REFUSAL
        return None


def listen_addresses() -> list[Any]:
    proxyserver = ctx.master.addons.get("proxyserver")
    return proxyserver.listen_addrs() if proxyserver else []

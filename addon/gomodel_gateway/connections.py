"""Client connections, a mitmproxy addon of its own: while pass-through is closed, a connection
that carries no call for gomodel_idle_timeout is closed (idle.py); a connection that carried a
call made with a gateway key is its client's to keep; and sockets mitmproxy leaves open after a
disconnect are closed (workarounds.close_socket)."""

import logging

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import server_hooks

from .idle import IdleConnections
from .lifecycle import Runtime
from .workarounds import close_socket

logger = logging.getLogger("gomodel")


class Connections:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.idle = IdleConnections(self.idle_timeout, self.close_client)

    def call_in_progress(self, flow: http.HTTPFlow, keyed: bool) -> None:
        """A call on this connection is in progress (`keyed`: the connection is now its
        client's to keep)."""
        self.idle.call_started(flow.client_conn.id, flow.id, keyed)

    def call_ended(self, flow: http.HTTPFlow) -> None:
        """(From the gateway's response and error hooks: one hook per event, fewer to
        dispatch.)"""
        self.idle.call_ended(flow.client_conn.id, flow.id)

    def client_connected(self, client: connection.Client) -> None:
        self.idle.opened(client.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self.idle.closed(client.id)
        self.runtime.collector.soon()
        if close_socket(ctx.master.addons.get("proxyserver"), client.id, client):
            logger.debug("gomodel: closed a client socket mitmproxy left open")

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        if close_socket(proxyserver, data.client.id, data.server):
            logger.debug("gomodel: closed a server socket mitmproxy left open")

    def idle_timeout(self) -> float | None:
        """How long a client connection may carry no call: while pass-through is closed."""
        runtime = self.runtime
        return None if runtime.exposure.open else runtime.settings.idle_timeout

    def close_client(self, client_id: str) -> None:
        if close_socket(ctx.master.addons.get("proxyserver"), client_id, None):
            self.runtime.metrics.idle_closed.inc()

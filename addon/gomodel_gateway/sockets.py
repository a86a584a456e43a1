"""Closing a client's socket that mitmproxy 12 leaves open.

When mitmproxy closes a client connection while that client is still sending (a refused upload),
its connection handler can be cancelled while it waits to process the data it read; the handler
then ends without closing the socket (proxy/server.py, `handle_connection`). The socket stays
open, unread, until garbage collection: a client that keeps uploading hangs instead of seeing the
connection reset, and each such connection keeps a file descriptor. Closing the writer in the
`client_disconnected` hook, which runs after the handler ended, releases both.
"""

from typing import Any

from mitmproxy import connection


def close_leftover_socket(proxyserver: Any, client: connection.Client) -> bool:
    """Close the client's socket if mitmproxy did not; True when it had to."""
    handler = proxyserver.connections.get(client.id) if proxyserver else None
    io = handler.transports.get(client) if handler else None
    writer = io.writer if io else None
    if writer is None or writer.is_closing():
        return False
    writer.close()
    return True

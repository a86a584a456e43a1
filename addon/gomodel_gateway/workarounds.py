"""Where mitmproxy 12 lets a stranger cost the gateway, or answers in its own shape, mended
from outside.

- **Sockets left open.** When mitmproxy closes a connection while data from it is still being
  processed (a client still uploading a refused body; with several HTTP/2 streams at once, the
  relay's side of each refused stream), its connection handler can be cancelled while it waits;
  the handler then ends without closing the socket (proxy/server.py, `handle_connection`). The
  socket stays open until garbage collection: a client that keeps uploading hangs instead of
  seeing the connection reset, and each such connection keeps a file descriptor (one per
  refused HTTP/2 stream, a stranger's to spend). `close_socket`, called from the
  `client_disconnected` and `server_disconnected` hooks (which run after the handler ended),
  releases them.
- **Unbounded request heads.** An HTTP/1 request head is buffered until its blank line arrives,
  however long it gets (`Http1Server.read_headers`: "FIXME: protect against header size DoS"),
  and re-scanned on every read: 30 MB of header lines without an end cost 130 MB of memory and a
  30 MB log line when the client leaves. `bound_request_heads` answers 431 and closes the
  connection once an unfinished head passes `MAX_REQUEST_HEAD`.
- **Bodies kept until a full garbage collection.** mitmproxy checks the fields of every request
  and response it builds (`MessageData.__post_init__`) with `typecheck.check_option_type`, which
  keeps the TypeError it may raise in a local variable; for an optional field left empty
  (`trailers=None`, always) the union check raises and catches one, and that exception's
  traceback holds the frame, the frame holds the exception: a reference cycle that keeps every
  calling frame, with the message and its body, alive until Python's rare full collection. An
  8.6 MiB call left about 26 MiB behind until then (9 MiB of it here, the rest in mitmproxy's
  connections: see collection.py), so memory grew with each large call.
  `acyclic_typecheck` puts in a copy of the check that raises its errors without keeping them.
- **A log anyone can fill.** mitmproxy's connection log (logger `mitmproxy.proxy.server`, where
  every layer's messages go) echoes what a client sent: "Client closed connection before
  completing request headers: {buf!r}" repeats an unfinished head whole, so 300 connections
  sending 63 KiB each and closing wrote 19.5 MB in 2 s. `bound_connection_log` installs a filter
  on that logger that clips each line to `MAX_LOG_LINE` characters and lets at most
  `LOG_LINES_PER_SECOND` lines through on average (bursts of `LOG_LINE_BURST`), saying how many
  it dropped. mitmdump's own line per flow (the dumper) is bounded the same way for flows
  the gateway refused to a stranger (no key): `quiet_strangers_flows` (at most
  `STRANGER_LINES_PER_SECOND`); the gateway's own access log bounds its lines about strangers
  itself (accesslog.py).
- **Errors mitmproxy answers itself** on HTTP/1 (a body past `body_size_limit`, a request it
  cannot parse, a server it cannot reach) are an HTML page that may echo the request line.
  `json_protocol_errors` makes them OpenAI-shaped JSON, like every other answer of the gateway.
"""

import logging
import time
import types
import typing
from collections.abc import Generator, Sequence
from typing import Any

from mitmproxy import connection, http
from mitmproxy.addons import dumper
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._http1 import Http1Server
from mitmproxy.utils import typecheck

from .accesslog import STRANGER_LINE_BURST, STRANGER_LINES_PER_SECOND, LineBudget
from .errors import clip_for_message, error_body

MAX_REQUEST_HEAD = 64 * 1024
CONNECTION_LOGGER = "mitmproxy.proxy.server"
MAX_LOG_LINE = 200  # characters
LOG_LINES_PER_SECOND = 50.0
LOG_LINE_BURST = 200


def close_socket(proxyserver: Any, client_id: str, closed: connection.Connection | None) -> bool:
    """Close the socket of a connection of client `client_id`'s (the client's own when `closed`
    is None, or one to a server) unless it is closed already; True when it was open. mitmproxy
    then sees the connection end as if the other side had closed it."""
    handler = proxyserver.connections.get(client_id) if proxyserver else None
    if handler and closed is None:
        closed = handler.client
    io = handler.transports.get(closed) if handler else None
    writer = io.writer if io else None
    if writer is None or writer.is_closing():
        return False
    writer.close()
    return True


def closing_answer(status: int, message: str, code: str) -> bytes:
    """An OpenAI-shaped error as raw HTTP/1 bytes, the connection closed after it."""
    body = error_body(status, message, code=code)
    response = http.Response.make(
        status, body, {"content-type": "application/json", "connection": "close"}
    )
    return http1.assemble_response(response)


def head_too_large() -> bytes:
    return closing_answer(
        431,
        f"The request head is larger than {MAX_REQUEST_HEAD // 1024} KiB; the gateway accepts "
        "no more of it.",
        "request_header_too_large",
    )


def bound_request_heads() -> None:
    """Patch mitmproxy's HTTP/1 server side once per process (idempotent)."""
    read_headers = Http1Server.read_headers
    if getattr(read_headers, "bounded_by_gomodel", False):
        return

    def bounded(self: Http1Server, event: events.Event) -> Generator[commands.Command, Any, None]:
        yield from read_headers(self, event)
        if self.state == self.read_headers and len(self.buf) > MAX_REQUEST_HEAD:
            self.buf = type(self.buf)()  # what was read of the head is dropped
            yield commands.SendData(self.conn, head_too_large())
            yield commands.CloseConnection(self.conn)
            self.state = self.done

    bounded.bounded_by_gomodel = True  # type: ignore[attr-defined]
    Http1Server.read_headers = bounded  # type: ignore[method-assign]


PROTOCOL_ERROR_CODES = {
    400: "invalid_request",
    413: "request_too_large",
    501: "not_implemented",
    502: "bad_gateway",
    504: "gateway_timeout",
}


# mitmproxy's 413 names its own option; the gateway's size limit is gomodel_max_body_size.
TOO_LARGE = "Request body is larger than this gateway accepts (option gomodel_max_body_size)."


def protocol_error(status: int, message: str = "") -> bytes:
    """mitmproxy's own HTTP/1 error answer, as JSON."""
    shown = (
        TOO_LARGE
        if status == 413
        else f"The proxy refused this request: {clip_for_message(message)}"
    )
    return closing_answer(status, shown, PROTOCOL_ERROR_CODES.get(status, "proxy_error"))


def json_protocol_errors() -> None:
    """Patch mitmproxy's HTTP/1 error answers once per process (idempotent)."""
    _http1.make_error_response = protocol_error


def check_type(name: str, value: Any, typeinfo: Any) -> None:
    """mitmproxy's `typecheck.check_option_type`, the same checks and messages, with no
    exception kept in a variable (see the module's docstring)."""
    origin = typing.get_origin(typeinfo)
    if origin is typing.Union or origin is types.UnionType:
        for member in typing.get_args(typeinfo):
            try:
                check_type(name, value, member)
            except TypeError:
                continue
            return
    elif origin is tuple:
        members = typing.get_args(typeinfo)
        if isinstance(value, tuple | list) and len(members) == len(value):
            for index, (item, member) in enumerate(zip(value, members, strict=True)):
                check_type(f"{name}[{index}]", item, member)
            return
    elif origin is Sequence:
        if isinstance(value, tuple | list):
            for item in value:
                check_type(name, item, typing.get_args(typeinfo)[0])
            return
    elif origin is typing.IO or typeinfo in (typing.TextIO, typing.BinaryIO):
        if hasattr(value, "read"):
            return
    elif (
        typeinfo is typing.Any
        or isinstance(value, typeinfo)
        or (typeinfo is float and isinstance(value, int))
    ):
        return
    raise TypeError(f"Expected {typeinfo} for {name}, but got {type(value)}.")


def acyclic_typecheck() -> None:
    """Put `check_type` in place of mitmproxy's check (idempotent)."""
    typecheck.check_option_type = check_type


def clip_line(text: str, limit: int = MAX_LOG_LINE) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class BoundedLog(logging.Filter):
    """Lines clipped, and dropped past the budget (the next line let through says how many)."""

    def __init__(self, budget: LineBudget) -> None:
        super().__init__()
        self.budget = budget

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.budget.take():
            return False
        message = clip_line(record.getMessage())
        if dropped := self.budget.dropped:
            self.budget.dropped = 0
            message = f"{message} ({dropped} connection log lines dropped before this one)"
        record.msg, record.args = message, None
        return True


def bound_connection_log() -> None:
    """Put a `BoundedLog` on mitmproxy's connection log (idempotent)."""
    logger = logging.getLogger(CONNECTION_LOGGER)
    if not any(isinstance(f, BoundedLog) for f in logger.filters):
        logger.addFilter(
            BoundedLog(LineBudget(LOG_LINES_PER_SECOND, LOG_LINE_BURST, time.monotonic))
        )


STRANGER = "gomodel_stranger"  # flow.metadata: the gateway refused it to a caller with no key


def quiet_strangers_flows(
    budget: LineBudget | None = None,
) -> None:
    """Bound the dumper's lines for flows refused to strangers (idempotent)."""
    if getattr(dumper.Dumper.match, "bounded", False):
        return
    budget = budget or LineBudget(STRANGER_LINES_PER_SECOND, STRANGER_LINE_BURST, time.monotonic)
    match = dumper.Dumper.match

    def bounded_match(self: dumper.Dumper, flow: Any) -> bool:
        if not match(self, flow):
            return False
        return not flow.metadata.get(STRANGER) or budget.take()

    bounded_match.bounded = True  # type: ignore[attr-defined]
    dumper.Dumper.match = bounded_match  # type: ignore[method-assign]

"""Between a mitmproxy flow and a `Call`: the one place a gateway request's flow is changed.

`CallDesk` keeps the call of each flow the gateway answers, and does to the flow what the call
service decided: a refusal (read or unread), a local answer, Oracle's answer, a stream pointed at
the relay. Once an answer is known, the flow shows what really went to Oracle (its URL, the body
sent, credentials redacted: `show_upstream`), and `finish` records the call once (the service's
record, then mitmweb's comment, mark and `flow.metadata["gomodel"]`). `fail_closed` turns an
exception in any hook into a 502 that forwards nothing.
"""

import dataclasses
import functools
import inspect
import json
import logging
import weakref
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, Protocol, TypedDict

from mitmproxy import connection, http

from . import safejson
from .call import Call, SentRequest
from .errors import JSON_HEADERS, ErrorCode, GatewayError, error_body
from .hosts import is_gateway_request
from .outcomes import Local, Outcome, Refused, Sent, Streamed
from .relay import REFUSAL_PATH
from .service import CallService
from .upstream import CLIENT_CREDENTIAL_HEADERS, REDACTED, shown_headers, upstream_location
from .workarounds import STRANGER

logger = logging.getLogger("gomodel")

MAX_LOGGED_URL = 200
METADATA = "gomodel"  # the flow.metadata key, kept in flow files
CREDENTIAL_FIELD_NAMES = frozenset(name.encode() for name in CLIENT_CREDENTIAL_HEADERS)
__all__ = ["REDACTED", "CallDesk", "Stage", "fail_closed"]


class FlowRecord(TypedDict):
    """What `flow.metadata["gomodel"]` holds for a routed call (a plain dict, so that flow files
    keep it): the client's own URL and model, for replays and mitmweb's view."""

    client_url: str
    method: str
    requested_model: str
    upstream_model: str
    candidates: list[str]
    endpoint: str
    stream: bool
    provider: str
    attempts: list[str]


class Stage(Enum):
    """Where a hook stands, for what a failure in it cost: said in the 502."""

    HEADERS = "nothing was sent to Oracle"
    REQUEST = "Oracle may have received it"  # once routed; before that, as HEADERS
    RESPONSE = "Oracle's answer is lost"


class HasDesk(Protocol):
    desk: "CallDesk"


Hook = Callable[[Any, http.HTTPFlow], Any]


def fail_closed(stage: Stage) -> Callable[[Hook], Hook]:
    """Answer 502 instead of letting mitmproxy pass the flow on unmodified after an exception."""

    def decorate(hook: Hook) -> Hook:
        def contain(addon: HasDesk, flow: http.HTTPFlow, error: Exception) -> None:
            logger.error("gomodel: internal error in %s hook", hook.__name__, exc_info=error)
            call = addon.desk.calls.pop(flow, None)  # later hooks leave this flow alone
            routed = call is not None and call.route is not None
            consequence = stage if stage is not Stage.REQUEST or routed else Stage.HEADERS
            flow.response = http.Response.make(502, failure_body(error, consequence), JSON_HEADERS)
            flow.comment = f"gomodel {ErrorCode.GATEWAY_ERROR}"
            flow.marked = ":red_circle:"

        if inspect.iscoroutinefunction(hook):

            @functools.wraps(hook)
            async def async_wrapper(addon: HasDesk, flow: http.HTTPFlow) -> None:
                try:
                    await hook(addon, flow)
                except Exception as e:
                    contain(addon, flow, e)

            return async_wrapper

        @functools.wraps(hook)
        def wrapper(addon: HasDesk, flow: http.HTTPFlow) -> None:
            try:
                hook(addon, flow)
            except Exception as e:
                contain(addon, flow, e)

        return wrapper

    return decorate


def failure_body(error: Exception, stage: Stage) -> bytes:
    return error_body(
        502,
        f"The gateway failed while handling this request ({type(error).__name__}); "
        f"{stage.value}. See the gateway log for details.",
        code=ErrorCode.GATEWAY_ERROR,
        error_type="gateway_error",
    )


class CallDesk:
    def __init__(self, service: CallService) -> None:
        self.service, self.state = service, service.state
        self.calls: weakref.WeakKeyDictionary[http.HTTPFlow, Call] = weakref.WeakKeyDictionary()

    def start(self, flow: http.HTTPFlow) -> Call:
        """A request the gateway answers (served or refused): its credentials, once read, are
        never forwarded, nor kept for mitmweb or flow files."""
        request = flow.request
        # One pass over the raw fields (matched as mitmproxy does, lowered bytes): a lookup by
        # name scans them all, 10 µs for the four names on every request.
        for name in {k.lower() for k, _ in request.headers.fields} & CREDENTIAL_FIELD_NAMES:
            request.headers[name] = REDACTED
        call = self.calls[flow] = Call(
            method=request.method,
            client_url=request.pretty_url[:MAX_LOGGED_URL],
            client_path=request.path[:MAX_LOGGED_URL],
            started=self.service.clock(),
            kept_limit=self.state.settings.stream_body_size,
        )
        return call

    def carry_out(self, flow: http.HTTPFlow, call: Call, outcome: Outcome) -> None:
        """What the call service decided, done to the flow."""
        match outcome:
            case Refused(error):
                self.refuse(flow, call, error)
            case Streamed(relay_path):
                call.relay_path = relay_path
                self.point_at_relay(flow, call, relay_path)
            case Local(status, body, headers):
                flow.response = http.Response.make(status, body, headers)
                self.finish(flow, call)
            case Sent(status, body, headers):
                flow.response = http.Response.make(status, body, wire_headers(headers))
                self.show_upstream(flow, call)
                self.finish(flow, call)

    def refuse(self, flow: http.HTTPFlow, call: Call, error: GatewayError) -> None:
        if call.key is None:  # mitmdump's line for it is bounded (workarounds.py)
            flow.metadata[STRANGER] = True
        body = b"" if flow.request.method == "HEAD" else error.body()  # HEAD: never a body
        flow.response = http.Response.make(error.status, body, error.response_headers())
        call.error = error.code
        self.finish(flow, call)

    def refuse_unread(self, flow: http.HTTPFlow, call: Call, error: GatewayError) -> None:
        """Refuse a request from its headers without reading its body (see relay.py): the
        body is dropped as it arrives and the connection closed after the answer. (Before the
        relay's port is taken, as in unit tests, the body is read first.)"""
        if not (may_have_body(flow.request) and self.state.relay.port):
            self.refuse(flow, call, error)
            return
        # A fresh copy: the raised one's traceback holds the hook's frame, and with it the
        # flow, which would then never leave the weak map of calls.
        call.refusal = dataclasses.replace(error)
        if call.key is None:
            flow.metadata[STRANGER] = True
        flow.request.stream = drop_body
        self.point_at_relay(flow, call, REFUSAL_PATH)

    def point_at_relay(self, flow: http.HTTPFlow, call: Call, path: str) -> None:
        """mitmproxy fetches this flow's answer from the relay: no client header goes there (no
        body, no 100 Continue, nothing its parser could refuse), no body bytes, and never
        through an upstream proxy (the relay is on this machine)."""
        request, port = flow.request, self.state.relay.port
        call.sent = SentRequest(
            request.scheme,
            request.host,
            request.port,
            request.path,
            tuple(request.headers.fields),
            request.raw_content,
        )
        request.scheme, request.host, request.port, request.path = "http", "127.0.0.1", port, path
        request.headers = http.Headers(host=f"127.0.0.1:{port}")
        if request.raw_content:
            request.raw_content = b""
        if flow.server_conn.via:
            flow.server_conn = connection.Server(address=None)

    def put_back(self, flow: http.HTTPFlow, call: Call) -> None:
        """The flow shows the request as the client sent it (it went nowhere but the relay)."""
        if sent := call.sent:
            request = flow.request
            request.scheme, request.host, request.port = sent.scheme, sent.host, sent.port
            request.path, request.headers = sent.path, http.Headers(sent.header_fields)
            if sent.content is not None:
                request.raw_content = sent.content
            call.sent = None

    def show_upstream(self, flow: http.HTTPFlow, call: Call) -> None:
        """The flow shows the request as it went to Oracle: the answering provider's URL, the
        body it got, the headers sent (the key redacted). The client's own URL and model are in
        the comment and in flow.metadata["gomodel"]. A new Request object: mitmproxy keeps
        reading the client's (its Connection header, for one), which is put back as it was."""
        self.put_back(flow, call)
        target, planned = call.answered_by, call.route
        if target is None or planned is None:
            return
        provider, client = target.provider, flow.request
        host, port, path = upstream_location(provider.base_url, planned.upstream_path)
        if planned.query:  # any bytes a client sent: not re-parsed as a URL
            path = f"{path}?{planned.query}"
        shown = http.Request(  # the constructor: no URL to parse again on every call
            host,
            port,
            client.data.method,
            b"https",
            b"",
            path.encode("utf-8", "surrogateescape"),
            client.data.http_version,
            wire_headers(shown_headers(call.client_headers, provider)),
            planned.bodies[provider.name],
            None,
            client.timestamp_start,
            client.timestamp_end,
        )
        flow.request = shown

    def finish(self, flow: http.HTTPFlow, call: Call, *notes: str) -> None:
        """Once per gateway request: the service's record, mitmweb's comment, mark, metadata."""
        if call.finished:
            return
        call.finished = True
        call.notes.extend(notes)
        entry = self.service.record(call, flow.response.status_code if flow.response else None)
        if call.route is not None:
            flow.metadata[METADATA] = flow_record(call, entry.attempts)
        flow.comment = entry.comment()
        if entry.status >= 400 or entry.error:
            flow.marked = ":red_circle:"
        elif entry.warning:
            flow.marked = ":warning:"


def flow_record(call: Call, attempts: list[str]) -> FlowRecord:
    planned, target = call.route, call.target
    assert planned is not None and target is not None
    return FlowRecord(
        client_url=call.client_url,
        method=call.method,
        requested_model=planned.requested_model,
        upstream_model=planned.target.upstream_model,
        candidates=[t.provider.name for t in planned.candidates],
        endpoint=planned.endpoint.value,
        stream=planned.stream,
        provider=target.provider.name,
        attempts=attempts,
    )


def for_gateway(flow: http.HTTPFlow, hosts: tuple[str, ...]) -> bool:
    """A request for the gateway: a gomodel_hosts name, or the proxy's own address in any
    spelling."""
    request = flow.request
    return is_gateway_request(request.host, request.port, hosts, flow.client_conn.sockname)


def replayed_call(flow: http.HTTPFlow) -> tuple[str, str] | None:
    """A replayed gateway call (mitmweb's replay button, mitmdump -C): the client's URL and
    model, from the record its flow carries."""
    record = flow.metadata.get(METADATA)
    if flow.is_replay != "request" or not isinstance(record, dict):
        return None
    client_url, model = record.get("client_url"), record.get("requested_model")
    if not isinstance(client_url, str) or not isinstance(model, str):
        return None
    return client_url, model


def is_gateway_replay(flow: http.HTTPFlow) -> bool:
    return replayed_call(flow) is not None


def restore_replay(flow: http.HTTPFlow) -> bool:
    """Turn a replayed gateway call back into the client's request, to go through the gateway
    again (routing, retries, the record); True when the flow is one."""
    if (replayed := replayed_call(flow)) is None:
        return False
    (client_url, model), request = replayed, flow.request
    request.url = client_url
    request.headers.pop("authorization", None)
    document = safejson.object_or_none(request.raw_content or b"")
    if model and document is not None and document.get("model") != model:
        request.content = json.dumps({**document, "model": model}, ensure_ascii=False).encode()
    return True


def may_have_body(request: http.Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    if "transfer-encoding" in request.headers:
        return True
    return not request.http_version.startswith("HTTP/1")  # HTTP/2 and 3 need not declare it


def drop_body(chunk: bytes) -> bytes:
    """A refused request's body, as mitmproxy streams it: dropped."""
    return b""


def wire_headers(headers: Iterable[tuple[str, str]]) -> http.Headers:
    """Headers as bytes, whatever the upstream sent (aiohttp decodes them with surrogateescape)."""
    return http.Headers(
        [
            (k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
            for k, v in headers
        ]
    )

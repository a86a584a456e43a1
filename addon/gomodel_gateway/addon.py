"""The mitmproxy addon's request hooks: short, guard first, each calling the pure modules.

The configuration lifecycle lives in `lifecycle.Runtime` (a sub-addon); one request's state in a
`call.Call`. Life of a gateway request:
- requestheaders: is it for the gateway (a gomodel_hosts name, or the proxy's own address in any
  spelling)? If not, it passes through only while pass-through is open (see exposure.py). A
  gateway request's body is buffered (routing needs it), and what the headers already condemn
  (origin, key, path, method, declared size) is refused without reading the body: the flow is
  pointed at the relay's refusal end point with its body streamed into nothing.
- request: answer locally (/v1/models, /health, /metrics, every error), or route the call. A
  plain call is sent by the `Transport` (retries, failover, timeouts) and its answer set as the
  response; a streamed call is handed to the `StreamRelay`, and the flow is pointed at it so
  mitmproxy streams the answer through. The Oracle key is set on the gateway's own requests only.
- responseheaders / response: the flow is made to show what really went to Oracle (its URL, the
  upstream body, credentials redacted) and the answer as the client got it (a stream's body
  kept up to gomodel_stream_body_size); `finish` records the call once.
Replays (mitmweb's replay button, `mitmdump -C`) of gateway flows go through the gateway again.
Every hook fails closed: an exception answers the client with a 502 and forwards nothing.
"""

import asyncio
import dataclasses
import functools
import inspect
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import server_hooks

from . import local, safejson
from .adapt import STARVED_WARNING, starved
from .call import UNCOUNTED, Call, SentRequest, account, record, token_cost, usage_row
from .errors import JSON_HEADERS, GatewayError, error_body
from .exposure import (
    cors_headers,
    is_looping,
    loop_detected,
    origin_allowed,
    origin_refused,
    passthrough_refused,
    preflight_headers,
)
from .hosts import ip_address, is_gateway_request, is_listen_address
from .idle import IdleConnections
from .keys import (
    ANONYMOUS_KEY,
    REPLAY_KEY,
    ClientKey,
    KeyRing,
    admins_only,
    invalid_key,
    model_not_allowed,
)
from .lifecycle import Runtime
from .limits import limit_error
from .relay import REFUSAL_PATH
from .request_checks import check_body_size, check_declared_body
from .resource_routing import (
    MAX_PAGES,
    check_body,
    check_owner,
    check_references,
    created,
    deleted,
    follow_owner,
    ids_named,
    is_listing,
    listing_limit,
    next_page_query,
    owned_items,
    owned_page,
    route_resource,
)
from .routing import (
    Endpoint,
    Request,
    Route,
    classify,
    route,
)
from .sse import usage_tokens
from .stored_ids import NO_IDS, StoredIds
from .upstream import (
    CLIENT_CREDENTIAL_HEADERS,
    FRAMING,
    REDACTED,
    check_forwarded_headers,
    is_returned,
    shown_headers,
    upstream_location,
    without_project,
)
from .workarounds import STRANGER, close_socket

logger = logging.getLogger("gomodel")

MAX_LOGGED_URL = 200
LOOP_REFUSAL = "gomodel: the destination is this proxy itself (a loop)"
GATEWAY_HOST_REFUSAL = "gomodel: the destination is a gateway hostname, served here only"
RESOLVE_SECONDS = 2.0
Hook = Callable[["GoModel", http.HTTPFlow], Any]
CREDENTIAL_FIELD_NAMES = frozenset(name.encode() for name in CLIENT_CREDENTIAL_HEADERS)
__all__ = ["REDACTED", "GoModel"]


def fail_closed(hook: Hook) -> Hook:
    """Answer 502 instead of letting mitmproxy pass the flow on unmodified after an exception."""

    def contain(self: "GoModel", flow: http.HTTPFlow, error: Exception) -> None:
        logger.error("gomodel: internal error in %s hook", hook.__name__, exc_info=error)
        call = self.calls.pop(flow, None)  # later hooks leave this flow alone
        if hook.__name__ in ("http_connect", "requestheaders"):
            consequence = "nothing was sent to Oracle"
        elif hook.__name__ == "request":
            routed = call is not None and call.route is not None
            consequence = "Oracle may have received it" if routed else "nothing was sent to Oracle"
        else:
            consequence = "Oracle's answer is lost"
        flow.response = http.Response.make(
            502,
            error_body(
                502,
                f"The gateway failed while handling this request ({type(error).__name__}); "
                f"{consequence}. See the gateway log for details.",
                code="gateway_error",
                error_type="gateway_error",
            ),
            JSON_HEADERS,
        )
        flow.comment = "gomodel gateway_error"
        flow.marked = ":red_circle:"

    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_wrapper(self: "GoModel", flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception as e:
                contain(self, flow, e)

        return async_wrapper

    @functools.wraps(hook)
    def wrapper(self: "GoModel", flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as e:
            contain(self, flow, e)

    return wrapper


class GoModel:
    def __init__(self) -> None:
        self.runtime = Runtime()
        self.addons = [self.runtime]
        self.calls: weakref.WeakKeyDictionary[http.HTTPFlow, Call] = weakref.WeakKeyDictionary()
        self.idle = IdleConnections(self.idle_timeout, self.close_client)

    # -- requests ------------------------------------------------------------------------------

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT elsewhere is refused while pass-through is closed, before any tunnel."""
        if self.runtime.exposure.open or self.is_for_gateway(flow):
            return
        target = f"{flow.request.host}:{flow.request.port}"
        self.refuse(flow, self.start(flow), passthrough_refused(target))

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response:
            return
        request, runtime = flow.request, self.runtime
        if is_looping(request.headers.get_all("via"), runtime.via_token):
            self.refuse_unread(flow, self.start(flow), loop_detected())
            return
        replay = restore_replay(flow)
        if not replay and not self.is_for_gateway(flow):
            if not runtime.exposure.open:
                self.refuse_unread(flow, self.start(flow), passthrough_refused(request.pretty_url))
            elif self.connection_refusal((request.host, request.port)):
                self.refuse_unread(flow, self.start(flow), loop_detected())
            else:  # marked, so that a request coming back to this proxy is a loop
                request.headers.add("via", f"1.1 {runtime.via_token}")
            return
        # Buffer the body: routing needs it, and nothing may stream to the original host.
        request.stream = False
        authorization = request.headers.get("authorization")  # before start() redacts it
        call = self.start(flow)
        try:
            if self.answer_preflight(flow, call):
                return
            call.request = self.admit(call, request, authorization, replay)
        except GatewayError as e:
            self.refuse_unread(flow, call, e)
            return
        if call.key is not None:  # a stranger's /health does not hold the connection open
            # A master key's connection is its holder's to keep; a client key's, once a call
            # of its went to Oracle (see request).
            keyed = call.key.admin and call.key is not ANONYMOUS_KEY
            self.idle.call_started(flow.client_conn.id, flow.id, keyed)

    def is_for_gateway(self, flow: http.HTTPFlow) -> bool:
        return is_gateway_request(
            flow.request.host, flow.request.port, self.runtime.hosts, flow.client_conn.sockname
        )

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
            started=time.monotonic(),
            kept_limit=self.runtime.settings.stream_body_size,
        )
        return call

    def answer_preflight(self, flow: http.HTTPFlow, call: Call) -> bool:
        """Browsers: only allowed origins may call; their CORS preflights are answered here.
        True when the request was answered."""
        origin = flow.request.headers.get("origin")
        if origin is None:
            return False
        if not origin_allowed(origin, self.runtime.settings.allowed_origins):
            raise origin_refused(origin)
        call.origin = origin
        preflight = flow.request.method == "OPTIONS" and (
            "access-control-request-method" in flow.request.headers
        )
        if preflight:
            headers = preflight_headers(origin, flow.request.headers)
            flow.response = http.Response.make(204, b"", headers)
            self.finish(flow, call)
        return preflight

    def admit(
        self, call: Call, request: http.Request, authorization: str | None, replay: bool
    ) -> Request:
        """What the headers alone decide: the endpoint, the key, the declared body. A replay is
        the operator's own (mitmweb, mitmdump -C) and needs no key."""
        key = REPLAY_KEY if replay else self.runtime.config.keys.identify(authorization)
        try:
            classified = classify(request.method, request.path)
        except GatewayError:
            if key is None:  # a stranger learns nothing about paths
                raise invalid_key() from None
            raise
        if key is None and classified.endpoint is not Endpoint.HEALTH:
            raise invalid_key()
        call.key = key
        check_declared_body(
            request.headers.get("content-length"),
            request.headers.get("content-encoding"),
            self.runtime.settings.max_body_size,
        )
        return classified

    def refuse_unread(self, flow: http.HTTPFlow, call: Call, error: GatewayError) -> None:
        """Refuse a request from its headers without reading its body (see relay.py): the
        body is dropped as it arrives and the connection closed after the answer. (Before the
        relay's port is taken, as in unit tests, the body is read first.)"""
        if not (may_have_body(flow.request) and self.runtime.relay.port):
            self.refuse(flow, call, error)
            return
        # A fresh copy: the raised one's traceback holds this hook's frame, and with it the
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
        request, port = flow.request, self.runtime.relay.port
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

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        call = self.calls.get(flow)
        if call is None and not flow.response and self.runtime.exposure.open:
            # Passed through: a name of this machine that the headers could not tell (it has
            # to be resolved) would bring the request back here.
            if await self.resolved_loop((flow.request.host, flow.request.port)):
                self.refuse(flow, self.start(flow), loop_detected())
            return
        if call is None or call.request is None or flow.response:
            return
        runtime = self.runtime
        if runtime.starting:  # came in as the proxy started
            await runtime.ready.wait()
        try:
            if call.key is not None:  # a reload may have revoked it while the body came in
                call.key = current_key(call.key, runtime.config.keys)
            if not call.request.goes_upstream:
                self.answer_locally(flow, call, call.request)
                return
            content = flow.request.raw_content or b""
            check_body_size(len(content), runtime.settings.max_body_size)
            attached = NO_IDS
            if resource := call.request.resource:  # an upload is multipart, the rest JSON
                content_type = flow.request.headers.get("content-type", "")
                attached = check_body(resource.operation, content_type, content)
            call.client_headers = list(flow.request.headers.items(multi=True))
            check_forwarded_headers(call.client_headers)
            key = call.key
            assert key is not None  # admitted
            if not key.admin:  # the Oracle project is the provider's, not a client key's choice
                call.client_headers = without_project(call.client_headers)
            planned = self.plan(call, call.request, content, key, attached)
            call.requested_model = planned.requested_model
            await self.check_key(call, key, planned)
            planned = await self.reach_stored(call.request, planned, content, key)
            call.route = planned
            flow.metadata["gomodel"] = {
                "client_url": call.client_url,
                "method": call.method,
                "requested_model": planned.requested_model,
                "upstream_model": planned.target.upstream_model,
                "candidates": [t.provider.name for t in planned.candidates],
                "endpoint": planned.endpoint.value,
                "stream": planned.stream,
            }
            # Sent to Oracle with a gateway key: the connection is its client's to keep (a
            # client key's locally answered or refused calls do not hold it).
            self.idle.call_started(flow.client_conn.id, flow.id, key is not ANONYMOUS_KEY)
            if planned.stream:
                call.relay_path = runtime.relay.register(call)
                self.point_at_relay(flow, call, call.relay_path)
                return
            reply = await runtime.transport.send(planned, call.client_headers, call.attempts)
        except GatewayError as e:
            self.refuse(flow, call, e)
            return
        call.answered(reply.target, reply.status, reply.request_id)
        body = reply.body
        if not key.admin and is_listing(call.request) and 200 <= reply.status < 300:
            body = await self.owned_listing(call, key, reply.body)
        call.response_body = body
        flow.response = http.Response.make(reply.status, body, wire_headers(reply.headers))
        call.first_byte = time.monotonic()
        if 200 <= reply.status < 300:
            document = safejson.object_or_none(reply.body)
            call.tokens = usage_tokens(document.get("usage") if document else None)
            if starved(document):
                flow.response.headers["x-gomodel-warning"] = STARVED_WARNING
                call.starved = True
            self.learn(call, document)
        self.show_upstream(flow, call)
        self.finish(flow, call)

    async def owned_listing(self, call: Call, key: ClientKey, first_body: bytes) -> bytes:
        """A listing as a client key may see it: only the items created with it, a full page
        of them when Oracle has more (read page after page, at most MAX_PAGES)."""
        planned, affinity = call.route, self.runtime.affinity
        assert planned is not None
        first = safejson.object_or_none(first_body)
        kept = owned_items(first, key, affinity)
        if first is None or kept is None:
            return first_body
        limit, document = listing_limit(planned.query), first
        more = bool(first.get("has_more"))
        for _ in range(MAX_PAGES - 1):
            data = document.get("data") or []
            last = data[-1] if data else None
            after = last.get("id") if isinstance(last, dict) else None
            if len(kept) > limit or not more or not isinstance(after, str):
                break
            page = dataclasses.replace(planned, query=next_page_query(planned.query, after))
            try:
                reply = await self.runtime.transport.send(page, call.client_headers, call.attempts)
            except GatewayError:
                break  # what was read is answered; has_more says there is more
            next_document = (
                safejson.object_or_none(reply.body) if 200 <= reply.status < 300 else None
            )
            items = owned_items(next_document, key, affinity)
            if next_document is None or items is None:
                break
            document, more = next_document, bool(next_document.get("has_more"))
            kept += items
        return owned_page(first, kept, limit, more)

    async def check_key(self, call: Call, key: ClientKey, planned: Route) -> None:
        """A client key's models (when the call names one: a stored resource's does not) and
        limits, before anything is sent. A model call reserves its estimated tokens."""
        names = planned.model_names
        if names and not key.allows(*names):
            raise model_not_allowed(key, names[0])
        limiter, request = self.runtime.limiter, call.request
        assert request is not None
        cost = UNCOUNTED
        if key.limits.counts_tokens:  # reading, cancelling, deleting stored state spends none
            cost = token_cost(request, planned, limiter.contexts)
        verdict = await limiter.admit(
            key.name, key.limits, cost.reserve, cost.needed, spends=cost.spends
        )
        if not verdict.admitted:
            raise limit_error(key.name, key.limits, verdict)
        if cost.spends:
            call.reservation, call.cost = verdict.reservation, cost

    def plan(
        self, call: Call, request: Request, content: bytes, key: ClientKey, attached: StoredIds
    ) -> Route:
        """Where a call goes, as far as the request alone tells: a model call by its model, a
        stored resource's call (whose body names the `attached` ids) to the resource's owner if
        known (resource_routing)."""
        runtime = self.runtime
        if resource := request.resource:
            return route_resource(
                runtime.inventory, runtime.affinity, call.method, resource, content, attached
            )
        ask_usage = runtime.settings.stream_usage or key.limits.counts_tokens
        inventory = runtime.inventory

        def visible(model_id: str) -> bool:  # what a 404 may list to this key
            return key.allows(*local.names_for_key(inventory, model_id))

        return route(inventory, request, content, ask_usage, visible)

    async def reach_stored(
        self, request: Request, planned: Route, content: bytes, key: ClientKey
    ) -> Route:
        """A client key reaches only the stored ids created with it, named in the path or, for a
        model call, in the body (read once, by routing); a call continuing stored state goes to
        its owner. After admission: an id unknown here is looked up in the ledger, which may be
        slow, and a key's requests past its rate limit must cost no lookup."""
        affinity = self.runtime.affinity
        check_references(key, planned.stored)
        # One id at a time: a body naming many ids costs one ledger lookup past the key's own.
        for resource_id in ids_named(request, planned, every=not key.admin):
            await self.recall([resource_id])
            check_owner(key, affinity, [resource_id])
        if resource := request.resource:  # its owner may just have been recalled
            return route_resource(
                self.runtime.inventory, affinity, planned.method, resource, content, planned.stored
            )
        return follow_owner(planned, affinity)

    async def recall(self, ids: list[str]) -> None:
        """Ids this gateway has not seen created may have been created through another gateway
        sharing the ledger: look them up there."""
        ledger, affinity = self.runtime.ledger, self.runtime.affinity
        if ledger is None:
            return
        for resource_id in ids:
            unknown = affinity.owner(resource_id) is None
            if unknown and (found := await ledger.lookup(resource_id)):
                affinity.seed([found])

    def learn(self, call: Call, document: dict[str, Any] | None) -> None:
        """What a successful call teaches the affinity store: who owns what it created (a
        streamed response's id comes from its events), that what it deleted is gone."""
        target, request = call.answered_by, call.request
        if target is None or request is None or not 200 <= call.status < 300:
            return
        streamed = call.stream.response_id if call.stream else None
        if made := created(request, document, streamed):
            key = call.key.name if call.key else ""
            self.runtime.affinity.remember(made[0], target.provider.name, made[1], key)
        elif gone := deleted(request):
            self.runtime.affinity.forget(gone)

    def answer_locally(self, flow: http.HTTPFlow, call: Call, request: Request) -> None:
        runtime = self.runtime
        if request.endpoint is Endpoint.METRICS:
            if call.key is None or not call.key.admin:  # every key's name and use is there
                raise admins_only("/metrics")
            runtime.metrics.set_state(
                {name: len(models) for name, models in runtime.inventory.models.items()},
                runtime.breaker_states(),
                runtime.limiter.shared if runtime.limiter.redis else None,
                runtime.ledger.counts() if runtime.ledger else None,
            )
            headers = {"content-type": runtime.metrics.content_type}
            flow.response = http.Response.make(200, runtime.metrics.exposition(), headers)
        elif request.endpoint is Endpoint.TRACES:  # dropped: traces never leave the machine
            flow.response = http.Response.make(204)
        else:
            body = local.answer(
                runtime.inventory,
                request,
                runtime.hosts,
                runtime.breaker_states(),
                call.key,
                aliases_only=runtime.settings.list_aliases_only,
            )
            flow.response = http.Response.make(200, body, JSON_HEADERS)
        self.finish(flow, call)

    def refuse(self, flow: http.HTTPFlow, call: Call, error: GatewayError) -> None:
        if call.key is None:  # mitmdump's line for it is bounded (workarounds.py)
            flow.metadata[STRANGER] = True
        body = b"" if flow.request.method == "HEAD" else error.body()  # HEAD: never a body
        flow.response = http.Response.make(error.status, body, error.response_headers())
        call.error = error.code
        self.finish(flow, call)

    # -- responses -----------------------------------------------------------------------------

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = self.calls.get(flow)
        if call is None or flow.response is None:
            return
        if call.origin:
            flow.response.headers.update(cors_headers(call.origin))
        if call.relay_path is None:
            return
        # The relay answered: the request has gone, and the relay's own headers are not for
        # clients. Streams pass through as they come (the relay watches, filters and keeps
        # them).
        for name in list(flow.response.headers):
            if not (is_returned(name) or name.lower() in FRAMING):
                del flow.response.headers[name]
        call.first_byte = time.monotonic()
        self.show_upstream(flow, call)
        if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            flow.response.stream = True

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        self.idle.call_ended(flow.client_conn.id, flow.id)
        call = self.calls.get(flow)
        if call is None or flow.response is None or call.finished:
            return
        if call.refusal:
            self.answer_refusal(flow, call, call.refusal)
            return
        if call.kept:  # the stream as the client got it, for mitmweb and flow files
            flow.response.content = call.kept.content()
        self.finish(flow, call)

    def answer_refusal(self, flow: http.HTTPFlow, call: Call, error: GatewayError) -> None:
        """The relay ended a refused request: show it as the client sent it, and answer it."""
        self.put_back(flow, call)
        self.refuse(flow, call, error)
        if call.origin:
            flow.response.headers.update(cors_headers(call.origin))
        if flow.request.http_version.startswith("HTTP/1"):
            flow.response.headers["connection"] = "close"

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self.idle.call_ended(flow.client_conn.id, flow.id)
        call = self.calls.get(flow)
        if call is None or call.finished:
            return
        if call.relay_path:  # the client left before mitmproxy fetched its stream
            self.runtime.relay.discard(call.relay_path)
        self.show_upstream(flow, call)
        if call.kept and flow.response:
            flow.response.content = call.kept.content()
        if flow.error and call.stream and call.stream.done:
            # A client may close as soon as it reads the last event, before mitmproxy has read
            # the end of the stream: it got the whole answer.
            self.finish(flow, call, "client closed after the last event")
            return
        call.error = "client_gone" if flow.error else "ended_early"
        self.finish(flow, call, f"ended early: {flow.error.msg if flow.error else '-'}")

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

    # -- connections ---------------------------------------------------------------------------

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
            return "gomodel: pass-through is closed; this proxy connects only for the gateway"
        if host.lower().rstrip(".") in runtime.hosts:  # the gateway never connects to itself:
            return GATEWAY_HOST_REFUSAL  # a body streamed by stream_large_bodies stays home
        if is_listen_address(host, port, self.listen_addresses()):
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
        listening = self.listen_addresses()
        if any(is_listen_address(str(info[4][0]), port, listening) for info in infos):
            return LOOP_REFUSAL
        return None

    @staticmethod
    def listen_addresses() -> list[Any]:
        proxyserver = ctx.master.addons.get("proxyserver")
        return proxyserver.listen_addrs() if proxyserver else []

    # -- the record ----------------------------------------------------------------------------

    def finish(self, flow: http.HTTPFlow, call: Call, *notes: str) -> None:
        """Once per gateway request: the access log line, the metrics, mitmweb's comment."""
        if call.finished:
            return
        call.finished = True
        self.runtime.collector.soon()
        call.notes.extend(notes)
        if call.stream is not None:  # a streamed answer has ended: what did it create?
            self.learn(call, None)
        if flow.response:
            call.status = flow.response.status_code
        entry = record(call, time.monotonic(), self.runtime.settings.log_bodies)
        if (metadata := flow.metadata.get("gomodel")) and entry.provider != "gateway":
            metadata.update(provider=entry.provider, attempts=entry.attempts)
        flow.comment = entry.comment()
        if entry.status >= 400 or entry.error:
            flow.marked = ":red_circle:"
        elif entry.warning:
            flow.marked = ":warning:"
        counted = account(call, entry, self.runtime.limiter)
        self.runtime.metrics.record(entry, call.attempts, counted)
        ledger = self.runtime.ledger
        if ledger and call.key and call.route:  # refusals: in metrics and the access log only
            ledger.add(usage_row(entry, time.time(), self.runtime.gateway_id, counted))
        if not (call.request and call.request.endpoint is Endpoint.TRACES and not entry.error):
            self.runtime.settings.access_log.write(entry)  # trace batches: no noise


def current_key(key: ClientKey, ring: KeyRing) -> ClientKey:
    """The key a call was admitted with, as the configuration has it now (its models and
    limits may have changed); invalid_key once it is revoked."""
    if key is REPLAY_KEY or (key is ANONYMOUS_KEY and not ring.required):
        return key
    for configured in ring.keys:
        if configured.digest == key.digest and key.digest:
            return configured
    raise invalid_key()


def restore_replay(flow: http.HTTPFlow) -> bool:
    """Turn a replayed gateway call (mitmweb's replay button, mitmdump -C) back into the
    client's request, to go through the gateway again (routing, retries, the record); True when
    the flow is one."""
    metadata = flow.metadata.get("gomodel")
    if flow.is_replay != "request" or not isinstance(metadata, dict):
        return False
    client_url, model = metadata.get("client_url"), metadata.get("requested_model")
    if not isinstance(client_url, str) or not isinstance(model, str):
        return False
    request = flow.request
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

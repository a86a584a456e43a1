"""The call itself, served outside mitmproxy: from a request's head and body to a typed outcome.

`CallService` owns every decision about one gateway call: what the headers alone decide
(`admit`), then, once the body is in (`serve`): the local answers, planning, the key's models and
limits, ownership of stored state, sending it to Oracle (or handing it to the stream relay), the
listing of a key's own resources, and what the answer teaches (who owns what it created).
`record` is the one place a finished call is recorded, refused or not: the limiter's accounting,
metrics, the usage ledger and the access log. The hooks (gateway.py) only translate between a
flow and this; nothing here imports mitmproxy.
"""

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from . import local, safejson
from .accesslog import AccessRecord
from .adapt import STARVED_WARNING, starved
from .affinity import AffinityStore
from .budget import account, token_cost
from .call import UNCOUNTED, Call, record, usage_row
from .collection import Collector
from .errors import JSON_HEADERS, GatewayError
from .exposure import origin_allowed, origin_refused, preflight_headers
from .inventory import Inventory
from .keys import (
    ANONYMOUS_KEY,
    REPLAY_KEY,
    ClientKey,
    KeyRing,
    admins_only,
    invalid_key,
    model_not_allowed,
)
from .ledger import Ledger
from .limiter import Limiter
from .limits import limit_error
from .metrics import Metrics
from .options import Settings
from .outcomes import Body, Local, Outcome, Refused, Sent, Streamed
from .providers import GatewayConfig
from .relay import StreamRelay
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
from .routing import Endpoint, Request, Route, classify, route
from .sse import usage_tokens
from .stored_ids import NO_IDS
from .transport import Reply, Transport
from .upstream import check_forwarded_headers, without_project


class GatewayState(Protocol):
    """What the call service reads of the gateway's configuration-derived state (kept by
    lifecycle.Runtime and replaced on every reconfigure, so it is read afresh on every call)."""

    settings: Settings
    inventory: Inventory
    affinity: AffinityStore
    limiter: Limiter
    ledger: Ledger | None
    transport: Transport
    relay: StreamRelay
    metrics: Metrics
    collector: Collector
    gateway_id: str

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def hosts(self) -> tuple[str, ...]: ...

    def breaker_states(self) -> dict[str, dict[str, object]]: ...


class CallService:
    def __init__(self, state: GatewayState, clock: Callable[[], float] = time.monotonic) -> None:
        self.state, self.clock = state, clock

    # -- from the headers ----------------------------------------------------------------------

    def admit(
        self,
        call: Call,
        method: str,
        path: str,
        headers: Mapping[str, str],
        authorization: str | None,
        replay: bool,
    ) -> Local | None:
        """What the headers alone decide: the origin, the endpoint, the key, the declared body.
        A CORS preflight is answered (Local); GatewayError for a refusal. A replay is the
        operator's own (mitmweb, mitmdump -C) and needs no key."""
        settings = self.state.settings
        if (origin := headers.get("origin")) is not None:
            if not origin_allowed(origin, settings.allowed_origins):
                raise origin_refused(origin)
            call.origin = origin
            if method == "OPTIONS" and "access-control-request-method" in headers:
                return Local(204, b"", preflight_headers(origin, headers))
        key = REPLAY_KEY if replay else self.state.config.keys.identify(authorization)
        try:
            classified = classify(method, path)
        except GatewayError:
            if key is None:  # a stranger learns nothing about paths
                raise invalid_key() from None
            raise
        if key is None and classified.endpoint is not Endpoint.HEALTH:
            raise invalid_key()
        call.key = key
        check_declared_body(
            headers.get("content-length"), headers.get("content-encoding"), settings.max_body_size
        )
        call.request = classified
        return None

    # -- with the body -------------------------------------------------------------------------

    async def serve(self, call: Call, body: Body) -> Outcome:
        """An admitted call, its body in: answered here, refused, sent to Oracle or streamed."""
        assert call.request is not None  # admitted
        try:
            if call.key is not None:  # a reload may have revoked it while the body came in
                call.key = current_key(call.key, self.state.config.keys)
            if not call.request.goes_upstream:
                return self.answer_locally(call, call.request)
            key = call.key
            assert key is not None  # only /health is admitted without one
            planned = call.route = await self.plan(call, call.request, key, body)
            if planned.stream:
                return Streamed(self.state.relay.register(call))
            reply = await self.state.transport.send(planned, call.client_headers, call.attempts)
        except GatewayError as e:
            return Refused(e)
        return await self.answered(call, key, reply)

    async def plan(self, call: Call, request: Request, key: ClientKey, body: Body) -> Route:
        """Where the call goes, once the body, the key's models and limits and the stored ids
        it names allow it."""
        check_body_size(len(body.content), self.state.settings.max_body_size)
        attached = NO_IDS
        if resource := request.resource:  # an upload is multipart, the rest JSON
            attached = check_body(resource.operation, body.content_type, body.content)
        check_forwarded_headers(body.headers)
        # The Oracle project is the provider's, not a client key's choice.
        call.client_headers = body.headers if key.admin else without_project(body.headers)
        if resource:
            state = self.state
            planned = route_resource(
                state.inventory, state.affinity, call.method, resource, body.content, attached
            )
        else:
            planned = self.route_model_call(request, body.content, key)
        call.requested_model = planned.requested_model
        await self.check_key(call, key, planned)
        return await self.reach_stored(request, planned, body.content, key)

    def route_model_call(self, request: Request, content: bytes, key: ClientKey) -> Route:
        """A model call goes by its model (routing.route)."""
        inventory = self.state.inventory
        ask_usage = self.state.settings.stream_usage or key.limits.counts_tokens

        def visible(model_id: str) -> bool:  # what a 404 may list to this key
            return key.allows(*local.names_for_key(inventory, model_id))

        return route(inventory, request, content, ask_usage, visible)

    async def check_key(self, call: Call, key: ClientKey, planned: Route) -> None:
        """A client key's models (when the call names one: a stored resource's does not) and
        limits, before anything is sent. A model call reserves its estimated tokens."""
        names = planned.model_names
        if names and not key.allows(*names):
            raise model_not_allowed(key, names[0])
        limiter, request = self.state.limiter, call.request
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

    async def reach_stored(
        self, request: Request, planned: Route, content: bytes, key: ClientKey
    ) -> Route:
        """A client key reaches only the stored ids created with it, named in the path or, for a
        model call, in the body (read once, by routing); a call continuing stored state goes to
        its owner. After admission: an id unknown here is looked up in the ledger, which may be
        slow, and a key's requests past its rate limit must cost no lookup."""
        affinity = self.state.affinity
        check_references(key, planned.stored)
        # One id at a time: a body naming many ids costs one ledger lookup past the key's own.
        for resource_id in ids_named(request, planned, every=not key.admin):
            await self.recall(resource_id)
            check_owner(key, affinity, [resource_id])
        if resource := request.resource:  # its owner may just have been recalled
            return route_resource(
                self.state.inventory, affinity, planned.method, resource, content, planned.stored
            )
        return follow_owner(planned, affinity)

    async def recall(self, resource_id: str) -> None:
        """An id this gateway has not seen created may have been created through another gateway
        sharing the ledger: look it up there."""
        ledger, affinity = self.state.ledger, self.state.affinity
        if ledger is None or affinity.owner(resource_id) is not None:
            return
        if found := await ledger.lookup(resource_id):
            affinity.seed([found])

    # -- the answer ----------------------------------------------------------------------------

    async def answered(self, call: Call, key: ClientKey, reply: Reply) -> Sent:
        """Oracle's answer to a plain call, as the client gets it, and what it teaches."""
        call.answered(reply.target, reply.status, reply.request_id)
        body, headers = reply.body, list(reply.headers)
        if not key.admin and is_listing(call.request) and 200 <= reply.status < 300:
            body = await self.owned_listing(call, key, reply.body)
        call.response_body = body
        call.first_byte = self.clock()
        if 200 <= reply.status < 300:
            document = safejson.object_or_none(reply.body)
            call.tokens = usage_tokens(document.get("usage") if document else None)
            if starved(document):
                headers.append(("x-gomodel-warning", STARVED_WARNING))
                call.starved = True
            self.learn(call, document)
        return Sent(reply.status, body, headers)

    async def owned_listing(self, call: Call, key: ClientKey, first_body: bytes) -> bytes:
        """A listing as a client key may see it: only the items created with it, a full page
        of them when Oracle has more (read page after page, at most MAX_PAGES)."""
        planned, affinity = call.route, self.state.affinity
        assert planned is not None
        first = safejson.object_or_none(first_body)
        kept = owned_items(first, key, affinity)
        if first is None or kept is None:
            return first_body
        limit, document = listing_limit(planned.query), first
        more = bool(first.get("has_more"))
        for _ in range(MAX_PAGES - 1):
            after = last_id(document)
            if len(kept) > limit or not more or after is None:
                break
            page = dataclasses.replace(planned, query=next_page_query(planned.query, after))
            try:
                reply = await self.state.transport.send(page, call.client_headers, call.attempts)
            except GatewayError:
                break  # what was read is answered; has_more says there is more
            ok = 200 <= reply.status < 300
            next_document = safejson.object_or_none(reply.body) if ok else None
            items = owned_items(next_document, key, affinity)
            if next_document is None or items is None:
                break
            document, more = next_document, bool(next_document.get("has_more"))
            kept += items
        return owned_page(first, kept, limit, more)

    def learn(self, call: Call, document: dict[str, Any] | None) -> None:
        """What a successful call teaches the affinity store: who owns what it created (a
        streamed response's id comes from its events), that what it deleted is gone."""
        target, request = call.answered_by, call.request
        if target is None or request is None or not 200 <= call.status < 300:
            return
        streamed = call.stream.response_id if call.stream else None
        if made := created(request, document, streamed):
            key = call.key.name if call.key else ""
            self.state.affinity.remember(made[0], target.provider.name, made[1], key)
        elif gone := deleted(request):
            self.state.affinity.forget(gone)

    def answer_locally(self, call: Call, request: Request) -> Local:
        state = self.state
        if request.endpoint is Endpoint.METRICS:
            if call.key is None or not call.key.admin:  # every key's name and use is there
                raise admins_only("/metrics")
            state.metrics.set_state(
                {name: len(models) for name, models in state.inventory.models.items()},
                state.breaker_states(),
                state.limiter.shared if state.limiter.redis else None,
                state.ledger.counts() if state.ledger else None,
            )
            exposition = state.metrics.exposition()
            return Local(200, exposition, {"content-type": state.metrics.content_type})
        if request.endpoint is Endpoint.TRACES:  # dropped: traces never leave the machine
            return Local(204, b"", {})
        body = local.answer(
            state.inventory,
            request,
            state.hosts,
            state.breaker_states(),
            call.key,
            aliases_only=state.settings.list_aliases_only,
        )
        return Local(200, body, JSON_HEADERS)

    # -- the record ----------------------------------------------------------------------------

    def record(self, call: Call, status: int | None) -> AccessRecord:
        """Once per gateway request, refused or not, with the status the client got: what a
        stream created, the key's tokens settled, the metrics, the ledger row, the access log."""
        state = self.state
        state.collector.soon()
        if call.stream is not None:  # a streamed answer has ended: what did it create?
            self.learn(call, None)
        if status is not None:
            call.status = status
        entry = record(call, self.clock(), state.settings.log_bodies)
        counted = account(call, entry, state.limiter)
        state.metrics.record(entry, call.attempts, counted)
        if state.ledger and call.key and call.route:  # refusals: in metrics and the log only
            state.ledger.add(usage_row(entry, time.time(), state.gateway_id, counted))
        if not (call.request and call.request.endpoint is Endpoint.TRACES and not entry.error):
            state.settings.access_log.write(entry)  # trace batches: no noise
        return entry


def current_key(key: ClientKey, ring: KeyRing) -> ClientKey:
    """The key a call was admitted with, as the configuration has it now (its models and
    limits may have changed); invalid_key once it is revoked."""
    if key is REPLAY_KEY or (key is ANONYMOUS_KEY and not ring.required):
        return key
    for configured in ring.keys:
        if configured.digest == key.digest and key.digest:
            return configured
    raise invalid_key()


def last_id(document: dict[str, Any]) -> str | None:
    """The id of a listing page's last item: where the next page starts."""
    data = document.get("data") or []
    last = data[-1] if data else None
    after = last.get("id") if isinstance(last, dict) else None
    return after if isinstance(after, str) else None

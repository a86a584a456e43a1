"""One gateway request, from its headers to its last byte: a `Call`.

A Call owns everything about one request: what the client asked (endpoint, route), every attempt
at Oracle, the answer, the stream's summary, why it broke, its timings. The addon's hooks create
and advance it; the transport appends attempts; the relay streams into it. `record(call)` turns a
finished Call into the one record that feeds the access log, the metrics and mitmweb's comment.
Pure: nothing here knows about mitmproxy.
"""

from dataclasses import dataclass, field
from enum import StrEnum

from . import safejson
from .accesslog import AccessRecord, clip
from .adapt import STARVED_WARNING
from .config import MAX_MODEL_ID
from .errors import GatewayError
from .inventory import Target
from .keys import ClientKey
from .ledger_store import UsageRow
from .limiter import Limiter
from .limits import (
    CONTENT_OPERATIONS,
    BackgroundRun,
    ContextSizes,
    Reservation,
    estimate_tokens,
    needed_tokens,
    tokens_of,
)
from .routing import Endpoint, Request, Route
from .sse import StreamSummary, UsageChunkFilter

DEFAULT_KEPT_STREAM_BYTES = 1024 * 1024


class AttemptKind(StrEnum):
    ANSWERED = "answered"  # Oracle answered with a status
    CONNECT = "connect"  # no connection (refused, DNS, TLS, connect timeout): nothing was sent
    TIMEOUT = "timeout"  # no answer headers in time: the request may still run at Oracle
    DROPPED = "dropped"  # the connection broke before a complete answer


@dataclass(frozen=True)
class Attempt:
    provider: str
    address: str  # host:port
    kind: AttemptKind
    status: int | None  # when answered
    detail: str  # what went wrong, in words
    seconds: float

    @property
    def failed(self) -> bool:
        """No answer, or one worth trying elsewhere (429, 5xx)."""
        return self.status is None or self.status == 429 or self.status >= 500

    @property
    def outcome(self) -> str:
        """For logs: the status, or what went wrong."""
        return str(self.status) if self.status is not None else self.detail

    @property
    def label(self) -> str:
        """For metrics: the status, or the kind of failure (bounded)."""
        return str(self.status) if self.status is not None else self.kind.value


@dataclass(frozen=True)
class SentRequest:
    """What a client sent, kept while its flow is pointed at the relay (which needs nothing of
    it but a path); header fields as raw bytes."""

    scheme: str
    host: str
    port: int
    path: str
    header_fields: tuple[tuple[bytes, bytes], ...]
    content: bytes | None


@dataclass
class KeptBody:
    """A streamed answer, kept for mitmweb and flow files up to a size."""

    limit: int = DEFAULT_KEPT_STREAM_BYTES
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    cut: bool = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - self.size
        if len(chunk) > room:
            self.cut = True
            chunk = chunk[: max(room, 0)]
        if chunk:
            self.parts.append(chunk)
            self.size += len(chunk)

    def content(self) -> bytes:
        body = b"".join(self.parts)
        if self.cut:
            body += f"\n: [gomodel: kept the first {self.limit} bytes of this stream]\n".encode()
        return body


@dataclass(frozen=True)
class Cost:
    """What a call is admitted with by a key with token limits (see limits.py)."""

    spends: bool = True  # makes Oracle process tokens (else only request rates apply)
    reserve: int = 0  # tokens held against the budgets until Oracle's usage is known
    needed: int = 1  # tokens that must fit in the day's remaining budget
    background: bool = False  # a background response: its usage comes with a later call
    conversation: str | None = None  # the conversation a responses call adds to
    stored: str | None = None  # the conversation whose items a resource call adds


UNCOUNTED = Cost()


def token_cost(request: Request, planned: Route, contexts: ContextSizes) -> Cost:
    """A call's cost, before it goes: a model call's estimate (with the stored context it
    continues), a resource call's content, or nothing for reading, cancelling, deleting."""
    body = planned.body
    if (resource := request.resource) is not None:
        operation = resource.operation
        if (operation.method, operation.template) not in CONTENT_OPERATIONS:
            return Cost(spends=False)
        tokens = tokens_of(len(body))
        items_of = resource.owner_id if operation.template == "conversations/{id}/items" else None
        return Cost(reserve=tokens, needed=max(tokens, 1), stored=items_of)
    document = safejson.object_or_none(body) or {}
    if planned.endpoint is not Endpoint.RESPONSES:  # chat: no stored state
        return Cost(reserve=estimate_tokens(len(body), document), needed=needed_tokens(document))
    stored = contexts.of([value for _, value in planned.stored.followups])
    return Cost(
        reserve=estimate_tokens(len(body), document, stored),
        needed=needed_tokens(document, stored),
        background=document.get("background") is True,
        conversation=planned.stored.conversation,
    )


@dataclass
class Call:
    """One gateway request's state, from `requestheaders` to the end of its answer."""

    method: str
    client_url: str  # as the client sent it
    client_path: str  # for the access log
    started: float
    request: Request | None = None
    route: Route | None = None
    client_headers: list[tuple[str, str]] = field(default_factory=list)
    key: ClientKey | None = None  # the client key presented (ANONYMOUS without keys)
    requested_model: str = ""  # the model the client named, once the body is read
    reservation: Reservation | None = None  # tokens held against the key's budgets
    cost: Cost = UNCOUNTED  # what the reservation was made of
    origin: str | None = None  # the allowed web origin the request came from
    # Early refusals and relay bookkeeping
    refusal: GatewayError | None = None  # answered without reading the body
    sent: SentRequest | None = None  # the client's request while the flow points at the relay
    relay_path: str | None = None
    # The answer
    attempts: list[Attempt] = field(default_factory=list)
    answered_by: Target | None = None  # the provider whose answer the client got
    status: int = 0
    request_id: str | None = None  # Oracle's opc-request-id
    response_body: bytes = b""  # a plain answer, for log_bodies
    stream: StreamSummary | None = None
    hide_usage: UsageChunkFilter | None = None
    kept_limit: int = DEFAULT_KEPT_STREAM_BYTES  # of a streamed answer, for the flow
    kept: KeptBody | None = None
    broken: str | None = None  # why Oracle's stream ended early
    tokens: tuple[int | None, int | None] = (None, None)
    starved: bool = False  # cut off by its output budget before any text
    first_byte: float | None = None
    error: str | None = None  # the code of a refused or failed request
    notes: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def target(self) -> Target | None:
        """The provider that answered, else the one the call was routed to first."""
        if self.answered_by:
            return self.answered_by
        return self.route.target if self.route else None

    def answered(self, target: Target, status: int, request_id: str | None) -> None:
        self.answered_by, self.status, self.request_id = target, status, request_id

    def pass_chunk(self, chunk: bytes) -> bytes:
        """A chunk of Oracle's stream on its way to the client (b"" at its end): watched, kept,
        filtered."""
        if self.stream is None:
            self.stream = StreamSummary()
            self.kept = KeptBody(self.kept_limit)
            if self.route and self.route.usage_added:
                self.hide_usage = UsageChunkFilter()
        assert self.kept is not None
        self.stream.feed(chunk)
        out = self.hide_usage.feed(chunk) if self.hide_usage else chunk
        self.kept.add(out)
        return out


def record(call: Call, ended: float, log_bodies: bool = False) -> AccessRecord:
    """What a finished call leaves behind: the access log line, the metrics, the comment."""
    entry = AccessRecord(
        method=call.method,
        path=call.client_path,
        url=call.client_url,
        status=call.status,
        seconds=ended - call.started,
        endpoint=call.request.endpoint.value if call.request else "",
        error=call.error,
        notes=list(call.notes),
        first_byte_seconds=call.first_byte - call.started if call.first_byte else None,
        key=call.key.name if call.key else "",
        requested_model=call.requested_model,
    )
    target = call.target
    if call.route is None or target is None:  # answered or refused by the gateway itself
        return entry
    if call.stream:
        call.tokens = call.stream.tokens()
        call.starved = call.stream.starved
    entry.provider, entry.model = target.provider.name, target.upstream_model
    entry.alias = call.route.alias or ""
    entry.stream = call.route.stream
    entry.tokens_in, entry.tokens_out = call.tokens
    entry.request_id = call.request_id
    entry.attempts = [f"{a.provider} {a.outcome}" for a in call.attempts]
    entry.broken = call.broken is not None
    if changes := call.route.adjustments.get(target.provider.name):
        entry.notes.append("adjusted: " + ", ".join(changes))
    if call.stream and call.stream.error:
        entry.notes.append(f"stream carried an error: {call.stream.error}")
    if call.broken:
        entry.notes.append(f"stream broken: {call.broken}")
    if call.starved:
        entry.notes.append("starved: " + STARVED_WARNING)
    entry.warning = entry.broken or call.starved
    if log_bodies:
        entry.request_body = clip(call.route.bodies[target.provider.name])
        if not call.route.stream:
            entry.response_body = clip(call.response_body)
    return entry


def usage_row(entry: AccessRecord, now: float, gateway: str, counted: bool = True) -> UsageRow:
    """The usage ledger's row for a finished call (see record); its tokens only when they are
    new use (`counted`, see account)."""
    return UsageRow(
        time=now,
        key=entry.key,
        provider=entry.provider,
        requested_model=entry.requested_model[:MAX_MODEL_ID],
        model=entry.model,
        endpoint=entry.endpoint,
        stream=entry.stream,
        status=entry.status,
        tokens_in=entry.tokens_in if counted else None,
        tokens_out=entry.tokens_out if counted else None,
        latency_ms=round(entry.seconds * 1000, 3),
        request_id=entry.request_id,
        gateway=gateway,
    )


def charged_tokens(entry: AccessRecord) -> int | None:
    """The tokens a finished call counts against its key's budgets: Oracle's usage; none for an
    error answer (Oracle charges none); None when unknown (a client that left mid-stream, a
    background response), so that the reservation's estimate stands."""
    if entry.tokens_in is not None or entry.tokens_out is not None:
        return (entry.tokens_in or 0) + (entry.tokens_out or 0)
    if entry.status >= 400:
        return 0
    return None


def account(call: Call, entry: AccessRecord, limiter: Limiter) -> bool:
    """A finished call's tokens: its usage settles its reservation; what it added to stored
    state is remembered (limits.ContextSizes); a background run is kept until a later call
    (a poll, a resumed stream, a cancel) sees it finished, and that call's ledger row carries
    the run's usage, once. False when the record's tokens are no new use (a stored response
    read again): its ledger row then carries none."""
    request = call.request
    if request is None:
        return True
    if call.route is None:  # refused after admission (a stored id not its own): nothing used
        if call.reservation:
            limiter.settle(call.reservation, 0)
        return True
    if request.resource is not None and request.resource.operation.family == "responses/{id}":
        return settle_background(call, entry, limiter)
    reservation = call.reservation
    if reservation is None:
        return True
    used = charged_tokens(entry)
    if used is not None:
        limiter.settle(reservation, used)
    if not 200 <= call.status < 300:
        return True
    cost, contexts = call.cost, limiter.contexts
    charge = reservation.tokens if used is None else used
    if request.resource is not None:
        if cost.stored:
            contexts.add(cost.stored, charge)
        elif request.resource.operation.template == "conversations":
            made = (safejson.object_or_none(call.response_body) or {}).get("id")
            if isinstance(made, str):
                contexts.set(made, charge)
        return True
    if request.endpoint is not Endpoint.RESPONSES:
        return True
    made = call.stream.response_id if call.stream else None
    if made is None:
        made = (safejson.object_or_none(call.response_body) or {}).get("id")
    if not isinstance(made, str):
        return True
    contexts.set(made, charge)  # what a call continuing it makes Oracle read
    if cost.conversation:
        contexts.set(cost.conversation, charge)
    if cost.background and used is None:
        model = entry.model
        limiter.background.started(made, BackgroundRun(reservation, model, cost.conversation))
    return True


def settle_background(call: Call, entry: AccessRecord, limiter: Limiter) -> bool:
    """A call on a stored response (GET, a resumed stream, cancel, DELETE) that finds a
    background run finished, with its usage: the run's reservation is settled with it, and this
    call's record carries it (under the run's model). True when it did."""
    resource = call.request.resource if call.request else None
    if resource is None or resource.owner_id is None or not 200 <= call.status < 300:
        return False
    response_id = resource.owner_id
    if resource.operation.method == "DELETE":  # gone: its estimate stands
        limiter.background.forget(response_id)
        return False
    if call.stream is not None:
        status = "completed" if call.stream.done else None
    else:
        status = (safejson.object_or_none(call.response_body) or {}).get("status")
    used = charged_tokens(entry) if entry.tokens_in is not None else None
    run = limiter.background.finished(response_id, status, used is not None)
    if run is None or used is None:
        return False
    limiter.settle(run.reservation, used)
    limiter.contexts.set(response_id, used)
    if run.conversation:  # the estimate it added becomes what Oracle counted
        limiter.contexts.add(run.conversation, used - run.reservation.tokens)
    entry.model = run.model
    return True

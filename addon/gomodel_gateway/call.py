"""One gateway request, from its headers to its last byte: a `Call`.

A Call owns everything about one request: what the client asked (endpoint, route), every attempt
at Oracle, the answer, the stream's summary, why it broke, its timings. The call service
(service.py) advances it; the transport appends attempts; the relay streams into it.
`record(call)` turns a finished Call into the one record that feeds the access log, the metrics,
the ledger and mitmweb's comment.
Pure: nothing here knows about mitmproxy.
"""

from dataclasses import dataclass, field
from enum import StrEnum

from .accesslog import AccessRecord, clip
from .adapt import STARVED_WARNING
from .attempts import Attempt
from .errors import ErrorCode, GatewayError
from .inventory import Target
from .keys import ClientKey
from .ledger_store import UsageRow
from .limits import Reservation
from .model_ids import MAX_MODEL_ID
from .routing import Request, Route
from .sse import StreamSummary, UsageChunkFilter

DEFAULT_KEPT_STREAM_BYTES = 1024 * 1024


class Ending(StrEnum):
    """How a call's answer ended short, for the record (not an error sent to the client)."""

    CLIENT_GONE = "client_gone"  # the client left
    ENDED_EARLY = "ended_early"  # mitmproxy ended the flow before the answer was complete


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
    error: ErrorCode | Ending | None = None  # why a call was refused or failed
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

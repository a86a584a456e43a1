"""Per-key rate limits and token budgets: the windows, the verdicts, and the local counters.

Windows (wall-clock time, so that several gateways agree on them):
- requests_per_minute and tokens_per_minute: a sliding window of 60 s, estimated from two fixed
  minute buckets: the current bucket's count plus the previous bucket's count weighted by the
  share of the previous minute still inside the window. Smooth at minute boundaries (no double
  burst) at the memory of two counters.
- tokens_per_day: the UTC calendar day; the budget is fresh at 00:00 UTC.
A request counts when it is admitted. A call that makes Oracle process tokens reserves an
estimate of them (`estimate_tokens`), so that calls made at once cannot all pass on the same
room; when the answer ends, Oracle's usage replaces the estimate (`Reservation.settle`). A
background response's usage comes later, with the first poll, resumed stream or cancel that sees
it finished (`stored_usage.BackgroundRuns`); a call whose usage never comes (its client left
mid-stream, a run never looked at again) keeps the estimate as its charge.

What the day's remaining budget must cover before a call is admitted (`needed_tokens`): what
is stored for Oracle to read again (the stored context a call continues, as far as this gateway
saw it grow: `stored_usage.ContextSizes`; the content a resource call adds) and the output limit
the call sets; at least one token. Its own body and an unset output limit
(DEFAULT_OUTPUT_ESTIMATE) are reserved but need not fit: such a call can overrun the budget once,
by what it carries itself (bounded by the body size limit), and the next is refused. A resource
call that stores content (conversation items, a file upload) reserves its body's tokens, and
needs them all to fit: every call continuing that state makes Oracle read them again. Calls
that read, cancel or delete stored state make Oracle process nothing: only request rates apply
to them.

Pure: the clock is passed in; the counters a decision reads come from `LocalCounters` here or
from Redis (`limiter.py`).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import ErrorCode, GatewayError

MINUTE = 60
DAY = 86400
BYTES_PER_TOKEN = 4  # a generous guess for a request body's tokens (JSON included)
DEFAULT_OUTPUT_ESTIMATE = 1024  # tokens, for a call that sets no output limit
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
MAX_OUTPUT_LIMIT = 2**31 - 1  # what OpenAI accepts for an output limit
# No number above this reaches a store (Redis counts in 64-bit integers): 10**12 tokens is
# beyond any budget, and a million calls of it stay within Redis's range.
MAX_TOKENS = 10**12
# Resource calls that make Oracle store or process content, by (method, path template): the
# rest read, cancel or delete stored state (resources.OPERATIONS).
CONTENT_OPERATIONS = frozenset(
    {
        ("POST", "conversations"),
        ("POST", "conversations/{id}/items"),
        ("POST", "files"),
        ("POST", "vector_stores/{id}/files"),
        ("POST", "vector_stores/{id}/file_batches"),
        ("POST", "vector_stores/{id}/search"),
    }
)


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None

    @property
    def any(self) -> bool:
        return self != NO_LIMITS

    @property
    def counts_tokens(self) -> bool:
        return self.tokens_per_minute is not None or self.tokens_per_day is not None

    def requests_only(self) -> "Limits":
        """The limits of a call that makes Oracle process no tokens."""
        return Limits(requests_per_minute=self.requests_per_minute)


NO_LIMITS = Limits()


@dataclass(frozen=True)
class Buckets:
    """Where `now` falls: the minute bucket, how far into it, and the UTC day."""

    minute: int
    elapsed: float  # share of the current minute gone, 0 <= elapsed < 1
    day: int
    seconds_to_midnight: float

    @classmethod
    def at(cls, now: float) -> "Buckets":
        minute, into = divmod(now, MINUTE)
        day, into_day = divmod(now, DAY)
        return cls(int(minute), into / MINUTE, int(day), DAY - into_day)

    @property
    def previous_weight(self) -> float:
        return 1.0 - self.elapsed


@dataclass(frozen=True)
class Counts:
    """What a decision reads: requests and tokens of the previous and current minute, and the
    tokens of the current UTC day."""

    requests_previous: int = 0
    requests_current: int = 0
    tokens_previous: int = 0
    tokens_current: int = 0
    tokens_today: int = 0


class Refusal(StrEnum):
    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_MINUTE = "tokens_per_minute"
    TOKENS_PER_DAY = "tokens_per_day"


@dataclass(frozen=True)
class Reservation:
    """Tokens an admitted call holds until its usage is known, in the buckets of its admission."""

    name: str
    tokens: int
    minute: int
    day: int
    shared: bool = False  # made in Redis (else in this gateway's own counters)


@dataclass(frozen=True)
class Verdict:
    refusal: Refusal | None = None
    retry_after: float = 0.0  # seconds until the call would be admitted
    reservation: Reservation | None = None  # an admitted call's reserved tokens
    needed: int = 1  # the tokens the day's budget had to cover
    left: int | None = None  # of the day's budget, when the call did not fit in it

    @property
    def admitted(self) -> bool:
        return self.refusal is None


ADMITTED = Verdict()


def bounded(tokens: int) -> int:
    return min(max(tokens, 0), MAX_TOKENS)


def tokens_of(size: int) -> int:
    """Bytes as tokens, generously (JSON and multipart included)."""
    return bounded(size // BYTES_PER_TOKEN)


def check_output_limit(name: str, value: Any) -> None:
    """An output limit is a whole number (OpenAI's API refuses 2000.0 too) of at most
    MAX_OUTPUT_LIMIT, so that a float or a huge number neither escapes a budget's count nor
    reaches a store."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "a decimal number" if isinstance(value, float) else f"a {type(value).__name__}"
        raise GatewayError(
            400,
            f"Invalid type for {name!r}: expected an integer, but got {kind} instead.",
            param=name,
            code=ErrorCode.INVALID_TYPE,
        )
    if value > MAX_OUTPUT_LIMIT:
        raise GatewayError(
            400,
            f"Invalid {name!r}: integer above maximum value. Expected a value <= "
            f"{MAX_OUTPUT_LIMIT}, but got {str(value)[:40]} instead.",
            param=name,
            code=ErrorCode.INTEGER_ABOVE_MAX_VALUE,
        )


def output_limit(document: Mapping[str, Any]) -> int | None:
    """The output limit a call sets, if a whole number (routing refuses any other); 400 when
    it is beyond what OpenAI accepts (such a number must not reach a store)."""
    for name in OUTPUT_LIMITS:
        value = document.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            check_output_limit(name, value)
            return max(value, 0)
    return None


def estimate_tokens(body_size: int, document: Mapping[str, Any], stored: int = 0) -> int:
    """What a model call may use, before Oracle says: its body's size in tokens, generously,
    the `stored` context it continues, and its output limit (or DEFAULT_OUTPUT_ESTIMATE)."""
    limit = output_limit(document)
    output = DEFAULT_OUTPUT_ESTIMATE if limit is None else limit
    return bounded(tokens_of(body_size) + bounded(stored) + output)


def needed_tokens(document: Mapping[str, Any], stored: int = 0) -> int:
    """What must fit in the day's remaining budget for a model call to be admitted: the stored
    context it makes Oracle read again, and the output limit it sets; at least one token."""
    return max(bounded(bounded(stored) + (output_limit(document) or 0)), 1)


def sliding(previous: int, current: int, buckets: Buckets) -> float:
    """The sliding window's estimate of what the last 60 s used."""
    return previous * buckets.previous_weight + current


def has_room(previous: int, current: int, limit: int, buckets: Buckets) -> bool:
    """Room for one more (request, or token) under `limit` in the sliding minute."""
    return sliding(previous, current, buckets) + 1 <= limit


def wait_for_room(previous: int, current: int, limit: int, buckets: Buckets) -> float:
    """Seconds until the sliding minute has room for one more, if nothing else is used."""
    if current + 1 <= limit:  # this minute: wait for the previous one's weight to fade
        if previous == 0:
            return 0.0
        needed = 1.0 - (limit - current - 1) / previous
        return max(needed - buckets.elapsed, 0.0) * MINUTE
    # The next minute: this one becomes the previous, and must fade enough.
    needed = max(1.0 - (limit - 1) / current, 0.0)
    return (1.0 - buckets.elapsed + needed) * MINUTE


def decide(limits: Limits, counts: Counts, buckets: Buckets, needed: int = 1) -> Verdict:
    """Admit a call, or say which limit refuses it and for how long. `needed` tokens must fit
    in what is left of the day's budget. (The same test runs inside Redis, in
    limiter.ADMIT_SCRIPT: keep both alike.)"""
    budget = limits.tokens_per_day
    if budget is not None and counts.tokens_today + needed > budget:
        left = max(budget - counts.tokens_today, 0)
        wait = buckets.seconds_to_midnight
        return Verdict(Refusal.TOKENS_PER_DAY, wait, needed=needed, left=left)
    for refusal, limit, previous, current in (
        (
            Refusal.REQUESTS_PER_MINUTE,
            limits.requests_per_minute,
            counts.requests_previous,
            counts.requests_current,
        ),
        (
            Refusal.TOKENS_PER_MINUTE,
            limits.tokens_per_minute,
            counts.tokens_previous,
            counts.tokens_current,
        ),
    ):
        if limit is not None and not has_room(previous, current, limit, buckets):
            return Verdict(refusal, wait_for_room(previous, current, limit, buckets))
    return ADMITTED


def limit_error(key_name: str, limits: Limits, verdict: Verdict) -> GatewayError:
    """The 429 a refused call gets: rate_limit_exceeded for a rate, insufficient_quota for the
    daily budget; Retry-After in whole seconds (at least 1)."""
    assert verdict.refusal is not None
    retry = max(1, math.ceil(verdict.retry_after))
    headers = (("retry-after", str(retry)),)
    if verdict.refusal is Refusal.TOKENS_PER_DAY:  # hours away: SDKs should not wait for it
        if verdict.left:  # some left, but not enough for this call
            spent = (
                f"has {verdict.left} of its {limits.tokens_per_day} tokens left for today "
                f"(UTC), and this call needs about {verdict.needed} (the stored content it "
                "makes Oracle read, or adds, and its output limit)"
            )
        else:
            spent = f"has used its budget of {limits.tokens_per_day} tokens for today (UTC)"
        return GatewayError(
            429,
            f"The key {key_name!r} {spent}; it is fresh again in {retry} s, at 00:00 UTC.",
            code=ErrorCode.INSUFFICIENT_QUOTA,
            type="insufficient_quota",
            headers=(*headers, ("x-should-retry", "false")),
        )
    limit = getattr(limits, verdict.refusal.value)
    unit = "requests" if verdict.refusal is Refusal.REQUESTS_PER_MINUTE else "tokens"
    return GatewayError(
        429,
        f"The key {key_name!r} is over its limit of {limit} {unit} per minute; retry in {retry} s.",
        code=ErrorCode.RATE_LIMIT_EXCEEDED,
        type="requests" if unit == "requests" else "tokens",
        headers=headers,
    )


@dataclass
class LocalCounters:
    """One gateway's own counters: a few numbers per key name, old buckets dropped as they
    age (two minutes and one day are all a decision reads)."""

    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    tokens: dict[tuple[str, int], int] = field(default_factory=dict)
    daily: dict[tuple[str, int], int] = field(default_factory=dict)
    pruned_at: int = -1  # the minute bucket old entries were last dropped in

    def counts(self, name: str, buckets: Buckets) -> Counts:
        minute = buckets.minute
        return Counts(
            self.requests.get((name, minute - 1), 0),
            self.requests.get((name, minute), 0),
            self.tokens.get((name, minute - 1), 0),
            self.tokens.get((name, minute), 0),
            self.daily.get((name, buckets.day), 0),
        )

    def admit(
        self, name: str, limits: Limits, now: float, reserve: int = 0, needed: int = 1
    ) -> Verdict:
        """Decide; an admitted call counts as a request and reserves `reserve` tokens."""
        buckets = Buckets.at(now)
        self.forget_before(buckets)
        verdict = decide(limits, self.counts(name, buckets), buckets, needed)
        if not verdict.admitted:
            return verdict
        slot = (name, buckets.minute)
        self.requests[slot] = self.requests.get(slot, 0) + 1
        reservation = Reservation(name, reserve, buckets.minute, buckets.day)
        self.add_tokens(reservation, reserve)
        return Verdict(reservation=reservation)

    def settle(self, reservation: Reservation, used: int) -> None:
        """A call's usage replaces its reservation (in the buckets it was reserved in)."""
        self.add_tokens(reservation, bounded(used) - reservation.tokens)

    def add_tokens(self, reservation: Reservation, tokens: int) -> None:
        if tokens:
            minute, day = (
                (reservation.name, reservation.minute),
                (reservation.name, reservation.day),
            )
            self.tokens[minute] = self.tokens.get(minute, 0) + tokens
            self.daily[day] = self.daily.get(day, 0) + tokens

    def forget_before(self, buckets: Buckets) -> None:
        if buckets.minute == self.pruned_at:
            return
        self.pruned_at = buckets.minute
        for table, oldest in (
            (self.requests, buckets.minute - 1),
            (self.tokens, buckets.minute - 1),
            (self.daily, buckets.day),
        ):
            for slot in [slot for slot in table if slot[1] < oldest]:
                del table[slot]

"""Resilience policies, pure: timeouts, retry backoff, Retry-After and circuit breakers.

The clock and the randomness are passed in, so every rule is testable without waiting.
"""

import email.utils
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

# Statuses worth another attempt: rate limited, or the upstream's gateway failed.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0  # TCP + TLS to Oracle
    headers: float = 120.0  # attempt start (connection included) -> response headers
    idle: float = 60.0  # between two chunks of a response body or stream


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2  # further rounds over the providers after the first
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 30.0  # a longer Retry-After moves on instead of waiting


@dataclass(frozen=True)
class FailoverPolicy:
    enabled: bool = True
    failure_threshold: int = 3  # consecutive failures that open a provider's circuit
    cooldown_seconds: float = 30.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), if usable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def backoff_delay(
    policy: RetryPolicy, round_number: int, retry_after: float | None, random: Callable[[], float]
) -> float | None:
    """How long to wait before retry round `round_number` (1 for the first retry).

    Retry-After wins when given; None means it asks for longer than we are willing to wait.
    Otherwise exponential backoff with "equal jitter": half fixed, half random.
    """
    if retry_after is not None:
        return retry_after if retry_after <= policy.retry_after_max else None
    ceiling = min(policy.backoff_max, policy.backoff_initial * 2 ** (round_number - 1))
    return ceiling / 2 + ceiling / 2 * random()


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed until `failure_threshold` consecutive failures; then open for `cooldown_seconds`;
    then half-open: one trial request at a time decides between closed and open again."""

    def __init__(self, policy: FailoverPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_running = False

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        if now - self.opened_at < self.policy.cooldown_seconds:
            return "open"
        return "half_open"

    def retry_in(self, now: float) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.policy.cooldown_seconds - (now - self.opened_at))

    def allow(self, now: float) -> bool:
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half_open" and not self.trial_running:
            self.trial_running = True
            return True
        return False

    def record_success(self) -> None:
        self.failures, self.opened_at, self.trial_running = 0, None, False

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.trial_running or self.failures >= self.policy.failure_threshold:
            self.opened_at = now
        self.trial_running = False

    def release_trial(self) -> None:
        """A trial that ended without a verdict (client gone): let another one try."""
        self.trial_running = False

    def snapshot(self, now: float) -> dict[str, object]:
        return {
            "state": self.state(now),
            "consecutive_failures": self.failures,
            "retry_in_seconds": math.ceil(self.retry_in(now)),
        }


def breakers_for(
    names: tuple[str, ...], policy: FailoverPolicy, previous: Mapping[str, CircuitBreaker]
) -> dict[str, CircuitBreaker]:
    """One breaker per provider; a provider kept across a reload keeps its breaker's state."""
    breakers = {}
    for name in names:
        breaker = previous.get(name) or CircuitBreaker(policy)
        breaker.policy = policy
        breakers[name] = breaker
    return breakers

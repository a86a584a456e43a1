"""What became of each attempt at Oracle within one call, as types (pure).

The transport appends an `Attempt` per try; the call keeps them (the access log names them, the
metrics count retries and failovers by them, the final 502/504 is chosen from them).
"""

from dataclasses import dataclass
from enum import StrEnum


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
    timed_out: bool = False  # a timeout ended it (no connection or no headers in time)

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

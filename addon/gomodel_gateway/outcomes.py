"""What a gateway call comes to (the call service's answer to the hooks), and what it carries
once its body is in. Pure data."""

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import GatewayError

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Local:
    """Answered by the gateway itself (models, health, metrics, a preflight)."""

    status: int
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Refused:
    error: GatewayError


@dataclass(frozen=True)
class Sent:
    """A plain call's answer from Oracle, as the client gets it."""

    status: int
    body: bytes
    headers: Headers


@dataclass(frozen=True)
class Streamed:
    """Handed to the stream relay: mitmproxy fetches the answer from `relay_path`."""

    relay_path: str


Outcome = Local | Refused | Sent | Streamed


@dataclass(frozen=True)
class Body:
    """What a gateway call carries once its body is in."""

    content: bytes
    content_type: str
    headers: Headers  # the client's, credentials already redacted

"""Who may use the proxy port for what: pass-through of other traffic, loops, browser origins.

Pure: the mitmproxy options it needs are passed in as plain values.

- Pass-through (`gomodel_passthrough`): whether requests that are not for the gateway (another
  host, a CONNECT tunnel elsewhere) go through. `auto` lets them through only while nobody but
  this machine can reach the port and no gateway key (master or client) is configured, i.e. for
  one developer on loopback; a port that is shared or exposed is closed to all but the gateway.
- Loops: a request the gateway itself passed on carries its Via token; seeing it again means the
  proxy is connecting to itself (a Host naming this machine in a spelling not recognised).
- Browsers (`gomodel_allowed_origins`): a request carrying an `Origin` comes from a web page;
  only listed origins may use the gateway, so no page can spend the Oracle key of a gateway on
  someone's loopback.
"""

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from .errors import ErrorCode, GatewayError
from .hosts import is_loopback


class Passthrough(StrEnum):
    AUTO = "auto"
    ON = "true"
    OFF = "false"


def parse_passthrough(value: str) -> Passthrough:
    lowered = value.strip().lower()
    aliases = {
        "yes": "true",
        "on": "true",
        "1": "true",
        "no": "false",
        "off": "false",
        "0": "false",
    }
    try:
        return Passthrough(aliases.get(lowered, lowered))
    except ValueError:
        raise ValueError(f"gomodel_passthrough: {value!r} is not auto, true or false") from None


@dataclass(frozen=True)
class Exposure:
    """Whether other traffic passes through, and why (for the startup log)."""

    open: bool
    reason: str

    def describe(self) -> str:
        if self.open:
            return f"pass-through open: requests for other hosts are forwarded ({self.reason})"
        return (
            "pass-through closed: only gateway requests are served, other hosts and CONNECT "
            f"tunnels get 403 ({self.reason})"
        )


def decide_exposure(
    setting: Passthrough, keys_required: bool, listen_hosts: Iterable[str]
) -> Exposure:
    """The pass-through mode in force. `listen_hosts` are the addresses mitmproxy listens on,
    "" meaning every interface."""
    if setting is Passthrough.ON:
        return Exposure(True, "gomodel_passthrough=true")
    if setting is Passthrough.OFF:
        return Exposure(False, "gomodel_passthrough=false")
    exposed = [
        host or "all interfaces" for host in listen_hosts if not host or not is_loopback(host)
    ]
    if exposed:
        return Exposure(
            False, f"gomodel_passthrough=auto and mitmproxy listens on {', '.join(exposed)}"
        )
    if keys_required:
        return Exposure(False, "gomodel_passthrough=auto and gateway keys are configured")
    return Exposure(True, "gomodel_passthrough=auto, loopback only and no gateway keys")


def passthrough_refused(target: str) -> GatewayError:
    return GatewayError(
        403,
        f"This proxy only serves the gateway; requests for {target[:100]} are not forwarded "
        "(option gomodel_passthrough).",
        code=ErrorCode.PASSTHROUGH_DISABLED,
        type="permission_error",
    )


# -- loops -------------------------------------------------------------------------------------


def new_via_token() -> str:
    """This process's name in the Via headers it adds to what it passes on."""
    return f"gomodel-{secrets.token_hex(6)}"


def is_looping(via_values: Iterable[str], token: str) -> bool:
    return any(token in value for value in via_values)


def loop_detected() -> GatewayError:
    return GatewayError(
        508,
        "The proxy received a request it had passed on itself: its Host names this proxy. Send "
        "gateway requests straight to the proxy port or to a gateway hostname.",
        code=ErrorCode.LOOP_DETECTED,
        type="invalid_request_error",
    )


# -- browsers ----------------------------------------------------------------------------------

ANY_ORIGIN = "*"
PREFLIGHT_MAX_AGE = "600"
ALLOWED_METHODS = "GET, POST, OPTIONS"


def parse_origins(option: str) -> frozenset[str]:
    """gomodel_allowed_origins: comma-separated origins (scheme://host[:port]), or `*`."""
    origins: set[str] = set()
    for item in option.split(","):
        origin = item.strip().lower().rstrip("/")
        if not origin:
            continue
        if origin != ANY_ORIGIN:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
                raise ValueError(
                    f"gomodel_allowed_origins: {item.strip()!r} is not an origin such as "
                    "https://app.example.com or http://localhost:3000"
                )
        origins.add(origin)
    return frozenset(origins)


def origin_allowed(origin: str, allowed: frozenset[str]) -> bool:
    return ANY_ORIGIN in allowed or origin.strip().lower().rstrip("/") in allowed


def origin_refused(origin: str) -> GatewayError:
    return GatewayError(
        403,
        f"Requests from web pages at {origin[:100]!r} are not allowed; list the origin in the "
        "gateway's gomodel_allowed_origins option to allow it.",
        code=ErrorCode.ORIGIN_NOT_ALLOWED,
        type="permission_error",
    )


def cors_headers(origin: str) -> dict[str, str]:
    """Headers that let an allowed page read the answer."""
    return {"access-control-allow-origin": origin, "vary": "Origin"}


def preflight_headers(origin: str, request_headers: Mapping[str, str]) -> dict[str, str]:
    """The answer to an allowed origin's CORS preflight (OPTIONS with Access-Control-Request-*)."""
    headers = {
        **cors_headers(origin),
        "access-control-allow-methods": ALLOWED_METHODS,
        "access-control-max-age": PREFLIGHT_MAX_AGE,
    }
    if asked := request_headers.get("access-control-request-headers"):
        headers["access-control-allow-headers"] = asked[:1000]
    return headers

"""What goes to Oracle: the URL for a target, and the headers, including the one place the
provider key is set. Pure: headers are plain (name, value) pairs.

Headers cross by allowlist, both ways: a client's cookies, forwarding headers, OpenAI account
headers or other services' keys never reach Oracle, and Oracle's cookies, auth challenges and
internal headers never reach clients.
"""

import functools
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from .errors import ErrorCode, GatewayError, clip_for_message
from .providers import Provider

REDACTED = "[redacted by gomodel]"
# Credentials a client may send to the gateway (or to a proxy); redacted on the flow once read.
CLIENT_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "api-key", "x-api-key", "proxy-authorization"}
)
# What a call needs: the body's type, what the client accepts (JSON or an event stream), who is
# calling (Oracle's logs), and Oracle's request tracing id when the client sets its own.
FORWARDED = frozenset({"content-type", "accept", "user-agent", "opc-request-id"})
# What a client needs of Oracle's answer: the body's type, caching of streams, the id Oracle
# support asks for, when to retry, and rate-limit state.
RETURNED = frozenset(
    {"content-type", "cache-control", "opc-request-id", "x-request-id", "retry-after"}
)
RETURNED_PREFIXES = ("x-ratelimit-",)
# How a body is framed on the wire; kept on answers mitmproxy passes on from the stream relay.
FRAMING = frozenset({"content-length", "transfer-encoding"})
PROJECT_HEADER = "openai-project"
# Control characters (tab aside) and lone surrogates (undecodable bytes): no field value may hold
# them, and the HTTP client refuses to send them.
INVALID_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
PROJECT_OCID = re.compile(
    r"^ocid1\.generativeaiproject\.[a-z0-9_-]+\.[a-z0-9_-]*\.[A-Za-z0-9._-]+$"
)


@functools.lru_cache(maxsize=256)
def upstream_location(base_url: str, endpoint: str) -> tuple[str, int, str]:
    """(host, port, path) of {base_url}/{endpoint}, computed once per provider and endpoint."""
    parts = urlsplit(f"{base_url}/{endpoint}")
    return parts.hostname or "", parts.port or 443, parts.path


def upstream_url(provider: Provider, endpoint: str, query: str) -> str:
    """{base_url}/{endpoint} (chat/completions, responses, files/{id}...), with the client's
    query string."""
    url = f"{provider.base_url}/{endpoint}"
    return f"{url}?{query}" if query else url


def is_project_ocid(value: str) -> bool:
    """An OCI Generative AI project OCID (what Oracle expects in OpenAI-Project), not an OpenAI
    project id such as proj_..."""
    return bool(PROJECT_OCID.match(value.strip()))


def check_forwarded_headers(client_headers: Iterable[tuple[str, str]]) -> None:
    """A 400 for a header that would be forwarded but is not a valid field value (the HTTP
    client would fail on it after the call was routed)."""
    for name, value in client_headers:
        lowered = name.lower()
        if (lowered in FORWARDED or lowered == PROJECT_HEADER) and INVALID_IN_VALUE.search(value):
            raise GatewayError(
                400,
                f"Header {clip_for_message(name)} holds control characters or bytes that are not "
                "text; send it as printable text.",
                param=lowered,
                code=ErrorCode.INVALID_HEADER,
            )


def outgoing_headers(
    client_headers: Iterable[tuple[str, str]], provider: Provider
) -> list[tuple[str, str]]:
    """The client's headers that a call needs, authenticated as the provider, with the client's
    Generative AI project when it named one, else the provider's. This is where the Oracle key
    is set, and the only place."""
    headers: list[tuple[str, str]] = []
    project = provider.project
    for name, value in client_headers:
        lowered = name.lower()
        if lowered in FORWARDED:
            headers.append((name, value))
        elif lowered == PROJECT_HEADER and is_project_ocid(value):
            project = value.strip()
    headers.append(("authorization", f"Bearer {provider.api_key}"))
    if project:
        headers.append(("OpenAI-Project", project))
    return headers


def shown_headers(
    client_headers: Iterable[tuple[str, str]], provider: Provider
) -> list[tuple[str, str]]:
    """The headers a call went to Oracle with, as mitmweb and flow files show them: the key
    redacted."""
    shown = [("host", urlsplit(provider.base_url).netloc)]
    for name, value in outgoing_headers(client_headers, provider):
        shown.append((name, REDACTED if name.lower() == "authorization" else value))
    return shown


def is_returned(name: str) -> bool:
    lowered = name.lower()
    return lowered in RETURNED or lowered.startswith(RETURNED_PREFIXES)


def returned_headers(upstream_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Oracle's response headers as the client may see them (opc-request-id included); a value
    no HTTP server could send on is dropped."""
    return [
        (k, v) for k, v in upstream_headers if is_returned(k) and not INVALID_IN_VALUE.search(v)
    ]


def without_project(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A client's headers less its OpenAI-Project: the provider's configured project is sent."""
    return [(name, value) for name, value in headers if name.lower() != PROJECT_HEADER]

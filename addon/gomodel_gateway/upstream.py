"""The upstream rewrite: Oracle's URL for a route, and the one place the provider key is set.

Headers are handled through `MutableMapping`, which mitmproxy's case-insensitive `Headers`
implements, so these functions stay free of mitmproxy.
"""

from collections.abc import MutableMapping
from urllib.parse import urlsplit

from .config import Provider
from .routing import Route

# Credentials a client may send to the gateway; none of them may reach Oracle.
CLIENT_CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key")
REDACTED = "Bearer [redacted by gomodel]"


def upstream_address(provider: Provider) -> tuple[str, int]:
    parts = urlsplit(provider.base_url)
    return parts.hostname or "", parts.port or 443


def upstream_path(route: Route) -> str:
    """The base URL's path + /chat/completions or /responses, with the client's query string.

    Kept apart from the host: the query is the client's and may hold any bytes, which a whole-URL
    parse would refuse.
    """
    path = f"{urlsplit(route.target.provider.base_url).path}/{route.endpoint.value}"
    return f"{path}?{route.query}" if route.query else path


def inject_key(headers: MutableMapping[str, str], provider: Provider) -> None:
    """Drop the client's credentials and authenticate as the provider."""
    for name in CLIENT_CREDENTIAL_HEADERS:
        headers.pop(name, None)
    headers["authorization"] = f"Bearer {provider.api_key}"


def redact_key(headers: MutableMapping[str, str]) -> None:
    """Hide the provider key from everything that looks at the flow after it was sent."""
    if "authorization" in headers:
        headers["authorization"] = REDACTED

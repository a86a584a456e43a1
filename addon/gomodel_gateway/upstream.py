"""What goes to Oracle: the URL for a target, and the headers, including the one place the
provider key is set. Pure: headers are plain (name, value) pairs."""

from collections.abc import Iterable

from .config import Provider

# Credentials a client may send to the gateway; none of them may reach Oracle.
CLIENT_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The HTTP client sets these itself (and decodes compressed answers before they are passed on).
NOT_FORWARDED = (
    HOP_BY_HOP | CLIENT_CREDENTIAL_HEADERS | {"host", "content-length", "accept-encoding"}
)
NOT_RETURNED = HOP_BY_HOP | {"content-length", "content-encoding"}


def upstream_url(provider: Provider, endpoint: str, query: str) -> str:
    """{base_url}/chat/completions or {base_url}/responses, with the client's query string."""
    url = f"{provider.base_url}/{endpoint}"
    return f"{url}?{query}" if query else url


def outgoing_headers(
    client_headers: Iterable[tuple[str, str]], provider: Provider
) -> list[tuple[str, str]]:
    """The client's headers minus its credentials and hop-by-hop ones, authenticated as the
    provider, with the provider's Generative AI project unless the client named one. This is
    where the Oracle key is set, and the only place."""
    headers = [(k, v) for k, v in client_headers if k.lower() not in NOT_FORWARDED]
    headers.append(("authorization", f"Bearer {provider.api_key}"))
    if provider.project and not any(k.lower() == "openai-project" for k, _ in headers):
        headers.append(("OpenAI-Project", provider.project))
    return headers


def returned_headers(upstream_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Oracle's response headers as the client may see them (opc-request-id included)."""
    return [(k, v) for k, v in upstream_headers if k.lower() not in NOT_RETURNED]

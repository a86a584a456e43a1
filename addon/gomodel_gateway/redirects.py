"""Redirects are refused, everywhere a request carries the Oracle key or an OCI signature.

A client that follows a redirect sends the request again, credentials included, to wherever the
Location header points: urllib does so even from https to plain http on another host. So no call
of the gateway or its scripts follows one: the gateway's own calls answer the client a 502,
discovery and the doctor report it. The messages name the Location's host only: the rest of the
URL is whatever the redirecting server chose to write, and it would end up in logs and answers.
"""

import ssl
import urllib.request
from typing import Any
from urllib.parse import urljoin, urlsplit

from .errors import ErrorCode, GatewayError

REFUSED = "redirect refused: the gateway does not follow redirects with"


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib without redirects: a 3xx becomes an HTTPError, like any other non-2xx answer."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def direct_opener(
    ssl_context: ssl.SSLContext, proxy: str | None = None
) -> urllib.request.OpenerDirector:
    """A urllib opener for calls with the Oracle key: no redirects, and no proxy from the
    environment (HTTPS_PROXY may point at this very gateway), only the one named here."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": proxy, "http": proxy} if proxy else {}),
        urllib.request.HTTPSHandler(context=ssl_context),
        NoRedirects(),
    )


def is_redirect(status: int) -> bool:
    return 300 <= status < 400


def location_host(url: str, location: str | None) -> str:
    """The host a redirect from `url` points to, and nothing else of the Location."""
    if not location:
        return "nowhere (no Location header)"
    try:
        host = urlsplit(urljoin(url, location.strip())).hostname
    except ValueError:
        host = None
    return host or "an unreadable Location"


def refused(
    status: int, url: str, location: str | None, credential: str = "the provider key"
) -> str:
    """Why a 3xx answer to `url` was not followed, for a message that starts with who answered."""
    return (
        f"answered {status}, a redirect to {location_host(url, location)}: {REFUSED} {credential}"
    )


def refused_by_oracle(
    status: int,
    url: str,
    location: str | None,
    provider: str,
    host: str,
    request_id: str | None,
) -> GatewayError:
    """A 502 for a call Oracle redirected: a misconfiguration (a base URL that is not Oracle's
    endpoint, or something in between), not an outage, so it is neither retried nor failed over."""
    parts = [
        f"Oracle ({provider}, {host}) {refused(status, url, location)}.",
        "Check the provider's base_url: it must be Oracle's inference endpoint itself.",
    ]
    if request_id:
        parts.append(f"opc-request-id: {request_id}")
    return GatewayError(502, " ".join(parts), code=ErrorCode.UPSTREAM_REDIRECT, type="api_error")

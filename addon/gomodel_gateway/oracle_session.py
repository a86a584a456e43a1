"""The gateway's aiohttp session to Oracle: TLS, mitmproxy's upstream proxy, and aiohttp's
errors in words.

One session serves every call and discovery; no redirect is followed (it would take the
provider key along), no cookie is kept, and no proxy is read from the environment.
"""

import asyncio
import asyncio.sslproto
import functools
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from .providers import Provider
from .resilience import Timeouts
from .upstream import outgoing_headers

# asyncio gives every TLS connection a 256 KiB read buffer, allocated up front: 50 MB for 200
# concurrent streams to Oracle. A TLS record holds at most 16 KiB, so 32 KiB reads lose nothing.
# (Only the gateway's own connections use asyncio's TLS; mitmproxy does its own.)
asyncio.sslproto.SSLProtocol.max_size = 32 * 1024


@dataclass(frozen=True)
class UpstreamProxy:
    """An HTTP proxy every connection to Oracle goes through (mitmproxy's `--mode upstream:`),
    with its credentials (mitmproxy's `upstream_auth`, user:password)."""

    url: str
    auth: tuple[str, str] | None = None

    def url_with_auth(self) -> str:
        """The URL with the credentials in it, as `requests` (the oci SDK) takes them."""
        if not self.auth:
            return self.url
        scheme, _, rest = self.url.partition("://")
        user, password = (quote(part, safe="") for part in self.auth)
        return f"{scheme}://{user}:{password}@{rest}"


@functools.cache
def connect_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """aiohttp enforces the connect timeout; the others are the transport's own."""
    return aiohttp.ClientTimeout(
        total=None, connect=timeouts.connect, sock_connect=timeouts.connect
    )


def describe(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed: {error.certificate_error}"
    if isinstance(error, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(error, aiohttp.ClientConnectorError):
        code = error.os_error.errno
        return (os.strerror(code) if code else str(error.os_error)).lower()
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the answer ended before it was complete"
    if isinstance(error, aiohttp.ClientError):  # aiohttp's own texts read like HTTP statuses
        return type(error).__name__
    return str(error) or type(error).__name__


class OracleSession:
    """The aiohttp session, made when first used (and again once closed), with the TLS context
    and upstream proxy every request to Oracle is sent with."""

    def __init__(self, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        self.ssl_context = ssl_context
        self.proxy: UpstreamProxy | None = None
        self.session: aiohttp.ClientSession | None = None

    def via_proxy(self) -> dict[str, Any]:
        """aiohttp's arguments for mitmproxy's upstream proxy (`--mode upstream:URL`), if any."""
        if self.proxy is None:
            return {}
        auth = aiohttp.BasicAuth(*self.proxy.auth) if self.proxy.auth else None
        return {"proxy": self.proxy.url, "proxy_auth": auth}

    def client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                # No pool limit: concurrency is the clients'; no cookies; no proxy from the
                # environment (HTTPS_PROXY may point at this very gateway).
                connector=aiohttp.TCPConnector(limit=0, ssl=False),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
            )
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def request(
        self,
        provider: Provider,
        method: str,
        url: str,
        body: bytes,
        client_headers: Sequence[tuple[str, str]],
    ) -> aiohttp.ClientResponse:
        """Send one request to a provider with its key (the caller bounds the wait for the
        headers); aiohttp's errors are the caller's to sort."""
        return await self.client().request(
            method,
            url,
            data=body or None,
            headers=outgoing_headers(client_headers, provider),
            ssl=self.ssl_context(),
            timeout=connect_timeout(provider.timeouts),
            allow_redirects=False,
            **self.via_proxy(),
        )

    async def get(
        self, provider: Provider, path: str, timeout: float, limit: int
    ) -> tuple[int, bytes, str | None]:
        """GET {base_url}/{path} with the provider's key (model discovery): the status, the body
        (at most `limit` + 1 bytes, so that a larger one shows), and a redirect's Location. No
        redirect is followed. aiohttp's errors and TimeoutError are the caller's to report."""
        async with asyncio.timeout(timeout):
            response = await self.client().get(
                f"{provider.base_url}/{path}",
                headers=outgoing_headers([("Accept", "application/json")], provider),
                ssl=self.ssl_context(),
                allow_redirects=False,
                **self.via_proxy(),
            )
            async with response:
                body = await response.content.read(limit + 1)
                return response.status, body, response.headers.get("location")

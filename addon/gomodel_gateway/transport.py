"""Calls to Oracle with the gateway's own HTTP client: retries, failover, timeouts, breakers.

mitmproxy answers a failed upstream connection with an HTML page that no hook can replace, and
cannot retry a request or fail it over to another host. So the gateway sends model calls itself
(aiohttp), and every outcome becomes either Oracle's answer or an OpenAI-style error naming the
provider and host.

A call goes in rounds over its candidate providers (the preferred one first; one only when
pinned or when failover is off). A round tries each provider whose circuit is not open. A 2xx or
a 4xx other than 429 ends the call. 429, 502, 503, 504, connection failures and dropped
connections move on to the next provider, and after a round with no answer the next round waits
(Retry-After when Oracle gave one, exponential backoff with jitter otherwise), up to
`max_retries` more rounds. A provider that timed out waiting for headers is not asked again in
this call: the request may still be running there. A redirect is never followed (it would take
the provider key along): it ends the call as a 502, like a 4xx, neither retried nor failed over.
"""

import asyncio
import asyncio.sslproto
import functools
import itertools
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from .attempts import Attempt, AttemptKind
from .config import Provider
from .errors import GatewayError, from_oracle
from .inventory import Target
from .redirects import is_redirect, refused_by_oracle
from .resilience import (
    RETRYABLE_STATUSES,
    CircuitBreaker,
    FailoverPolicy,
    RetryPolicy,
    Timeouts,
    backoff_delay,
    parse_retry_after,
)
from .routing import Route
from .upstream import outgoing_headers, returned_headers, upstream_url

logger = logging.getLogger("gomodel")

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


class AttemptFailed(Exception):
    """An attempt that produced no HTTP answer."""

    def __init__(self, kind: AttemptKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class StreamBroken(Exception):
    """Oracle's stream ended before it was complete."""


@functools.cache
def connect_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """aiohttp enforces the connect timeout; the others are the transport's own."""
    return aiohttp.ClientTimeout(
        total=None, connect=timeouts.connect, sock_connect=timeouts.connect
    )


async def read_chunk(response: aiohttp.ClientResponse, idle_timeout: float) -> bytes:
    """The next piece of a body (b"" at its end), waiting at most `idle_timeout` for it."""
    try:
        async with asyncio.timeout(idle_timeout):
            return await response.content.readany()
    except TimeoutError as e:
        raise StreamBroken(f"no data from Oracle for {idle_timeout:g} s (idle timeout)") from e
    except (aiohttp.ClientError, OSError) as e:
        raise StreamBroken(f"the connection to Oracle dropped ({describe(e)})") from e


async def read_body(response: aiohttp.ClientResponse, idle_timeout: float) -> bytes:
    parts = []
    try:
        while chunk := await read_chunk(response, idle_timeout):
            parts.append(chunk)
    finally:
        response.release()
    return b"".join(parts)


@dataclass
class UpstreamStream:
    """A 2xx event stream whose first chunk has arrived; the rest is read as it is passed on.

    Its idle timeout is one timer for the whole stream, which, when it fires early, is set again
    for when the read waiting then would time out: a timer per read (asyncio.timeout) costs
    about 4 µs per chunk. A read that times out fails with StreamBroken."""

    response: aiohttp.ClientResponse
    idle_timeout: float
    first_chunk: bytes = b""
    reading_since: float | None = None  # while a read waits, when it started
    idle_timer: asyncio.TimerHandle | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.first_chunk:
            yield self.first_chunk
        loop = asyncio.get_running_loop()
        self.idle_timer = loop.call_later(self.idle_timeout, self.check_idle)
        while True:
            self.reading_since = loop.time()
            try:
                chunk = await self.response.content.readany()
            except (aiohttp.ClientError, OSError) as e:
                raise StreamBroken(f"the connection to Oracle dropped ({describe(e)})") from e
            self.reading_since = None
            if not chunk:
                return
            yield chunk

    def check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        now, since = loop.time(), self.reading_since
        if since is not None and now - since >= self.idle_timeout:
            # Ends the waiting read with this error (what aiohttp does with a broken connection).
            self.response.content.set_exception(
                StreamBroken(f"no data from Oracle for {self.idle_timeout:g} s (idle timeout)")
            )
            return
        restart = now if since is None else since
        self.idle_timer = loop.call_at(restart + self.idle_timeout, self.check_idle)

    def close(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.response.close()


@dataclass
class Reply:
    """Oracle's answer to a call, after retries and failover."""

    status: int
    headers: list[tuple[str, str]]
    target: Target
    body: bytes = b""  # the whole body, OpenAI-shaped for errors; empty for streams
    stream: UpstreamStream | None = None
    redirect_refused: bool = False  # Oracle answered 3xx: the 502 ends the call, like a 4xx

    @property
    def request_id(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "opc-request-id"), None)


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


class Transport:
    """The gateway's HTTP client to Oracle. One per addon, kept across reloads so that calls in
    flight finish on the session they started with."""

    def __init__(
        self,
        ssl_context: Callable[[], ssl.SSLContext],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.ssl_context = ssl_context
        self.retries = RetryPolicy()
        self.failover = FailoverPolicy()
        self.breakers: Mapping[str, CircuitBreaker] = {}
        self.proxy: UpstreamProxy | None = None
        self.clock, self.wall_clock, self.jitter = clock, wall_clock, jitter
        self.session: aiohttp.ClientSession | None = None

    def configure(
        self,
        retries: RetryPolicy,
        failover: FailoverPolicy,
        breakers: Mapping[str, CircuitBreaker],
        proxy: UpstreamProxy | None = None,
    ) -> None:
        self.retries, self.failover, self.breakers = retries, failover, breakers
        self.proxy = proxy

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

    async def send(
        self,
        route: Route,
        client_headers: Sequence[tuple[str, str]],
        attempts: list[Attempt],
    ) -> Reply:
        """Oracle's answer (2xx, 4xx, or the last retryable error), or a GatewayError. Every
        attempt is appended to `attempts` (the call's). A provider's circuit breaker hears one
        verdict per call: its own retries must not open it."""
        candidates = list(route.candidates if self.failover.enabled else route.candidates[:1])
        verdicts: dict[str, bool] = {}  # provider -> answered (2xx, 4xx, 429) in this call
        try:
            return await self._rounds(route, client_headers, attempts, candidates, verdicts)
        except asyncio.CancelledError:  # the client left: no verdict
            for name in verdicts:
                if breaker := self.breakers.get(name):
                    breaker.release_trial()
            raise
        finally:
            now = self.clock()
            for name, answered in verdicts.items():
                if breaker := self.breakers.get(name):
                    if answered:
                        breaker.record_success()
                    else:
                        breaker.record_failure(now)

    async def _rounds(
        self,
        route: Route,
        client_headers: Sequence[tuple[str, str]],
        attempts: list[Attempt],
        candidates: list[Target],
        verdicts: dict[str, bool],
    ) -> Reply:
        last_reply: Reply | None = None
        retry_after: float | None = None
        for round_number in range(self.retries.max_retries + 1):
            if round_number:
                delay = backoff_delay(self.retries, round_number, retry_after, self.jitter)
                if delay is None:  # Oracle asked for a longer wait than we are willing to make
                    break
                await asyncio.sleep(delay)
            retry_after, tried = None, False
            for target in list(candidates):
                name = target.provider.name
                breaker = self.breakers.get(name)
                if name not in verdicts and breaker and not breaker.allow(self.clock()):
                    continue
                tried = True
                verdicts.setdefault(name, False)
                try:
                    reply = await self._attempt(target, route, client_headers, attempts)
                except AttemptFailed as failure:
                    if failure.kind is AttemptKind.TIMEOUT:
                        candidates.remove(target)
                    continue
                if reply.status not in RETRYABLE_STATUSES or reply.redirect_refused:
                    verdicts[name] = True
                    return reply
                if reply.status == 429:  # a live provider asking us to slow down
                    verdicts[name] = True
                last_reply = reply
                wait = parse_retry_after(
                    dict((k.lower(), v) for k, v in reply.headers).get("retry-after"),
                    self.wall_clock(),
                )
                if wait is not None:
                    retry_after = max(retry_after or 0.0, wait)
            if not tried and round_number == 0:
                raise self._cooling_down(route)
            if not candidates:
                break
        if last_reply is not None:
            return last_reply
        raise self._exhausted(route, attempts)

    async def _attempt(
        self,
        target: Target,
        route: Route,
        client_headers: Sequence[tuple[str, str]],
        attempts: list[Attempt],
    ) -> Reply:
        provider = target.provider
        timeouts = provider.timeouts
        started = self.clock()

        def note(kind: AttemptKind, status: int | None, detail: str = "") -> None:
            seconds = self.clock() - started
            attempts.append(Attempt(provider.name, provider.address, kind, status, detail, seconds))

        url = upstream_url(provider, route.upstream_path, route.query)
        try:
            async with asyncio.timeout(timeouts.headers):
                response = await self.client().request(
                    route.method,
                    url,
                    data=route.bodies[provider.name] or None,
                    headers=outgoing_headers(client_headers, provider),
                    ssl=self.ssl_context(),
                    timeout=connect_timeout(timeouts),
                    allow_redirects=False,
                    **self.via_proxy(),
                )
        except aiohttp.ConnectionTimeoutError as e:
            note(AttemptKind.CONNECT, None, "connect timeout")
            reason = f"no connection within {timeouts.connect:g} s"
            raise AttemptFailed(AttemptKind.CONNECT, reason) from e
        except TimeoutError as e:
            note(AttemptKind.TIMEOUT, None, "headers timeout")
            reason = f"no answer within {timeouts.headers:g} s"
            raise AttemptFailed(AttemptKind.TIMEOUT, reason) from e
        except aiohttp.ClientConnectorError as e:
            note(AttemptKind.CONNECT, None, describe(e))
            raise AttemptFailed(AttemptKind.CONNECT, describe(e)) from e
        except (aiohttp.ClientError, OSError) as e:
            note(AttemptKind.DROPPED, None, describe(e))
            raise AttemptFailed(AttemptKind.DROPPED, describe(e)) from e

        request_id = response.headers.get("opc-request-id")
        if is_redirect(response.status):
            response.close()
            note(AttemptKind.ANSWERED, response.status)
            error = refused_by_oracle(
                response.status,
                url,
                response.headers.get("location"),
                provider.name,
                provider.host,
                request_id,
            )
            headers = [("opc-request-id", request_id)] if request_id else []
            headers.append(("content-type", "application/json"))
            return Reply(error.status, headers, target, body=error.body(), redirect_refused=True)
        headers = returned_headers(response.headers.items())
        content_type = response.headers.get("content-type", "")
        try:
            if 200 <= response.status < 300 and content_type.startswith("text/event-stream"):
                # Committing to a stream waits for its first chunk: a failure before it can still
                # be retried, as nothing has reached the client yet.
                first_chunk = await read_chunk(response, timeouts.idle)
                stream = UpstreamStream(response, timeouts.idle, first_chunk)
                note(AttemptKind.ANSWERED, response.status)
                return Reply(response.status, headers, target, stream=stream)
            body = await read_body(response, timeouts.idle)
        except (StreamBroken, aiohttp.ClientError, OSError) as e:
            response.close()
            reason = str(e) if isinstance(e, StreamBroken) else describe(e)
            note(AttemptKind.DROPPED, None, f"dropped: {reason}")
            raise AttemptFailed(AttemptKind.DROPPED, reason) from e
        note(AttemptKind.ANSWERED, response.status)
        if response.status >= 400:
            body = from_oracle(
                response.status,
                body,
                provider.name,
                provider.host,
                request_id,
            )
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            headers.append(("content-type", "application/json"))
        return Reply(response.status, headers, target, body=body)

    def _cooling_down(self, route: Route) -> GatewayError:
        now = self.clock()
        waits = [
            breaker.retry_in(now)
            for target in route.candidates
            if (breaker := self.breakers.get(target.provider.name))
        ]
        wait = max(1, round(min(waits, default=1)))
        names = ", ".join(t.provider.name for t in route.candidates)
        return GatewayError(
            503,
            f"Every provider serving {route.subject} ({names}) failed repeatedly and "
            f"is cooling down; retry in about {wait} s (see /health).",
            code="providers_cooling_down",
            type="api_error",
            headers=(("retry-after", str(wait)),),
        )

    def _exhausted(self, route: Route, attempts: list[Attempt]) -> GatewayError:
        tried = "; ".join(
            f"{provider} ({address}): {outcome}" + (f" (x{count})" if count > 1 else "")
            for (provider, address, outcome), group in itertools.groupby(
                attempts, key=lambda a: (a.provider, a.address, a.outcome)
            )
            if (count := len(list(group)))
        )
        timed_out = attempts and all(
            a.kind is AttemptKind.TIMEOUT or a.detail == "connect timeout" for a in attempts
        )
        status, code = (504, "upstream_timeout") if timed_out else (502, "upstream_unreachable")
        return GatewayError(
            status,
            f"Oracle could not be reached for {route.subject} after "
            f"{len(attempts)} attempt(s): {tried}.",
            code=code,
            type="api_error",
        )

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

The aiohttp session under it (TLS, the upstream proxy) is oracle_session.py; reading a body or a
stream with its idle timeout, oracle_stream.py; what each attempt became, attempts.py.
"""

import asyncio
import itertools
import random
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from .attempts import Attempt, AttemptKind
from .errors import ErrorCode, GatewayError, from_oracle
from .inventory import Target
from .oracle_session import OracleSession, UpstreamProxy, describe
from .oracle_stream import StreamBroken, UpstreamStream, read_body, read_chunk
from .providers import Provider
from .redirects import is_redirect, refused_by_oracle
from .resilience import (
    RETRYABLE_STATUSES,
    CircuitBreaker,
    FailoverPolicy,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
)
from .routing import Route
from .upstream import returned_headers, upstream_url


class AttemptFailed(Exception):
    """An attempt that produced no HTTP answer: how it failed, in words for the log."""

    def __init__(self, kind: AttemptKind, detail: str, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.timed_out = kind, detail, timed_out

    def attempt(self, provider: Provider, seconds: float) -> Attempt:
        return Attempt(
            provider.name, provider.address, self.kind, None, self.detail, seconds, self.timed_out
        )


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

    def retry_after(self, now: float) -> float | None:
        """The seconds Oracle asked to wait (its last Retry-After header), if usable."""
        return parse_retry_after(
            dict((k.lower(), v) for k, v in self.headers).get("retry-after"), now
        )


def redirect_refused(response: aiohttp.ClientResponse, url: str, target: Target) -> Reply:
    """The 502 a 3xx from Oracle becomes (a redirect is never followed)."""
    provider = target.provider
    request_id = response.headers.get("opc-request-id")
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


async def read_reply(response: aiohttp.ClientResponse, target: Target) -> Reply:
    """A 2xx event stream once its first chunk came, or the whole body (an error's made
    OpenAI-shaped); AttemptFailed when the connection broke before."""
    idle = target.provider.timeouts.idle
    headers = returned_headers(response.headers.items())
    content_type = response.headers.get("content-type", "")
    try:
        if 200 <= response.status < 300 and content_type.startswith("text/event-stream"):
            # Committing to a stream waits for its first chunk: a failure before it can still
            # be retried, as nothing has reached the client yet.
            first_chunk = await read_chunk(response, idle)
            stream = UpstreamStream(response, idle, first_chunk)
            return Reply(response.status, headers, target, stream=stream)
        body = await read_body(response, idle)
    except (StreamBroken, aiohttp.ClientError, OSError) as e:
        response.close()
        reason = str(e) if isinstance(e, StreamBroken) else describe(e)
        raise AttemptFailed(AttemptKind.DROPPED, f"dropped: {reason}") from e
    if response.status >= 400:
        provider = target.provider
        request_id = response.headers.get("opc-request-id")
        body = from_oracle(response.status, body, provider.name, provider.host, request_id)
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
        headers.append(("content-type", "application/json"))
    return Reply(response.status, headers, target, body=body)


class Transport(OracleSession):
    """The gateway's HTTP client to Oracle: its session, with retries, failover and circuit
    breakers. One per addon, kept across reloads so that calls in flight finish on the session
    they started with."""

    def __init__(
        self,
        ssl_context: Callable[[], ssl.SSLContext],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(ssl_context)
        self.retries = RetryPolicy()
        self.failover = FailoverPolicy()
        self.breakers: Mapping[str, CircuitBreaker] = {}
        self.clock, self.wall_clock, self.jitter = clock, wall_clock, jitter

    def configure(
        self,
        retries: RetryPolicy,
        failover: FailoverPolicy,
        breakers: Mapping[str, CircuitBreaker],
        proxy: UpstreamProxy | None = None,
    ) -> None:
        self.retries, self.failover, self.breakers = retries, failover, breakers
        self.proxy = proxy

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
                if (wait := reply.retry_after(self.wall_clock())) is not None:
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
        """One try at one provider; its Attempt is appended here, whichever way it ended."""
        provider = target.provider
        started = self.clock()
        try:
            status, reply = await self._exchange(target, route, client_headers)
        except AttemptFailed as failure:
            attempts.append(failure.attempt(provider, self.clock() - started))
            raise
        seconds = self.clock() - started
        attempts.append(
            Attempt(provider.name, provider.address, AttemptKind.ANSWERED, status, "", seconds)
        )
        return reply

    async def _exchange(
        self, target: Target, route: Route, client_headers: Sequence[tuple[str, str]]
    ) -> tuple[int, Reply]:
        """The status Oracle answered and the Reply made of it, or AttemptFailed."""
        provider = target.provider
        url = upstream_url(provider, route.upstream_path, route.query)
        try:
            async with asyncio.timeout(provider.timeouts.headers):
                response = await self.request(
                    provider, route.method, url, route.bodies[provider.name], client_headers
                )
        except aiohttp.ConnectionTimeoutError as e:
            raise AttemptFailed(AttemptKind.CONNECT, "connect timeout", timed_out=True) from e
        except TimeoutError as e:
            raise AttemptFailed(AttemptKind.TIMEOUT, "headers timeout", timed_out=True) from e
        except aiohttp.ClientConnectorError as e:
            raise AttemptFailed(AttemptKind.CONNECT, describe(e)) from e
        except (aiohttp.ClientError, OSError) as e:
            raise AttemptFailed(AttemptKind.DROPPED, describe(e)) from e
        if is_redirect(response.status):
            response.close()
            return response.status, redirect_refused(response, url, target)
        return response.status, await read_reply(response, target)

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
            code=ErrorCode.PROVIDERS_COOLING_DOWN,
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
        timed_out = attempts and all(a.timed_out for a in attempts)
        status, code = (
            (504, ErrorCode.UPSTREAM_TIMEOUT)
            if timed_out
            else (502, ErrorCode.UPSTREAM_UNREACHABLE)
        )
        return GatewayError(
            status,
            f"Oracle could not be reached for {route.subject} after "
            f"{len(attempts)} attempt(s): {tried}.",
            code=code,
            type="api_error",
        )

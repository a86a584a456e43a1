"""Retry, failover, timeout and circuit-breaker rules, and the transport against in-process
Oracles that fail on cue."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fake_oracle import Answer, FakeOracle, client_context, completion
from gomodel_gateway.attempts import Attempt
from gomodel_gateway.call import Call
from gomodel_gateway.config import load_config
from gomodel_gateway.config_values import ConfigError
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.inventory import Target
from gomodel_gateway.providers import Provider
from gomodel_gateway.relay import StreamRelay
from gomodel_gateway.resilience import (
    CircuitBreaker,
    FailoverPolicy,
    RetryPolicy,
    Timeouts,
    backoff_delay,
    breakers_for,
    parse_retry_after,
)
from gomodel_gateway.routing import Endpoint, Route
from gomodel_gateway.transport import Reply, Transport
from processes import free_port

FAST = RetryPolicy(max_retries=2, backoff_initial=0.01, backoff_max=0.02)


@pytest.mark.parametrize(
    ("round_number", "random", "expected"),
    [(1, 0.0, 0.25), (1, 1.0, 0.5), (2, 0.0, 0.5), (2, 1.0, 1.0), (3, 1.0, 2.0), (10, 1.0, 8.0)],
)
def test_backoff_is_exponential_with_equal_jitter_and_capped(round_number, random, expected):
    assert backoff_delay(RetryPolicy(), round_number, None, lambda: random) == expected


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(0.0, 0.0), (3.0, 3.0), (30.0, 30.0), (31.0, None)]
)
def test_retry_after_wins_up_to_its_limit(retry_after: float, expected) -> None:
    assert backoff_delay(RetryPolicy(), 1, retry_after, lambda: 0.5) == expected


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        (
            format_datetime(datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=12), usegmt=True),
            12.0,
        ),
        (
            format_datetime(datetime.fromtimestamp(NOW, UTC) - timedelta(seconds=5), usegmt=True),
            0.0,
        ),
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("1.5", None),
    ],
)
def test_retry_after_headers_are_parsed(header, seconds) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_circuit_opens_after_consecutive_failures_then_lets_one_trial_through() -> None:
    breaker = CircuitBreaker(FailoverPolicy(failure_threshold=2, cooldown_seconds=10))
    breaker.record_failure(0)
    breaker.record_success()  # a success resets the count
    breaker.record_failure(1)
    assert breaker.allow(1) and breaker.state(1) == "closed"
    breaker.record_failure(2)
    assert breaker.state(5) == "open" and not breaker.allow(5)
    assert breaker.snapshot(5) == {
        "state": "open",
        "consecutive_failures": 2,
        "retry_in_seconds": 7,
    }
    assert breaker.state(12) == "half_open"
    assert breaker.allow(12) and not breaker.allow(12)  # one trial at a time
    breaker.record_failure(12)  # the trial failed: open again, for a full cool-down
    assert breaker.state(21) == "open" and breaker.allow(22)
    breaker.record_success()
    assert breaker.state(22) == "closed"


def test_breakers_survive_a_reload_for_providers_that_stay() -> None:
    policy = FailoverPolicy(failure_threshold=1)
    first = breakers_for(("a", "b"), policy, {})
    first["a"].record_failure(0)
    second = breakers_for(("a", "c"), FailoverPolicy(failure_threshold=5), first)
    assert second["a"] is first["a"] and second["a"].policy.failure_threshold == 5
    assert set(second) == {"a", "c"}


def test_policies_come_from_yaml_with_per_provider_timeouts(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "timeouts: {connect: 3, headers: 30}\n"
        "retries: {max_retries: 4, backoff_initial: 0.1}\n"
        "failover: {enabled: false, cooldown_seconds: 5}\n"
        "providers:\n"
        "  a: {base_url: 'https://a/v1', api_key: k}\n"
        "  b: {base_url: 'https://b/v1', api_key: k, timeouts: {idle: 7}}\n"
    )
    config = load_config(path, {})
    a, b = config.providers
    assert a.timeouts == Timeouts(connect=3, headers=30, idle=60)
    assert b.timeouts == Timeouts(connect=3, headers=30, idle=7)
    assert config.retries == RetryPolicy(max_retries=4, backoff_initial=0.1)
    assert config.failover == FailoverPolicy(enabled=False, cooldown_seconds=5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timeouts: {connect: 0}\n", r"timeouts\.connect: must be a positive number"),
        ("timeouts: {conect: 1}\n", r"timeouts\.conect: unknown key"),
        ("retries: {max_retries: 1.5}\n", r"max_retries: must be a whole number"),
        ("retries: {max_retries: -1}\n", r"max_retries: must be a whole number"),
        ("failover: {enabled: 'yes'}\n", r"failover\.enabled: must be true or false"),
        ("failover: [1]\n", r"failover: must be a mapping"),
        (
            "providers:\n  a: {base_url: 'https://a/v1', api_key: k, timeouts: {idle: x}}\n",
            r"providers\.a\.timeouts\.idle: must be a number",
        ),
    ],
)
def test_bad_policies_are_configuration_errors(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, {})


# -- the transport against in-process Oracles -----------------------------------------------------


def provider(name: str, oracle: FakeOracle | None, **timeouts: float) -> Provider:
    base_url = oracle.base_url if oracle else f"https://127.0.0.1:{free_port()}/v1"
    return Provider(name, base_url, f"sk-{name}", ("m.one",), timeouts=Timeouts(**timeouts))


def chat_route(*providers: Provider, stream: bool = False) -> Route:
    body = json.dumps({"model": "m.one", "messages": [], "stream": stream}).encode()
    targets = tuple(Target(p, "m.one") for p in providers)
    bodies = {p.name: body for p in providers}
    return Route(Endpoint.CHAT_COMPLETIONS, targets, "m.one", stream, bodies)


def transport_for(
    *providers: Provider, retries: RetryPolicy = FAST, failover: FailoverPolicy | None = None
) -> Transport:
    transport = Transport(client_context)
    policy = failover or FailoverPolicy()
    names = tuple(p.name for p in providers)
    transport.configure(retries, policy, breakers_for(names, policy, {}))
    return transport


def run(coroutine):
    return asyncio.run(coroutine)


async def send(transport: Transport, route: Route) -> tuple[Reply, list[Attempt]]:
    attempts: list[Attempt] = []
    return await transport.send(route, [], attempts), attempts


def test_a_503_then_success_gives_one_200_from_two_requests() -> None:
    async def scenario() -> None:
        async with FakeOracle(Answer(status=503, body={"code": "503", "message": "busy"})) as a:
            us = provider("us", a)
            transport = transport_for(us)
            reply, reply_attempts = await send(transport, chat_route(us))
            await transport.close()
        assert reply.status == 200 and len(a.received) == 2
        assert [x.outcome for x in reply_attempts] == ["503", "200"]

    run(scenario())


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_client_errors_other_than_429_are_never_retried(status: int) -> None:
    async def scenario() -> None:
        async with (
            FakeOracle(Answer(status=status, body={"code": str(status), "message": "no"})) as a,
            FakeOracle() as b,
        ):
            us, eu = provider("us", a), provider("eu", b)
            transport = transport_for(us, eu)
            reply, _reply_attempts = await send(transport, chat_route(us, eu))
            await transport.close()
        assert reply.status == status and len(a.received) == 1 and b.received == []
        assert json.loads(reply.body)["error"]["message"].startswith("Oracle (us,")

    run(scenario())


def test_retry_after_is_honoured() -> None:
    async def scenario() -> None:
        limited = Answer(
            status=429, body={"code": "429", "message": "slow down"}, headers={"Retry-After": "1"}
        )
        async with FakeOracle(limited) as a:
            us = provider("us", a)
            transport = transport_for(us)
            started = time.monotonic()
            reply, _reply_attempts = await send(transport, chat_route(us))
            waited = time.monotonic() - started
            await transport.close()
        assert reply.status == 200 and waited >= 1.0

    run(scenario())


def test_exhausted_retries_return_oracles_last_answer() -> None:
    async def scenario() -> None:
        busy = Answer(status=503, body={"code": "503", "message": "busy"})
        async with FakeOracle(busy, busy, busy) as a:
            us = provider("us", a)
            transport = transport_for(us)
            reply, _reply_attempts = await send(transport, chat_route(us))
            await transport.close()
        assert reply.status == 503 and len(a.received) == 3  # 1 + max_retries
        assert json.loads(reply.body)["error"]["code"] == "upstream_unavailable"

    run(scenario())


def test_a_region_down_fails_over_to_the_next_one() -> None:
    async def scenario() -> None:
        async with FakeOracle() as b:
            down, eu = provider("us", None), provider("eu", b)
            transport = transport_for(down, eu)
            reply, reply_attempts = await send(transport, chat_route(down, eu))
            await transport.close()
        assert reply.status == 200 and reply.target.provider.name == "eu"
        assert [(x.provider, x.outcome) for x in reply_attempts] == [
            ("us", "connection refused"),
            ("eu", "200"),
        ]
        assert b.received[0]["headers"]["Authorization"] == "Bearer sk-eu"

    run(scenario())


def test_a_pinned_call_never_fails_over() -> None:
    async def scenario() -> None:
        async with FakeOracle() as b:
            down = provider("us", None)
            transport = transport_for(down, provider("eu", b))
            with pytest.raises(GatewayError) as caught:
                await send(transport, chat_route(down))  # pinned: one candidate
            await transport.close()
        assert b.received == []
        assert caught.value.status == 502 and "(x3)" in caught.value.message

    run(scenario())


def test_both_regions_down_is_one_clear_error_naming_both() -> None:
    async def scenario() -> None:
        us, eu = provider("us", None), provider("eu", None)
        transport = transport_for(us, eu, retries=RetryPolicy(max_retries=0))
        with pytest.raises(GatewayError) as caught:
            await send(transport, chat_route(us, eu))
        await transport.close()
        assert caught.value.code == "upstream_unreachable"
        assert f"us ({us.address}): connection refused" in caught.value.message
        assert f"eu ({eu.address}): connection refused" in caught.value.message

    run(scenario())


def test_a_slow_region_times_out_with_504_and_is_not_asked_again() -> None:
    async def scenario() -> None:
        async with FakeOracle(Answer(delay=1.5)) as a:
            slow = provider("us", a, headers=0.3)
            transport = transport_for(slow)
            started = time.monotonic()
            with pytest.raises(GatewayError) as caught:
                await send(transport, chat_route(slow))
            elapsed = time.monotonic() - started
            await transport.close()
        assert caught.value.status == 504 and caught.value.code == "upstream_timeout"
        assert 0.3 <= elapsed < 1.5 and len(a.received) == 1  # once: it may still be running

    run(scenario())


def test_one_calls_retries_count_once_against_the_circuit() -> None:
    """Three attempts of one call are one failed call: a brief hiccup must not open the circuit
    (threshold 3) and turn every model away for everyone."""

    async def scenario() -> None:
        busy = Answer(status=503, body={"code": "503", "message": "busy"})
        async with FakeOracle(busy, busy, busy, busy, busy, busy, busy, busy, busy) as a:
            us = provider("us", a)
            transport = transport_for(us, failover=FailoverPolicy(failure_threshold=3))
            first, _ = await send(transport, chat_route(us))
            second, _ = await send(transport, chat_route(us))
            state_after_two = transport.breakers["us"].snapshot(0)
            third, _ = await send(transport, chat_route(us))
            with pytest.raises(GatewayError) as cooling:
                await send(transport, chat_route(us))
            await transport.close()
        assert first.status == second.status == third.status == 503
        assert len(a.received) == 9  # 3 calls x (1 + 2 retries)
        assert state_after_two["consecutive_failures"] == 2
        assert cooling.value.code == "providers_cooling_down"  # after 3 failed calls

    run(scenario())


def test_an_open_circuit_skips_its_provider_until_the_cool_down_ends() -> None:
    async def scenario() -> None:
        policy = FailoverPolicy(failure_threshold=1, cooldown_seconds=60)
        async with FakeOracle() as b:
            down, eu = provider("us", None), provider("eu", b)
            transport = transport_for(down, eu, failover=policy)
            _first, first_attempts = await send(transport, chat_route(down, eu))
            _second, second_attempts = await send(transport, chat_route(down, eu))
            with pytest.raises(GatewayError) as caught:
                await send(transport, chat_route(down))  # pinned to the open one
            await transport.close()
        assert [x.provider for x in first_attempts] == ["us", "eu"]
        assert [x.provider for x in second_attempts] == ["eu"]  # us was skipped
        assert caught.value.status == 503 and caught.value.code == "providers_cooling_down"
        assert dict(caught.value.headers)["retry-after"] == "60"

    run(scenario())


@pytest.mark.parametrize(
    ("status", "location", "named"),
    [
        (302, "http://evil.example:8080/steal?token=secret", "evil.example"),
        (307, "/20231130/actions/v1/elsewhere", "127.0.0.1"),
        (301, "https://other.example/", "other.example"),
        (308, None, "nowhere (no Location header)"),
    ],
)
def test_a_redirect_is_a_502_never_followed_retried_or_failed_over(status, location, named):
    async def scenario() -> None:
        headers = {"Location": location} if location else {}
        redirect = Answer(status=status, body=b"", headers=headers)
        policy = FailoverPolicy(failure_threshold=1)
        async with FakeOracle(redirect, redirect) as a, FakeOracle() as b:
            us, eu = provider("us", a), provider("eu", b)
            transport = transport_for(us, eu, failover=policy)
            reply, reply_attempts = await send(transport, chat_route(us, eu))
            again, _again_attempts = await send(transport, chat_route(us, eu))
            await transport.close()
        assert reply.status == 502 and b.received == []  # not failed over
        assert [(x.provider, x.outcome) for x in reply_attempts] == [("us", str(status))]
        assert reply.headers == [("opc-request-id", "R1"), ("content-type", "application/json")]
        error = json.loads(reply.body)["error"]
        assert error["code"] == "upstream_redirect" and error["type"] == "api_error"
        assert error["message"].startswith(
            f"Oracle (us, 127.0.0.1) answered {status}, a redirect to {named}: redirect refused: "
            "the gateway does not follow redirects with the provider key."
        )
        assert "steal" not in error["message"] and "elsewhere" not in error["message"]
        # A misconfiguration, not an outage: the circuit stays closed, the next call asks again.
        assert again.status == 502 and len(a.received) == 2

    run(scenario())


def test_failover_off_keeps_to_the_preferred_provider() -> None:
    async def scenario() -> None:
        async with FakeOracle() as b:
            down, eu = provider("us", None), provider("eu", b)
            transport = transport_for(down, eu, failover=FailoverPolicy(enabled=False))
            with pytest.raises(GatewayError):
                await send(transport, chat_route(down, eu))
            await transport.close()
        assert b.received == []

    run(scenario())


# -- streams through the relay --------------------------------------------------------------------

EVENTS = [f'data: {{"n": {i}}}\n\n'.encode() for i in range(6)] + [b"data: [DONE]\n\n"]


async def relay_stream(transport: Transport, route: Route) -> tuple[int, bytes, Call]:
    relay = StreamRelay(transport)
    await relay.start()
    job = Call("POST", "http://gomodel.local/v1/chat/completions", "/", 0.0, route=route)
    path = relay.register(job)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    raw = await reader.read(-1)
    writer.close()
    await relay.stop()
    await transport.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    chunked = b"transfer-encoding: chunked" in head.lower()  # streams; errors have a length
    return int(head.split()[1]), dechunk(body) if chunked else body, job


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + rest[:size], rest[size + 2 :]
    return out


def test_a_stream_passes_through_unchanged() -> None:
    async def scenario() -> None:
        async with FakeOracle(Answer(events=EVENTS)) as a:
            us = provider("us", a)
            status, body, job = await relay_stream(transport_for(us), chat_route(us, stream=True))
        assert status == 200 and body == b"".join(EVENTS) and job.broken is None

    run(scenario())


def test_a_stream_cut_midway_ends_with_an_error_event() -> None:
    async def scenario() -> None:
        async with FakeOracle(Answer(events=EVENTS, cut_after=3)) as a:
            us = provider("us", a)
            status, body, job = await relay_stream(transport_for(us), chat_route(us, stream=True))
        assert status == 200 and body.startswith(b"".join(EVENTS[:3]))
        last = json.loads(body.split(b"\n\n")[-2].removeprefix(b"data: "))
        assert last["error"]["code"] == "stream_interrupted"
        assert "The stream is incomplete" in last["error"]["message"]
        assert b"[DONE]" not in body and "dropped" in job.broken
        assert len(a.received) == 1  # never retried once bytes went out

    run(scenario())


def test_an_idle_stream_ends_with_an_error_event() -> None:
    async def scenario() -> None:
        async with FakeOracle(Answer(events=EVENTS, event_gap=1.0)) as a:
            us = provider("us", a, idle=0.3)
            _, body, job = await relay_stream(transport_for(us), chat_route(us, stream=True))
        assert body.startswith(EVENTS[0]) and b"idle timeout" in body
        assert "idle timeout" in job.broken

    run(scenario())


def test_a_stream_that_fails_before_its_first_chunk_is_retried() -> None:
    async def scenario() -> None:
        async with FakeOracle(Answer(events=EVENTS, cut_after=0), Answer(events=EVENTS)) as a:
            us = provider("us", a)
            status, body, _ = await relay_stream(transport_for(us), chat_route(us, stream=True))
        assert status == 200 and body == b"".join(EVENTS) and len(a.received) == 2

    run(scenario())


def test_a_stream_redirected_by_oracle_is_a_502_error() -> None:
    async def scenario() -> None:
        redirect = Answer(status=302, body=b"", headers={"Location": "http://evil.example/"})
        async with FakeOracle(redirect) as a, FakeOracle(Answer(events=EVENTS)) as b:
            us, eu = provider("us", a), provider("eu", b)
            route = chat_route(us, eu, stream=True)
            status, body, job = await relay_stream(transport_for(us, eu), route)
        assert status == 502 and len(a.received) == 1 and b.received == []
        error = json.loads(body)["error"]
        assert error["code"] == "upstream_redirect"
        assert "a redirect to evil.example: redirect refused" in error["message"]
        assert [x.outcome for x in job.attempts] == ["302"]

    run(scenario())


def test_the_relay_serves_each_token_once() -> None:
    async def scenario() -> None:
        relay = StreamRelay(Transport(client_context))
        await relay.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(
            b"POST /gomodel-relay/guess HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        head = await reader.read(-1)
        writer.close()
        await relay.stop()
        assert head.startswith(b"HTTP/1.1 404")

    run(scenario())


def test_completion_helper_is_valid_json() -> None:
    assert json.loads(json.dumps(completion()))["choices"][0]["message"]["content"] == "hi"

"""The limiter against a real redis-server: the Lua admission agrees with limits.decide, step by
step, and an unreachable Redis leaves the limits to the gateway's own counters."""

import asyncio
import uuid

import redis.asyncio as redis
from gomodel_gateway.ledger_location import redact_url
from gomodel_gateway.limiter import Limiter, redis_keys
from gomodel_gateway.limits import DAY, Buckets, Limits, LocalCounters
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY + 50.0

STEPS = st.lists(
    st.tuples(st.floats(0, 45), st.integers(0, 80), st.integers(0, 80)),  # wait, reserve, used
    max_size=25,
)
LIMITS = st.builds(
    Limits,
    st.none() | st.integers(1, 6),
    st.none() | st.integers(1, 60),
    st.none() | st.integers(1, 200),
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def run_both(redis_url: str, limits: Limits, steps) -> tuple[list, list]:
    clock = Clock(T0)
    shared, local = Limiter(clock, redis_url), LocalCounters()
    name = uuid.uuid4().hex
    shared_verdicts, local_verdicts = [], []
    try:
        for advance, reserve, used in steps:
            clock.now += advance
            verdict = await shared.admit(name, limits, reserve)
            expected = local.admit(name, limits, clock.now, reserve if limits.counts_tokens else 0)
            shared_verdicts.append((verdict.refusal, verdict.retry_after))
            local_verdicts.append((expected.refusal, expected.retry_after))
            if verdict.reservation and expected.reservation:  # the answer comes back
                shared.settle(verdict.reservation, used)
                await shared.send_settlements()
                local.settle(expected.reservation, used)
        assert shared.shared
    finally:
        await shared.close()
    return shared_verdicts, local_verdicts


@settings(max_examples=60, deadline=None)
@given(limits=LIMITS, steps=STEPS)
def test_redis_admits_exactly_as_the_local_counters_do(redis_server, limits, steps) -> None:
    shared, local = asyncio.run(run_both(redis_server.url, limits, steps))
    assert shared == local


def test_counters_expire_and_share_a_cluster_slot() -> None:
    buckets = Buckets.at(T0)
    keys = redis_keys("ci", buckets.minute, buckets.day)
    assert all(key.startswith("gomodel:{ci}:") for key in keys)
    assert len(set(keys)) == 5


def test_an_unreachable_redis_falls_back_to_local_counters_and_retries_later() -> None:
    clock, failures = Clock(T0), []
    limiter = Limiter(clock, "redis://:pw@127.0.0.1:1/0", lambda: failures.append(1))
    limits = Limits(requests_per_minute=2)

    async def calls() -> list[bool]:
        verdicts = [(await limiter.admit("ci", limits)).admitted for _ in range(3)]
        await limiter.close()
        return verdicts

    assert asyncio.run(calls()) == [True, True, False]
    assert failures == [1]  # then local until RETRY_SECONDS have passed
    assert not limiter.shared


def test_a_redis_password_is_never_shown() -> None:
    assert redact_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host:6379") == "redis://host:6379"
    assert redact_url("redis://host:6379/0?password=s3cret") == "redis://host:6379/0?password=***"


NEEDING = st.lists(
    st.tuples(st.floats(0, 45), st.integers(0, 80), st.integers(1, 120)),  # wait, reserve, need
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(budget=st.integers(1, 200), steps=NEEDING)
def test_redis_and_the_local_counters_agree_on_what_a_budget_must_cover(
    redis_server, budget, steps
) -> None:
    limits = Limits(tokens_per_day=budget)

    async def both() -> tuple[list, list]:
        clock = Clock(T0)
        shared, local, name = Limiter(clock, redis_server.url), LocalCounters(), uuid.uuid4().hex
        verdicts: tuple[list, list] = ([], [])
        try:
            for advance, reserve, needed in steps:
                clock.now += advance
                got = await shared.admit(name, limits, reserve, needed)
                expected = local.admit(name, limits, clock.now, reserve, needed)
                verdicts[0].append((got.refusal, got.left))
                verdicts[1].append((expected.refusal, expected.left))
        finally:
            await shared.close()
        return verdicts

    shared, local = asyncio.run(both())
    assert shared == local


def test_an_error_redis_answers_is_decided_locally_and_redis_stays_in_use(redis_server) -> None:
    """A counter Redis cannot add to (INCRBY overflows) fails the script: that call is decided
    by the gateway alone, and the next one asks Redis again (not 5 s of local counters)."""
    clock, failures = Clock(T0), []
    limiter = Limiter(clock, redis_server.url, lambda: failures.append(1))
    limits, name = Limits(requests_per_minute=5, tokens_per_day=2**62), uuid.uuid4().hex
    buckets = Buckets.at(T0)
    tokens_minute = redis_keys(name, buckets.minute, buckets.day)[3]

    async def calls() -> list[bool]:
        client = redis.Redis.from_url(redis_server.url)
        await client.set(tokens_minute, 2**63 - 10)  # INCRBY 100 overflows
        try:
            verdicts = [(await limiter.admit(name, limits, 100)).admitted]
            assert limiter.shared  # still on Redis
            await client.delete(tokens_minute)
            verdicts += [(await limiter.admit(name, limits, 100)).admitted for _ in range(6)]
            counted = int(await client.get(redis_keys(name, buckets.minute, buckets.day)[1]))
        finally:
            await client.aclose()
            await limiter.close()
        return [*verdicts, counted]

    assert asyncio.run(calls()) == [True, True, True, True, True, False, False, 5]
    assert failures == [1]
    assert limiter.down_until == 0.0


def test_the_numbers_sent_to_redis_are_bounded(redis_server) -> None:
    clock = Clock(T0)
    limiter = Limiter(clock, redis_server.url)
    limits = Limits(tokens_per_day=2**62)

    async def call() -> bool:
        try:
            verdict = await limiter.admit(uuid.uuid4().hex, limits, 10**30)
            return verdict.admitted and limiter.shared
        finally:
            await limiter.close()

    assert asyncio.run(call())

"""Rate limits and token budgets with a fake clock: windows, verdicts, Retry-After, errors."""

import json

import pytest
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.limits import (
    DAY,
    MAX_TOKENS,
    MINUTE,
    Buckets,
    Counts,
    Limits,
    LocalCounters,
    Refusal,
    Verdict,
    decide,
    estimate_tokens,
    limit_error,
    needed_tokens,
    wait_for_room,
)
from hypothesis import given
from hypothesis import strategies as st

T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY  # a UTC midnight


def admitted(counters: LocalCounters, limits: Limits, times: list[float]) -> list[bool]:
    return [counters.admit("team", limits, t).admitted for t in times]


def test_requests_per_minute_admits_the_limit_then_refuses() -> None:
    counters, limits = LocalCounters(), Limits(requests_per_minute=3)
    assert admitted(counters, limits, [T0 + 1, T0 + 2, T0 + 3, T0 + 4]) == [
        True,
        True,
        True,
        False,
    ]


def test_refused_calls_do_not_count() -> None:
    counters, limits = LocalCounters(), Limits(requests_per_minute=1)
    assert admitted(counters, limits, [T0, T0 + 1, T0 + 2]) == [True, False, False]
    assert counters.counts("team", Buckets.at(T0 + 2)).requests_current == 1


def test_the_window_slides_instead_of_resetting_at_the_minute() -> None:
    """3 per minute used at 0:50: at 1:10 the previous minute still weighs 5/6 of 3 = 2.5."""
    counters, limits = LocalCounters(), Limits(requests_per_minute=3)
    assert admitted(counters, limits, [T0 + 50, T0 + 51, T0 + 52]) == [True] * 3
    assert admitted(counters, limits, [T0 + 70]) == [False]
    assert admitted(counters, limits, [T0 + 80]) == [True]  # 3 * 2/3 + 0 + 1 <= 3
    assert admitted(counters, limits, [T0 + 81]) == [False]


def test_keys_are_counted_apart() -> None:
    counters, limits = LocalCounters(), Limits(requests_per_minute=1)
    assert counters.admit("a", limits, T0).admitted
    assert counters.admit("b", limits, T0).admitted
    assert not counters.admit("a", limits, T0 + 1).admitted


def test_tokens_per_minute_refuses_once_spent() -> None:
    counters, limits = LocalCounters(), Limits(tokens_per_minute=100)
    reservation = counters.admit("team", limits, T0, reserve=20).reservation
    assert reservation is not None
    counters.settle(reservation, 150)  # a long answer overruns the budget
    verdict = counters.admit("team", limits, T0 + 2)
    assert verdict.refusal is Refusal.TOKENS_PER_MINUTE
    assert MINUTE < verdict.retry_after <= 2 * MINUTE


def test_tokens_per_day_is_a_utc_day() -> None:
    counters, limits = LocalCounters(), Limits(tokens_per_day=1000)
    counters.admit("team", limits, T0 + 10, reserve=1000)
    verdict = counters.admit("team", limits, T0 + DAY - 100)
    assert verdict.refusal is Refusal.TOKENS_PER_DAY
    assert verdict.retry_after == pytest.approx(100)
    assert counters.admit("team", limits, T0 + DAY + 1).admitted


def test_old_buckets_are_forgotten() -> None:
    counters, limits = LocalCounters(), Limits(requests_per_minute=5, tokens_per_day=10**6)
    for minute in range(100):
        counters.admit("team", limits, T0 + minute * MINUTE, reserve=1)
    assert len(counters.requests) <= 2 and len(counters.tokens) <= 2 and len(counters.daily) == 1


def test_calls_made_at_once_cannot_share_the_same_room() -> None:
    """Each admitted call reserves its estimate: the second of two simultaneous calls finds the
    budget taken, whatever the first will really use."""
    counters, limits = LocalCounters(), Limits(tokens_per_day=50)
    first = counters.admit("team", limits, T0, reserve=1200)
    assert first.admitted
    assert counters.admit("team", limits, T0).refusal is Refusal.TOKENS_PER_DAY


def test_usage_replaces_the_estimate_in_the_buckets_it_was_reserved_in() -> None:
    counters, limits = LocalCounters(), Limits(tokens_per_minute=1000, tokens_per_day=5000)
    reservation = counters.admit("team", limits, T0 + 59, reserve=900).reservation
    assert reservation is not None
    counters.admit("team", limits, T0 + 61)  # a new minute: the reservation stays in the old
    counters.settle(reservation, 30)
    assert counters.counts("team", Buckets.at(T0 + 61)).tokens_previous == 30
    assert counters.counts("team", Buckets.at(T0 + 61)).tokens_today == 30


@pytest.mark.parametrize(
    ("document", "size", "estimate"),
    [
        ({}, 400, 100 + 1024),
        ({"max_tokens": 50}, 400, 150),
        ({"max_completion_tokens": 10}, 4, 11),
        ({"max_output_tokens": 7}, 0, 7),
        ({"max_tokens": True}, 0, 1024),  # not a number of tokens
        ({"max_tokens": "9"}, 0, 1024),
    ],
)
def test_estimate_tokens(document, size, estimate) -> None:
    assert estimate_tokens(size, document) == estimate


@pytest.mark.parametrize(
    ("previous", "current", "limit", "elapsed", "wait"),
    [
        (0, 0, 3, 0.5, 0.0),
        (0, 3, 3, 0.5, 50.0),  # the next minute, once this one's 3 weigh 2 (a third in)
        (3, 0, 3, 0.0, 20.0),  # 3 * (1 - f) + 1 <= 3 at f = 1/3
        (3, 2, 3, 0.5, 30.0),  # the previous minute must fade out entirely
        (6, 0, 3, 0.5, 10.0),  # 6 * (1 - f) <= 2 at f = 2/3
    ],
)
def test_wait_for_room(previous, current, limit, elapsed, wait) -> None:
    buckets = Buckets(100, elapsed, 1, 1000.0)
    assert wait_for_room(previous, current, limit, buckets) == pytest.approx(wait)


@given(
    previous=st.integers(0, 50),
    current=st.integers(0, 50),
    limit=st.integers(1, 40),
    elapsed=st.floats(0, 0.999),
)
def test_after_the_wait_there_is_room(previous, current, limit, elapsed) -> None:
    """Retry-After is honest: waiting it (and using nothing meanwhile) admits the call."""
    now = T0 + 100 * MINUTE + elapsed * MINUTE
    limits = Limits(requests_per_minute=limit)
    buckets = Buckets.at(now)
    counts = Counts(requests_previous=previous, requests_current=current)
    verdict = decide(limits, counts, buckets)
    if verdict.admitted:
        return
    later = Buckets.at(now + verdict.retry_after + 1e-6)
    if later.minute == buckets.minute:
        after = counts
    else:  # a minute turned: this one's count is the previous one's
        after = Counts(requests_previous=current if later.minute == buckets.minute + 1 else 0)
    assert decide(limits, after, later).admitted


@pytest.mark.parametrize(
    ("refusal", "code", "error_type"),
    [
        (Refusal.REQUESTS_PER_MINUTE, "rate_limit_exceeded", "requests"),
        (Refusal.TOKENS_PER_MINUTE, "rate_limit_exceeded", "tokens"),
        (Refusal.TOKENS_PER_DAY, "insufficient_quota", "insufficient_quota"),
    ],
)
def test_refusals_are_openai_style_429s_with_retry_after(refusal, code, error_type) -> None:
    limits = Limits(3, 100, 1000)
    error = limit_error("ci", limits, Verdict(refusal, 12.2))
    assert (error.status, error.code) == (429, code)
    assert json.loads(error.body())["error"]["type"] == error_type
    assert dict(error.headers)["retry-after"] == "13"
    should_retry = dict(error.headers).get("x-should-retry")
    assert should_retry == ("false" if code == "insufficient_quota" else None)
    assert "'ci'" in error.message


def test_retry_after_is_at_least_one_second() -> None:
    error = limit_error("ci", Limits(1), Verdict(Refusal.REQUESTS_PER_MINUTE, 0.01))
    assert dict(error.headers)["retry-after"] == "1"


# -- what a budget must cover, and numbers bounded before a store ---------------------------------


def test_a_call_is_refused_when_what_is_left_cannot_cover_what_it_needs() -> None:
    """Not only a spent budget refuses: 900 left cannot cover a call needing 2,000."""
    counters, limits = LocalCounters(), Limits(tokens_per_day=3000)
    assert counters.admit("team", limits, T0, reserve=2100, needed=2000).admitted
    verdict = counters.admit("team", limits, T0 + 1, reserve=2100, needed=2000)
    assert (verdict.refusal, verdict.needed, verdict.left) == (Refusal.TOKENS_PER_DAY, 2000, 900)
    error = limit_error("team", limits, verdict)
    assert (error.status, error.code) == (429, "insufficient_quota")
    assert "900 of its 3000 tokens left" in error.message and "needs about 2000" in error.message
    assert counters.admit("team", limits, T0 + 2, reserve=50, needed=900).admitted  # it fits


def test_what_a_model_call_needs_is_its_stored_context_and_its_output_limit() -> None:
    assert needed_tokens({}) == 1  # its own body and an unset output limit need not fit
    assert needed_tokens({"max_output_tokens": 5000}) == 5000
    assert needed_tokens({"max_tokens": 10}, stored=775_000) == 775_010
    assert estimate_tokens(400, {"max_tokens": 10}, stored=775_000) == 100 + 775_000 + 10


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
def test_an_output_limit_beyond_what_openai_accepts_is_a_400(name: str) -> None:
    for value in (10**30, 2**31):
        with pytest.raises(GatewayError) as refused:
            estimate_tokens(100, {name: value})
        assert refused.value.status == 400
        assert (refused.value.code, refused.value.param) == ("integer_above_max_value", name)
    assert estimate_tokens(0, {name: 2**31 - 1}) == 2**31 - 1


def test_no_estimate_exceeds_the_bound_a_store_can_count() -> None:
    assert estimate_tokens(10**15, {}, stored=10**20) == MAX_TOKENS
    assert needed_tokens({}, stored=-5) == 1


def test_a_call_spending_no_tokens_is_held_to_the_request_rate_only() -> None:
    limits = Limits(requests_per_minute=2, tokens_per_minute=10, tokens_per_day=10)
    assert limits.requests_only() == Limits(requests_per_minute=2)
    counters = LocalCounters()
    counters.admit("team", limits, T0, reserve=500)  # the budgets are spent
    assert counters.admit("team", limits.requests_only(), T0 + 1).admitted
    assert not counters.admit("team", limits.requests_only(), T0 + 2).admitted  # 2 a minute

"""mitmproxy mended from outside (workarounds.py): the pieces that need no running proxy."""

import gc
import json
import logging
import typing
from collections.abc import Iterator, Sequence

import pytest
from gomodel_gateway.workarounds import (
    CONNECTION_LOGGER,
    MAX_LOG_LINE,
    BoundedLog,
    LineBudget,
    acyclic_typecheck,
    bound_connection_log,
    check_type,
    protocol_error,
)
from mitmproxy import http
from mitmproxy.utils import typecheck

ORIGINAL = typecheck.check_option_type


@pytest.fixture
def mended() -> Iterator[None]:
    acyclic_typecheck()
    yield
    typecheck.check_option_type = ORIGINAL


def verdict(check: typing.Callable[[str, typing.Any, typing.Any], None], *args) -> str:
    try:
        check(*args)
    except TypeError as e:
        return str(e)
    return "ok"


@pytest.mark.parametrize(
    ("value", "typeinfo"),
    [
        (b"x", bytes | None),
        (None, bytes | None),
        ("x", bytes | None),
        (None, typing.Optional[http.Headers]),  # noqa: UP045  # typing.Union, as mitmproxy spells some
        (1, float),
        (1.5, int),
        (("a", 1), tuple[str, int]),
        (("a", "b"), tuple[str, int]),
        (("a",), tuple[str, int]),
        ("ab", tuple[str, int]),
        (["a", "b"], Sequence[str]),
        (["a", 2], Sequence[str]),
        ("ab", Sequence[str]),
        (None, typing.Any),
        (open, typing.IO),
        (3, typing.TextIO),
        (True, bool),
        ("on", bool),
    ],
)
def test_the_acyclic_check_gives_mitmproxys_verdicts(value, typeinfo) -> None:
    assert verdict(check_type, "field", value, typeinfo) == verdict(
        ORIGINAL, "field", value, typeinfo
    )


def build_and_drop_a_request() -> None:
    http.Request.make("POST", "http://gomodel.local/v1/chat/completions", b"x" * 1_000_000)


def test_a_message_built_and_dropped_leaves_no_cycle_behind(mended) -> None:
    """mitmproxy's own check leaves the building frames, the body with them, for the full
    garbage collection; the mended one leaves nothing."""
    gc.collect()
    gc.disable()
    try:
        build_and_drop_a_request()
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_mitmproxys_own_check_does_leave_a_cycle() -> None:
    """The mitmproxy behaviour the workaround is for (if this fails, mitmproxy fixed it)."""
    gc.collect()
    gc.disable()
    try:
        build_and_drop_a_request()
        assert gc.collect() > 0
    finally:
        gc.enable()


def test_mitmproxys_413_speaks_of_the_gateways_limit() -> None:
    answer = protocol_error(413, "Request body exceeds mitmproxy's body_size_limit.")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large"
    assert "gomodel_max_body_size" in error["message"] and "mitmproxy" not in error["message"]


def test_a_line_budget_lets_a_burst_through_then_its_rate() -> None:
    now = [0.0]
    budget = LineBudget(rate=10.0, burst=3, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    assert budget.dropped == 2
    now[0] = 0.1  # one line's worth
    assert [budget.take(), budget.take()] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert sum(budget.take() for _ in range(10)) == 3


def test_connection_log_lines_are_clipped_counted_and_installed_once() -> None:
    now = [0.0]
    bounded = BoundedLog(LineBudget(rate=1.0, burst=1, clock=lambda: now[0]))
    head = logging.LogRecord(
        "mitmproxy.proxy.server", logging.INFO, "", 0, "head: %r", ("A" * 70_000,), None
    )
    assert bounded.filter(head)
    assert len(head.getMessage()) < MAX_LOG_LINE + 40 and "more characters" in head.getMessage()
    dropped = logging.LogRecord("mitmproxy.proxy.server", logging.INFO, "", 0, "x", None, None)
    assert not bounded.filter(dropped)
    now[0] = 1.0
    after = logging.LogRecord("mitmproxy.proxy.server", logging.INFO, "", 0, "next", None, None)
    assert bounded.filter(after)
    assert after.getMessage() == "next (1 connection log lines dropped before this one)"

    bound_connection_log()
    bound_connection_log()
    filters = logging.getLogger(CONNECTION_LOGGER).filters
    assert sum(isinstance(f, BoundedLog) for f in filters) == 1

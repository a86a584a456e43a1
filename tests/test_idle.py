"""Client connections carrying no request are closed after the idle timeout (idle.py)."""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from gomodel_gateway.idle import IdleConnections, parse_idle_timeout


@dataclass
class Timer:
    seconds: float
    callback: Callable[..., None]
    args: tuple[object, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    timers: list[Timer] = field(default_factory=list)

    def call_later(self, seconds: float, callback: Callable[..., None], *args: object) -> Timer:
        self.timers.append(Timer(seconds, callback, args))
        return self.timers[-1]

    def expire(self) -> None:
        """Every pending timer runs out."""
        for timer in [t for t in self.timers if not t.cancelled]:
            timer.cancelled = True
            timer.callback(*timer.args)


def watcher(timeout: float | None = 60.0) -> tuple[IdleConnections, FakeLoop, list[str]]:
    loop, closed = FakeLoop(), []
    idle = IdleConnections(lambda: timeout, closed.append, lambda: loop)  # type: ignore[arg-type, return-value]
    return idle, loop, closed


def test_a_connection_that_never_finishes_a_request_head_is_closed() -> None:
    idle, loop, closed = watcher()
    idle.opened("c1")
    assert [t.seconds for t in loop.timers] == [60.0]
    loop.expire()
    assert closed == ["c1"]


def test_a_call_in_progress_is_never_cut() -> None:
    idle, loop, closed = watcher()
    idle.opened("c1")
    idle.call_started("c1", "f1", keyed=False)
    loop.expire()
    assert closed == []


def test_an_idle_keep_alive_connection_is_closed_once_its_last_call_ended() -> None:
    idle, loop, closed = watcher()
    idle.opened("c1")
    idle.call_started("c1", "f1", keyed=False)
    idle.call_started("c1", "f2", keyed=False)  # HTTP/2: two streams at once
    idle.call_ended("c1", "f1")
    loop.expire()
    assert closed == []
    idle.call_ended("c1", "f2")
    idle.call_ended("c1", "f2")  # response and error hooks for one flow: counted once
    loop.expire()
    assert closed == ["c1"]


def test_a_connection_that_carried_a_keyed_call_is_its_clients_to_keep() -> None:
    """An HTTP/2 answer may still wait for a slow reader when its call has ended."""
    idle, loop, closed = watcher()
    idle.opened("c1")
    idle.call_started("c1", "f1", keyed=True)
    idle.call_ended("c1", "f1")
    loop.expire()
    assert closed == [] and [t.cancelled for t in loop.timers] == [True]


def test_what_a_stranger_sends_does_not_stop_the_clock() -> None:
    """Refusals and /health never start a call: the clock runs from the connection's start."""
    idle, loop, closed = watcher()
    idle.opened("c1")
    idle.call_ended("c1", "refused")  # its response hook: not a call of this connection's
    assert [t.cancelled for t in loop.timers] == [False]
    loop.expire()
    assert closed == ["c1"]


def test_closed_connections_and_unknown_clients_are_forgotten() -> None:
    idle, loop, closed = watcher()
    idle.opened("c1")
    idle.closed("c1")
    idle.call_started("replay", "f1", keyed=True)  # a replayed flow's made-up client
    idle.call_ended("replay", "f1")
    loop.expire()
    assert closed == [] and idle.connections == {}


def test_no_timeout_keeps_connections_open() -> None:
    idle, loop, closed = watcher(timeout=None)
    idle.opened("c1")
    assert loop.timers == [] and closed == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("60", 60.0), (" 2.5 ", 2.5), ("off", None), ("OFF", None)],
)
def test_the_idle_timeout_option_parses(value: str, seconds: float | None) -> None:
    assert parse_idle_timeout(value) == seconds


@pytest.mark.parametrize("value", ["", "0", "-1", "nan", "inf", "1m", "sixty"])
def test_a_bad_idle_timeout_names_the_option(value: str) -> None:
    with pytest.raises(ValueError, match="gomodel_idle_timeout"):
        parse_idle_timeout(value)

"""What token budgets remember between calls: stored context sizes and background runs."""

from gomodel_gateway.limits import Reservation
from gomodel_gateway.stored_usage import BackgroundRun, BackgroundRuns, ContextSizes


def test_stored_context_sizes_are_bounded_and_never_negative() -> None:
    contexts = ContextSizes(capacity=2)
    contexts.set("conv_a", 100)
    contexts.add("conv_a", 50)
    contexts.set("resp_b", 7)
    assert contexts.of(["conv_a", "resp_b", "unknown"]) == 157
    contexts.set("resp_c", 1)  # the least recently used goes first
    assert contexts.of(["conv_a"]) == 0 and contexts.of(["resp_b", "resp_c"]) == 8
    contexts.add("resp_b", -100)
    assert contexts.of(["resp_b"]) == 0


def test_a_background_run_is_settled_once_when_seen_finished_with_usage() -> None:
    runs, reservation = BackgroundRuns(capacity=2), Reservation("team", 500, 1, 1)
    runs.started("resp_a", BackgroundRun(reservation, "xai.grok-4", None))
    assert runs.finished("resp_a", "in_progress", usage_known=False) is None
    assert runs.finished("resp_a", "completed", usage_known=True).reservation == reservation
    assert runs.finished("resp_a", "completed", usage_known=True) is None  # once
    runs.started("resp_b", BackgroundRun(reservation, "m", None))
    assert runs.finished("resp_b", "cancelled", usage_known=False) is None  # the estimate stands
    assert len(runs) == 0
    for name in ("resp_c", "resp_d", "resp_e"):
        runs.started(name, BackgroundRun(reservation, "m", None))
    assert len(runs) == 2  # the oldest went first

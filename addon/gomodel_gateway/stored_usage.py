"""What token budgets remember of stored state between calls (pure, bounded): the tokens of
each stored context a later call makes Oracle read again, and the background responses whose
usage comes with a later call (see limits.py)."""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .limits import Reservation, bounded

CONTEXT_CAPACITY = 50_000  # stored ids whose context size is remembered (as affinity.py's)
BACKGROUND_CAPACITY = 10_000  # background runs awaiting their usage
TERMINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})


class ContextSizes:
    """The tokens of stored state (a conversation, a response chain) that a call continuing it
    makes Oracle read, as far as this gateway saw it grow: Oracle's usage where it came, the
    estimate otherwise. Bounded: the least recently used ids go first. An id not here (made
    through another gateway, before a restart, or forgotten) counts as empty: its calls are
    still charged Oracle's usage when it comes."""

    def __init__(self, capacity: int = CONTEXT_CAPACITY) -> None:
        self.capacity = capacity
        self.sizes: OrderedDict[str, int] = OrderedDict()

    def of(self, ids: list[str]) -> int:
        return bounded(sum(self.sizes.get(stored_id, 0) for stored_id in ids))

    def set(self, stored_id: str, tokens: int) -> None:
        self.sizes[stored_id] = bounded(tokens)
        self.sizes.move_to_end(stored_id)
        while len(self.sizes) > self.capacity:
            self.sizes.popitem(last=False)

    def add(self, stored_id: str, tokens: int) -> None:
        self.set(stored_id, self.sizes.get(stored_id, 0) + tokens)


@dataclass(frozen=True)
class BackgroundRun:
    """A background response admitted with an estimate, awaiting Oracle's usage."""

    reservation: Reservation
    model: str  # the model Oracle was asked for, for the ledger row that settles it
    conversation: str | None  # the conversation it adds to, whose size its usage corrects


class BackgroundRuns:
    """Background responses by id, until a later call sees them finished (bounded: the oldest
    go first, keeping their estimate as their charge)."""

    def __init__(self, capacity: int = BACKGROUND_CAPACITY) -> None:
        self.capacity = capacity
        self.runs: OrderedDict[str, BackgroundRun] = OrderedDict()

    def __len__(self) -> int:
        return len(self.runs)

    def started(self, response_id: str, run: BackgroundRun) -> None:
        self.runs[response_id] = run
        while len(self.runs) > self.capacity:
            self.runs.popitem(last=False)

    def finished(self, response_id: str, status: Any, usage_known: bool) -> BackgroundRun | None:
        """The run a later call saw in `status`: returned (and forgotten) once it is finished
        with its usage; forgotten, its estimate standing, when it finished without usage."""
        if status not in TERMINAL_STATUSES or response_id not in self.runs:
            return None
        run = self.runs.pop(response_id)
        return run if usage_known else None

    def forget(self, response_id: str) -> None:
        self.runs.pop(response_id, None)

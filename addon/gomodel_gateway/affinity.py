"""Which provider owns a stored resource: a bounded memory of the ids Oracle created.

Oracle keeps responses, conversations, files and containers in the region that created them:
an id made through `oracle-eu` exists only there. The gateway remembers each id it saw created
(and by whom), so that follow-ups (`GET /v1/responses/{id}`, a `previous_response_id`...) reach
that provider whatever model they name, or none.

Pure: least recently used entries go first once `capacity` is reached, and an entry not used
for `max_idle` seconds is forgotten (Oracle's projects set their own retention, which the
gateway cannot see; a forgotten id is routed as an unknown one). The clock is passed in. The
store can be seeded (from a ledger, at startup) and reports each id it learns through
`on_remember`, which must not raise: it is called while a request is being answered.
"""

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DEFAULT_CAPACITY = 50_000
DEFAULT_MAX_IDLE = 30 * 24 * 3600.0

OnRemember = Callable[[str, str, str, str], None]  # (id, provider, kind, key name)


@dataclass(frozen=True)
class Owner:
    provider: str
    kind: str  # "response", "conversation", "file", "container"
    key: str  # the name of the client key that created it
    used: float  # when the id was last remembered or looked up


class AffinityStore:
    def __init__(
        self,
        clock: Callable[[], float],
        capacity: int = DEFAULT_CAPACITY,
        max_idle: float = DEFAULT_MAX_IDLE,
        on_remember: OnRemember | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.clock = clock
        self.capacity = capacity
        self.max_idle = max_idle
        self.on_remember = on_remember
        self._owners: OrderedDict[str, Owner] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def seed(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """Load (id, provider, kind, key) entries, later ones counting as more recently used;
        not reported to `on_remember` (they come from where it writes)."""
        now = self.clock()
        for resource_id, provider, kind, key in entries:
            self._put(resource_id, Owner(provider, kind, key, now))

    def remember(self, resource_id: str, provider: str, kind: str, key: str) -> None:
        """`provider` created `resource_id` for the key named `key`; reported when new, or
        when its owner changed."""
        known = self._owners.get(resource_id)
        self._put(resource_id, Owner(provider, kind, key, self.clock()))
        changed = known is None or (known.provider, known.key) != (provider, key)
        if self.on_remember and changed:
            self.on_remember(resource_id, provider, kind, key)

    def owner(self, resource_id: str) -> Owner | None:
        """Who owns an id, if remembered; a lookup counts as a use."""
        known = self._owners.get(resource_id)
        if known is None:
            return None
        now = self.clock()
        if now - known.used > self.max_idle:
            del self._owners[resource_id]
            return None
        self._put(resource_id, Owner(known.provider, known.kind, known.key, now))
        return self._owners[resource_id]

    def forget(self, resource_id: str) -> None:
        """The id was deleted at its owner."""
        self._owners.pop(resource_id, None)

    def _put(self, resource_id: str, owner: Owner) -> None:
        self._owners[resource_id] = owner
        self._owners.move_to_end(resource_id)
        while len(self._owners) > self.capacity:
            self._owners.popitem(last=False)

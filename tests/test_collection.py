"""Full garbage collections after connections close and calls finish (collection.py)."""

from gomodel_gateway.collection import Collector
from test_idle import FakeLoop


def test_one_collection_follows_everything_that_came_within_the_interval() -> None:
    loop, collections = FakeLoop(), []
    collector = Collector(1.0, lambda: loop, lambda: collections.append("full"))  # type: ignore[arg-type, return-value]
    for _ in range(100):
        collector.soon()
    assert [t.seconds for t in loop.timers] == [1.0] and collections == []
    loop.expire()
    assert collections == ["full"]
    collector.soon()  # the next garbage: the next collection
    loop.expire()
    assert collections == ["full", "full"]


def test_without_an_event_loop_nothing_is_scheduled() -> None:
    collections: list[str] = []
    collector = Collector(collect=lambda: collections.append("full"))
    collector.soon()  # a hook called by a unit test, outside the proxy's loop
    assert collector.pending is None and collections == []

"""The config-file watch: it starts from the stamp of the version that was read."""

import asyncio
from collections.abc import Callable
from pathlib import Path

from gomodel_gateway.watch import Stamp, file_stamp, watch_file


async def changes_seen(path: Path, seen: Stamp, edit: Callable[[], object]) -> int:
    calls = []
    task = asyncio.create_task(watch_file(path, seen, lambda: calls.append(1), 0.01))
    edit()
    await asyncio.sleep(0.1)
    task.cancel()
    return len(calls)


def test_an_edit_made_before_the_watch_starts_is_seen(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server:\n  master_keys: [k]\n")
    stamp_when_read = file_stamp(config)
    config.write_text("")  # edited between reading and watching
    assert asyncio.run(changes_seen(config, stamp_when_read, lambda: None)) == 1


def test_an_unchanged_file_calls_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("providers: {}\n")
    assert asyncio.run(changes_seen(config, file_stamp(config), lambda: None)) == 0


def test_a_deleted_and_a_created_file_are_changes(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    assert file_stamp(config) is None
    assert asyncio.run(changes_seen(config, None, lambda: config.write_text("a: 1\n"))) == 1
    assert asyncio.run(changes_seen(config, file_stamp(config), config.unlink)) == 1

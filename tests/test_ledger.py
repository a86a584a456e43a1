"""The usage ledger on real SQLite files and real PostgreSQL servers, and scripts/usage."""

import asyncio
import json
import logging
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import astuple, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gomodel_gateway.ledger import open_ledger
from gomodel_gateway.ledger_location import DEFAULT_USAGE_DB, parse_target
from gomodel_gateway.ledger_store import LedgerError, UsageRow, read_query
from gomodel_gateway.usage_report import (
    GROUP_COLUMNS,
    format_table,
    parse_group_by,
    parse_since,
    report_query,
)
from processes import REPO, clean_env, free_port
from stores import start_postgres

USAGE = REPO / "scripts" / "usage.py"
NOW = datetime(2025, 11, 26, 12, 0, tzinfo=UTC).timestamp()
ROW = UsageRow(
    time=NOW,
    key="team-a",
    provider="oracle",
    requested_model="gpt-oss",
    model="openai.gpt-oss-120b",
    endpoint="chat/completions",
    stream=False,
    status=200,
    tokens_in=12,
    tokens_out=30,
    latency_ms=250.0,
    request_id="opc-1",
    gateway="host-a:1",
)
PASSWORD = "Sup3r-Secret-pw"


def run_usage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(USAGE), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def count_rows(target: str) -> int:
    return read_query(parse_target(target), "SELECT COUNT(*) FROM gomodel_usage", ())[0][0]


def unreachable_postgres() -> str:
    """A PostgreSQL URL nothing answers: a database that is down."""
    return f"postgresql://gomodel:{PASSWORD}@127.0.0.1:{free_port()}/gomodel"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "usage.db")
    return request.getfixturevalue("postgres_url")


def test_rows_added_to_sqlite_are_read_back_with_every_column(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    streamed = replace(ROW, stream=True, tokens_in=None, tokens_out=None, request_id=None)
    ledger = open_ledger(str(path))
    ledger.add(ROW)
    ledger.add(streamed)
    ledger.close()

    with closing(sqlite3.connect(path)) as connection:
        stored = connection.execute("SELECT * FROM gomodel_usage ORDER BY stream").fetchall()
    assert stored == [
        astuple(replace(ROW, stream=0)),  # type: ignore[arg-type]
        astuple(replace(streamed, stream=1)),  # type: ignore[arg-type]
    ]
    assert (ledger.written, ledger.dropped, ledger.failed_writes, ledger.pending) == (2, 0, 0, 0)


def test_sqlite_ledger_uses_wal_and_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "new" / "usage.db"
    ledger = open_ledger(str(path), flush_seconds=0.05)
    try:
        ledger.add(ROW)
        assert eventually(lambda: ledger.written == 1)
        # While the writer's connection is open, the WAL and its index exist beside the file.
        files = sorted(path.parent.iterdir())
        assert [file.name for file in files] == ["usage.db", "usage.db-shm", "usage.db-wal"]
        assert [stat.S_IMODE(file.stat().st_mode) for file in files] == [0o600] * 3
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        ledger.close()
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_many_rows_are_written_in_a_few_transactions(tmp_path: Path) -> None:
    # A long flush interval: batches are cut by size alone, and close() writes the rest.
    ledger = open_ledger(str(tmp_path / "usage.db"), flush_seconds=60)
    for number in range(1200):
        ledger.add(replace(ROW, request_id=f"opc-{number}"))
    ledger.close()

    assert ledger.written == 1200
    assert ledger.batches == 3  # 500 + 500 + 200
    assert count_rows(str(tmp_path / "usage.db")) == 1200


def test_a_row_is_written_within_the_flush_interval_without_closing(tmp_path: Path) -> None:
    target = str(tmp_path / "usage.db")
    ledger = open_ledger(target, flush_seconds=0.2)
    try:
        ledger.add(ROW)
        assert eventually(lambda: count_rows(target) == 1, timeout=5)
        assert ledger.pending == 0
    finally:
        ledger.close()


def test_a_reopened_sqlite_ledger_keeps_its_rows(tmp_path: Path) -> None:
    target = str(tmp_path / "usage.db")
    first = open_ledger(target)
    first.add(ROW)
    first.close()
    second = open_ledger(target)
    second.add(replace(ROW, gateway="host-a:2"))
    second.close()

    assert count_rows(target) == 2


def test_two_gateways_share_one_postgres_ledger_and_the_report_totals_both(
    postgres_url: str,
) -> None:
    one = open_ledger(postgres_url)
    two = open_ledger(postgres_url)
    for _ in range(3):
        one.add(replace(ROW, time=time.time(), gateway="host-a:1"))
        two.add(replace(ROW, time=time.time(), gateway="host-b:7", tokens_in=8, status=502))
    two.add(replace(ROW, time=time.time(), key="team-b", tokens_in=1, tokens_out=2))
    one.close()
    two.close()

    result = run_usage("--db", postgres_url, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "key": "team-a",
            "model": "openai.gpt-oss-120b",
            "provider": "oracle",
            "requests": 6,
            "errors": 3,
            "tokens_in": 3 * 12 + 3 * 8,
            "tokens_out": 6 * 30,
            "latency_ms_mean": 250.0,
        },
        {
            "key": "team-b",
            "model": "openai.gpt-oss-120b",
            "provider": "oracle",
            "requests": 1,
            "errors": 0,
            "tokens_in": 1,
            "tokens_out": 2,
            "latency_ms_mean": 250.0,
        },
    ]


def test_the_report_counts_utc_days_alike_on_sqlite_and_postgres(ledger_target: str) -> None:
    late = datetime(2025, 11, 1, 23, 59, tzinfo=UTC).timestamp()
    ledger = open_ledger(ledger_target)
    ledger.add(replace(ROW, time=late))
    ledger.add(replace(ROW, time=late + 120, tokens_out=5))  # 00:01 the next day
    ledger.add(replace(ROW, time=late - 86400 * 2))  # before --since
    ledger.close()

    result = run_usage("--db", ledger_target, "--since", "2025-11-01", "--by", "day", "--json")

    assert result.returncode == 0, result.stderr
    assert [(r["day"], r["requests"], r["tokens_out"]) for r in json.loads(result.stdout)] == [
        ("2025-11-01", 1, 30),
        ("2025-11-02", 1, 5),
    ]


def test_the_report_table_is_aligned_with_a_total_line(tmp_path: Path) -> None:
    target = str(tmp_path / "usage.db")
    ledger = open_ledger(target)
    ledger.add(replace(ROW, time=time.time()))
    ledger.add(replace(ROW, time=time.time(), key="team-b", latency_ms=750.0, status=429))
    ledger.close()

    result = run_usage("--db", target, "--by", "key")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == [
        "key     requests  errors  tokens_in  tokens_out  latency_ms_mean",
        "team-a         1       0         12          30            250.0",
        "team-b         1       1         12          30            750.0",
        "total          2       1         24          60            500.0",
    ]


def test_a_postgres_outage_neither_blocks_nor_raises_and_rows_are_written_after_it(
    tmp_path: Path,
) -> None:
    server = start_postgres(tmp_path)
    ledger = open_ledger(server.url, flush_seconds=0.05)
    try:
        ledger.add(ROW)
        assert eventually(lambda: ledger.written == 1)
        server.down()

        started = time.monotonic()
        for _ in range(200):
            ledger.add(ROW)
        assert time.monotonic() - started < 0.5
        assert eventually(lambda: ledger.failed_writes >= 1)
        assert ledger.written == 1 and ledger.pending == 200

        server.up()
        assert eventually(lambda: ledger.written == 201, timeout=30)
        assert count_rows(server.url) == 201
        assert ledger.dropped == 0
    finally:
        ledger.close()
        server.stop()


def test_rows_beyond_the_queue_are_dropped_and_counted_while_the_database_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gomodel")
    ledger = open_ledger(unreachable_postgres(), queue_limit=100, batch_rows=10)

    started = time.monotonic()
    for _ in range(500):
        ledger.add(ROW)
    assert time.monotonic() - started < 0.5
    assert ledger.dropped >= 390 and ledger.pending <= 110
    assert eventually(lambda: ledger.failed_writes >= 1)
    ledger.close(timeout=10)
    ledger.add(ROW)  # after close: counted, not raised

    assert (ledger.written, ledger.dropped, ledger.pending) == (0, 501, 0)
    assert caplog.text.count("dropping new rows") == 1


def test_a_row_postgres_refuses_is_dropped_alone_and_its_batch_is_written(
    postgres_url: str,
) -> None:
    ledger = open_ledger(postgres_url, flush_seconds=60)  # one batch, written at close
    ledger.add(replace(ROW, request_id="before"))
    ledger.add(replace(ROW, requested_model="gpt\x00oss"))  # PostgreSQL text holds no NUL
    ledger.add(replace(ROW, request_id="after"))
    ledger.close()

    assert (ledger.written, ledger.dropped, ledger.failed_writes) == (2, 1, 0)
    assert ledger.batches == 2  # the refused batch of three, retried one row at a time
    stored = read_query(parse_target(postgres_url), "SELECT request_id FROM gomodel_usage", ())
    assert sorted(stored) == [("after",), ("before",)]


def test_a_password_in_the_url_appears_in_no_log_error_or_repr(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="gomodel")
    url = unreachable_postgres()
    ledger = open_ledger(url, flush_seconds=0.05)
    ledger.add(ROW)
    assert eventually(lambda: ledger.failed_writes >= 1)
    assert ledger.load_resources(10) == []
    ledger.close(timeout=10)
    with pytest.raises(LedgerError) as read_error:
        read_query(parse_target(url), "SELECT 1", ())
    with pytest.raises(ValueError) as config_error:
        parse_target(f"postgresql://gomodel:{PASSWORD}@db/gomodel?no_such_option=1")
    report = run_usage("--db", url)

    assert report.returncode == 1
    assert "gomodel:***@127.0.0.1" in report.stderr
    said = [caplog.text, repr(ledger), str(read_error.value), str(config_error.value)]
    said += [report.stdout, report.stderr, repr(parse_target(f"{url}?password={PASSWORD}"))]
    assert "usage ledger" in caplog.text
    for text in said:
        assert PASSWORD not in text


def test_resources_are_remembered_and_loaded_most_recent_first(ledger_target: str) -> None:
    ledger = open_ledger(ledger_target)
    ledger.remember_resource("resp_1", "oracle", "response", "ci")
    ledger.remember_resource("file_1", "oracle-eu", "file", "search")
    ledger.close()
    time.sleep(0.01)
    again = open_ledger(ledger_target)
    again.remember_resource("resp_1", "oracle-eu", "response", "ci")  # moved: last one wins
    again.close()

    restarted = open_ledger(ledger_target)
    try:
        assert restarted.load_resources(10) == [
            ("resp_1", "oracle-eu", "response", "ci"),
            ("file_1", "oracle-eu", "file", "search"),
        ]
        assert restarted.load_resources(1) == [("resp_1", "oracle-eu", "response", "ci")]
        assert restarted.find_resource("file_1") == ("file_1", "oracle-eu", "file", "search")
        assert restarted.find_resource("file_2") is None
    finally:
        restarted.close()


def test_lookups_find_stored_ids_and_answer_unknown_ones_with_none(
    ledger_target: str,
) -> None:
    ledger = open_ledger(ledger_target, flush_seconds=0.05)
    try:
        ledger.remember_resource("resp_1", "oracle", "response", "ci")
        deadline = time.monotonic() + 5
        while ledger.written < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)

        async def look_up() -> list[object]:
            return [await ledger.lookup(id) for id in ("resp_1", "resp_2", "resp_1")]

        owned = ("resp_1", "oracle", "response", "ci")
        assert asyncio.run(look_up()) == [owned, None, owned]  # the second on the same thread
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("30m", NOW - 30 * 60),
        ("24h", NOW - 86400),
        ("7d", NOW - 7 * 86400),
        (" 1h ", NOW - 3600),
        ("2025-11-01", datetime(2025, 11, 1, tzinfo=UTC).timestamp()),
        ("2025-11-01T08:30", datetime(2025, 11, 1, 8, 30, tzinfo=UTC).timestamp()),
        ("2025-11-01T08:30+02:00", datetime(2025, 11, 1, 6, 30, tzinfo=UTC).timestamp()),
    ],
)
def test_since_reads_spans_back_from_now_and_iso_dates_in_utc(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "24", "5w", "-1h", "1.5h", "yesterday", "2025-13-01"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since(text, NOW)


def test_group_by_keeps_the_given_order_of_whitelisted_columns() -> None:
    assert parse_group_by("day, key,model,key") == ("day", "key", "model")
    assert parse_group_by(",".join(GROUP_COLUMNS)) == GROUP_COLUMNS


@pytest.mark.parametrize(
    "text", ["status", "key,latency_ms", 'key"; DROP TABLE gomodel_usage; --', ""]
)
def test_group_by_refuses_columns_outside_the_whitelist(text: str) -> None:
    with pytest.raises(ValueError, match="--by"):
        parse_group_by(text)


def test_the_report_query_takes_no_column_outside_the_whitelist() -> None:
    with pytest.raises(ValueError):
        report_query(["key", "latency_ms"], NOW, "sqlite")
    sql, params = report_query(["day", "key"], NOW, "postgresql")
    assert params == (NOW,) and str(NOW) not in sql


def test_usage_refuses_an_unknown_group_column_with_exit_2(tmp_path: Path) -> None:
    result = run_usage("--db", str(tmp_path / "usage.db"), "--by", "key,colour")

    assert result.returncode == 2
    assert "cannot group by colour; choose from key, model, provider, day" in result.stderr


def test_usage_says_when_the_ledger_file_is_missing_and_exits_1(tmp_path: Path) -> None:
    result = run_usage("--db", str(tmp_path / "nowhere.db"))

    assert result.returncode == 1
    assert f"no usage ledger at {tmp_path / 'nowhere.db'}" in result.stderr
    assert not (tmp_path / "nowhere.db").exists()


def test_the_default_ledger_is_in_the_gomodel_directory_of_home() -> None:
    assert parse_target(DEFAULT_USAGE_DB).location == str(Path.home() / ".gomodel" / "usage.db")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("", "needs a file path or a postgresql:// URL"),
        ("mysql://u@db/usage", "neither a file path nor a postgresql://"),
        ("postgresql://u@db/usage?no_such_option=1", "not a valid PostgreSQL URL"),
    ],
)
def test_open_ledger_refuses_what_is_not_a_path_or_postgres_url(target: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        open_ledger(target)


def test_open_ledger_refuses_a_directory_or_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database, not at all, " * 100)
    with pytest.raises(ValueError, match="is a directory"):
        open_ledger(str(tmp_path))
    with pytest.raises(ValueError, match=r"notes\.txt"):
        open_ledger(str(tmp_path / "notes.txt"))


def test_format_table_shows_a_dash_for_an_empty_key() -> None:
    row = {"key": "", "requests": 1, "errors": 0, "tokens_in": 0, "tokens_out": 0}
    table = format_table(["key"], [{**row, "latency_ms_mean": 1.0}])
    assert table.splitlines()[1].startswith("-    ")

"""The usage ledger: one row per gateway call, kept in SQLite or PostgreSQL.

`Ledger.add` only puts the row on a bounded queue, so the request path never waits for a
database. One background thread writes the queue in batches, one transaction each. A database
that is down costs rows only once the queue is full: the batch in hand is retried with backoff,
and what does not fit is dropped and counted. Several gateways may share one ledger; each row
names the gateway that wrote it.

Owner lookups on the request path (`Ledger.lookup`) run on threads of their own (never the
event loop's default pool, which DNS resolution shares), `LOOKUP_WORKERS` of them, each keeping
one connection; each lookup is answered within `LOOKUP_SECONDS`, as "unknown" when the database
does not answer in time. A stuck database thus costs the calls that need it a bounded wait, and
no other call anything.
"""

import asyncio
import logging
import math
import os
import queue
import re
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import closing, suppress
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

logger = logging.getLogger("gomodel")

DEFAULT_USAGE_DB = "~/.gomodel/usage.db"
QUEUE_LIMIT = 100_000
BATCH_ROWS = 500
FLUSH_SECONDS = 1.0
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
LOG_INTERVAL_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 5
LOOKUP_WORKERS = 2
LOOKUP_SECONDS = 2.0  # the longest a call waits for one owner lookup
SQLITE_BUSY_SECONDS = 10.0  # another gateway's transaction on the same file
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SCHEMA_LOCK = 0x676F6D6F  # pg_advisory_xact_lock key: gateways starting together create tables once

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class UsageRow:
    """One call through the gateway. `key` is the client key's name, never the key itself."""

    time: float  # unix seconds
    key: str
    provider: str
    requested_model: str
    model: str  # the model id Oracle was asked for
    endpoint: str  # e.g. "chat/completions"
    stream: bool
    status: int
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: float
    request_id: str | None  # Oracle's opc-request-id
    gateway: str  # the gateway process that wrote the row (see gateway_id)


@dataclass(frozen=True)
class ResourceRow:
    """Which provider created a stored response, conversation or file id, with which key."""

    id: str
    provider: str
    kind: str
    key: str  # the client key's name
    created: float


SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gomodel_usage (
        "time" DOUBLE PRECISION NOT NULL,
        "key" TEXT NOT NULL,
        provider TEXT NOT NULL,
        requested_model TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        stream BOOLEAN NOT NULL,
        status INTEGER NOT NULL,
        tokens_in BIGINT,
        tokens_out BIGINT,
        latency_ms DOUBLE PRECISION NOT NULL,
        request_id TEXT,
        gateway TEXT NOT NULL
    )""",
    'CREATE INDEX IF NOT EXISTS gomodel_usage_time ON gomodel_usage ("time")',
    """CREATE TABLE IF NOT EXISTS gomodel_resources (
        id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        kind TEXT NOT NULL,
        "key" TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS gomodel_resources_created ON gomodel_resources (created)",
)
USAGE_COLUMNS = ", ".join(f'"{column.name}"' for column in fields(UsageRow))
RESOURCE_COLUMNS = ", ".join(f'"{column.name}"' for column in fields(ResourceRow))
Owned = tuple[str, str, str, str]  # a stored id, its provider, its kind, its key's name


def insert_usage_sql(mark: str) -> str:
    marks = ", ".join([mark] * len(fields(UsageRow)))
    return f"INSERT INTO gomodel_usage ({USAGE_COLUMNS}) VALUES ({marks})"


def upsert_resource_sql(mark: str) -> str:
    marks = ", ".join([mark] * len(fields(ResourceRow)))
    return (
        f"INSERT INTO gomodel_resources ({RESOURCE_COLUMNS}) VALUES ({marks}) "
        "ON CONFLICT (id) DO UPDATE SET provider = excluded.provider, kind = excluded.kind, "
        '"key" = excluded."key", created = excluded.created'
    )


def gateway_id() -> str:
    """This gateway process, for UsageRow.gateway: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a password= parameter) shown as ***."""
    scheme, _, rest = url.partition("://")
    location, query_mark, query = rest.partition("?")
    userinfo, at, hosts = location.rpartition("@")
    if ":" in userinfo:
        location = userinfo.split(":", 1)[0] + ":***" + at + hosts
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", query)
    return f"{scheme}://{location}{query_mark}{query}"


class LedgerError(Exception):
    """The ledger could not be read; the message names the ledger without its password."""


@dataclass(frozen=True)
class Target:
    """Where a ledger lives: a SQLite file (absolute path) or a PostgreSQL URL."""

    dialect: Dialect
    location: str

    def __str__(self) -> str:
        return self.location if self.dialect == "sqlite" else redact_url(self.location)

    def __repr__(self) -> str:
        return f"Target({self.dialect}, {self})"

    @property
    def mark(self) -> str:
        """The driver's parameter placeholder."""
        return "?" if self.dialect == "sqlite" else "%s"

    def scrub(self, text: str) -> str:
        """An error message fit for a log line: on one line, with no password in it."""
        text = " ".join(str(text).split())
        if self.dialect == "postgresql":
            for secret in postgres_passwords(self.location):
                text = text.replace(secret, "***")
        return text


def postgres_passwords(url: str) -> set[str]:
    """Every form in which the URL's passwords could appear in a message."""
    secrets = set()
    with suppress(ValueError):
        if password := urlsplit(url).password:
            secrets |= {password, unquote(password)}
    for value in re.findall(r"(?i)(?:^|[?&])password=([^&]*)", url.partition("?")[2]):
        secrets |= {value, unquote(value)}
    return {secret for secret in secrets if secret}


def parse_target(text: str) -> Target:
    """A file path (~ allowed) or a postgresql:// or postgres:// URL; ValueError says why not."""
    text = text.strip()
    if not text:
        raise ValueError("the usage ledger needs a file path or a postgresql:// URL")
    if text.startswith(POSTGRES_SCHEMES):
        check_postgres_url(text)
        return Target("postgresql", text)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise ValueError(
            f"{redact_url(text)!r} is neither a file path nor a postgresql:// or postgres:// URL"
        )
    path = Path(text).expanduser().absolute()
    if path.is_dir():
        raise ValueError(f"{path} is a directory; name a file in it, e.g. {path / 'usage.db'}")
    return Target("sqlite", str(path))


def check_postgres_url(url: str) -> None:
    try:
        # Imported here: only a PostgreSQL ledger needs the driver.
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ValueError(
            "a PostgreSQL usage ledger needs psycopg: pip install 'psycopg[binary]>=3.2,<4'"
        ) from None
    try:
        conninfo_to_dict(url)
    except psycopg.Error as error:
        target = Target("postgresql", url)
        reason = target.scrub(str(error))
        raise ValueError(f"{target}: not a valid PostgreSQL URL: {reason}") from None


def connect(target: Target, timeout: float | None = None) -> Any:
    """A DB-API connection to an existing ledger (a SQLite file is never created here); with
    `timeout`, connecting and each statement take at most about that long."""
    if target.dialect == "sqlite":
        uri = Path(target.location).as_uri() + "?mode=rw"
        return sqlite3.connect(uri, uri=True, timeout=timeout or SQLITE_BUSY_SECONDS)
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(target.location)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    params.setdefault("application_name", "gomodel")
    if timeout is not None:
        params["connect_timeout"] = min(int(params["connect_timeout"]), math.ceil(timeout))
        statement = f"-c statement_timeout={int(timeout * 1000)}"
        params["options"] = f"{params.get('options', '')} {statement}".strip()
    return psycopg.connect(**params)


def prepare(connection: Any, target: Target) -> None:
    """WAL for SQLite (the report reads while gateways write); the tables, if missing."""
    with closing(connection.cursor()) as cursor:
        if target.dialect == "sqlite":
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable across crashes in WAL mode
        else:
            # CREATE TABLE IF NOT EXISTS races when two gateways start together.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in SCHEMA:
            cursor.execute(statement)
    connection.commit()


def write_batch(
    connection: Any, target: Target, usage: Sequence[UsageRow], resources: Sequence[ResourceRow]
) -> None:
    """Both kinds of row in one transaction."""
    with closing(connection.cursor()) as cursor:
        if usage:
            cursor.executemany(insert_usage_sql(target.mark), [astuple(row) for row in usage])
        if resources:
            cursor.executemany(
                upsert_resource_sql(target.mark), [astuple(row) for row in resources]
            )
    connection.commit()


def read_query(target: Target, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of one query; LedgerError when the ledger is missing or unreadable."""
    if target.dialect == "sqlite" and not Path(target.location).is_file():
        raise LedgerError(
            f"no usage ledger at {target} (a gateway started with "
            f"--set gomodel_usage_db={target} creates it)"
        )
    try:
        with closing(connect(target)) as connection, closing(connection.cursor()) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    except database_errors(target) as error:
        raise LedgerError(f"{target}: {target.scrub(str(error))}") from None


def database_errors(target: Target) -> tuple[type[Exception], ...]:
    if target.dialect == "sqlite":
        return (sqlite3.Error,)
    import psycopg

    return (psycopg.Error,)


def transient_errors(target: Target) -> tuple[type[Exception], ...]:
    """Errors worth retrying a batch for: the database is down, locked or out of space. Others
    (a row the database refuses) would fail forever and block every row behind them."""
    if target.dialect == "sqlite":
        return (sqlite3.OperationalError,)
    import psycopg

    return (psycopg.OperationalError,)


def open_connection(target: Target) -> Any:
    """A connection to the ledger, its tables ready."""
    connection = connect(target)
    try:
        prepare(connection, target)
    except BaseException:
        connection.close()
        raise
    return connection


def create_sqlite(path: Path) -> None:
    """The file (mode 0600, its directory 0700 if new) with WAL on and the tables."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    open_connection(Target("sqlite", str(path))).close()


class Throttle:
    """Yes at most once per interval: for log lines that would otherwise repeat per row."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.next_at = float("-inf")

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.next_at:
            return False
        self.next_at = now + self.interval
        return True


class LookupPool:
    """Owner lookups on daemon threads (a thread stuck on a database that does not answer
    never holds up the process's exit), each keeping one connection, reopened after an
    error."""

    def __init__(self, target: Target, workers: int = LOOKUP_WORKERS) -> None:
        self.target = target
        self.jobs: queue.SimpleQueue[tuple[str, Future[Owned | None]] | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"gomodel-lookup-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    def submit(self, id: str) -> "Future[Owned | None]":
        future: Future[Owned | None] = Future()
        self.jobs.put((id, future))
        return future

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)

    def _work(self) -> None:
        connection = None
        while (job := self.jobs.get()) is not None:
            id, future = job
            if not future.set_running_or_notify_cancel():  # its caller stopped waiting
                continue
            try:
                connection = connection or connect(self.target, LOOKUP_SECONDS)
                future.set_result(find_owner(connection, self.target, id))
            except BaseException as error:
                future.set_exception(error)
                if connection is not None:
                    with suppress(Exception):
                        connection.close()
                connection = None
        if connection is not None:
            with suppress(Exception):
                connection.close()


def find_owner(connection: Any, target: Target, id: str) -> Owned | None:
    """One stored id's (id, provider, kind, key), or None; the read's transaction ended."""
    sql = f'SELECT id, provider, kind, "key" FROM gomodel_resources WHERE id = {target.mark}'
    try:
        with closing(connection.cursor()) as cursor:
            cursor.execute(sql, (id,))
            row = cursor.fetchone()
    finally:
        connection.rollback()
    return (row[0], row[1], row[2], row[3]) if row else None


def retry_delay(failures: int) -> float:
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (failures - 1))


class Ledger:
    """The usage ledger's writer. Counters (read them from any thread): `written` rows and
    resource ids committed, `batches` committed, `failed_writes` (batch attempts that failed),
    `dropped` (never to be written: queue full, refused by the database, or left at close),
    `pending` (queued or in hand)."""

    def __init__(
        self,
        target: Target,
        *,
        queue_limit: int = QUEUE_LIMIT,
        batch_rows: int = BATCH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.target = target
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.written = 0
        self.batches = 0
        self.failed_writes = 0
        self.dropped = 0
        # Rows wait here; the writer takes them every flush_seconds, or as soon as a batch is
        # full. A deque's append and popleft need no lock: adding a row costs a call next to
        # nothing (no condition variable, no wake-up per row).
        self._queue: deque[UsageRow | ResourceRow] = deque()
        self._queue_limit = queue_limit
        self._wake = threading.Event()  # a full batch waits, or the ledger closes
        self._batch: list[UsageRow | ResourceRow] = []
        self._suspects = 0  # items at the batch's head to write one per transaction
        self._closing = threading.Event()
        self._dropped_lock = threading.Lock()
        self._full_log = Throttle()
        self._error_log = Throttle()
        self._lookup_log = Throttle()
        self._lookups = LookupPool(target)
        self._transient = transient_errors(target)
        self._thread = threading.Thread(target=self._run, name="gomodel-ledger", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return (
            f"Ledger({self.target}, written={self.written}, pending={self.pending}, "
            f"dropped={self.dropped}, failed_writes={self.failed_writes})"
        )

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._batch)

    def counts(self) -> dict[str, int]:
        """The counters, for metrics."""
        return {
            "written": self.written,
            "dropped": self.dropped,
            "pending": self.pending,
            "failed_writes": self.failed_writes,
        }

    def add(self, row: UsageRow) -> None:
        """Queue one call's row; never blocks, never raises."""
        self._offer(row)

    def remember_resource(self, id: str, provider: str, kind: str, key: str) -> None:
        """Queue which provider created a stored id, with which key (written as an upsert)."""
        self._offer(ResourceRow(id, provider, kind, key, time.time()))

    def load_resources(self, limit: int) -> list[Owned]:
        """(id, provider, kind, key), most recent first; blocks. [] when the ledger cannot be
        read, logged: starting without that memory beats not starting."""
        mark = self.target.mark
        return self._owned(f"ORDER BY created DESC LIMIT {mark}", (limit,))

    def find_resource(self, id: str) -> Owned | None:
        """One stored id's owner, as another gateway sharing this ledger may have written it;
        blocks. None when unknown or when the ledger cannot be read (logged)."""
        found = self._owned(f"WHERE id = {self.target.mark}", (id,))
        return found[0] if found else None

    async def lookup(self, id: str) -> Owned | None:
        """`find_resource` for the request path (see the module's docstring): None when
        unknown, or when the ledger did not answer within LOOKUP_SECONDS (logged, throttled)."""
        future = self._lookups.submit(id)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), LOOKUP_SECONDS)
        except TimeoutError:
            reason = f"no answer within {LOOKUP_SECONDS:.0f}s"
        except database_errors(self.target) as error:
            reason = self.target.scrub(str(error))
        if self._lookup_log.due():
            logger.warning(
                "usage ledger: could not look up a stored id in %s, taken as unknown: %s",
                self.target,
                reason,
            )
        return None

    def _owned(self, condition: str, params: tuple[Any, ...]) -> list[Owned]:
        sql = f'SELECT id, provider, kind, "key" FROM gomodel_resources {condition}'
        try:
            with (
                closing(open_connection(self.target)) as connection,
                closing(connection.cursor()) as cursor,
            ):
                cursor.execute(sql, params)
                return [(id, provider, kind, key) for id, provider, kind, key in cursor.fetchall()]
        except database_errors(self.target) as error:
            logger.warning(
                "usage ledger: could not read stored ids from %s: %s",
                self.target,
                self.target.scrub(str(error)),
            )
            return []

    def close(self, timeout: float = 5.0) -> None:
        """Write what can be written within `timeout` seconds, then stop the writer."""
        self._lookups.close()
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "usage ledger: %d rows not yet written to %s at shutdown", self.pending, self.target
            )
            return
        # What an add racing with the close queued after the writer's last look.
        self._drop(self._drain())

    def _offer(self, item: UsageRow | ResourceRow) -> None:
        if self._closing.is_set():
            self._drop(1)
            return
        if len(self._queue) >= self._queue_limit:
            self._drop(1)
            if self._full_log.due():
                logger.warning(
                    "usage ledger: %d rows wait for %s; dropping new rows (%d dropped so far)",
                    self._queue_limit,
                    self.target,
                    self.dropped,
                )
            return
        self._queue.append(item)
        if len(self._queue) == self.batch_rows:
            self._wake.set()

    def _drop(self, count: int) -> None:
        with self._dropped_lock:
            self.dropped += count

    def _run(self) -> None:
        connection = None
        failures = 0
        while True:
            closing_now = self._closing.is_set()
            if not self._batch and not closing_now:
                self._take(self.flush_seconds, wait_for_first=True)
            else:
                self._take(window=0.0)  # top up the batch in hand, no waiting
            if not self._batch:
                if closing_now:
                    break
                continue
            size = 1 if self._suspects else len(self._batch)
            try:
                connection = connection or open_connection(self.target)
                self._write(connection, size)
            except Exception as error:  # the writer must outlive anything a batch does
                if not isinstance(error, self._transient):
                    if connection is not None:
                        with suppress(Exception):  # a broken connection fails the next write
                            connection.rollback()
                    self._refused(error, size)
                    continue
                if connection is not None:
                    with suppress(Exception):
                        connection.close()
                connection = None
                failures += 1
                self.failed_writes += 1
                if closing_now:
                    self._abandon(error)
                    break
                self._log_failure(error, retry_delay(failures))
                self._closing.wait(retry_delay(failures))
                continue
            if failures:
                logger.info("usage ledger: writing to %s again", self.target)
            failures = 0
        if connection is not None:
            with suppress(Exception):
                connection.close()

    def _take(self, window: float, wait_for_first: bool = False) -> None:
        """Move queued items into the batch until it is full; with `wait_for_first`, first
        wait up to `window` seconds for a full batch (or the close)."""
        if wait_for_first and len(self._queue) < self.batch_rows:
            self._wake.wait(window)
            self._wake.clear()
        while len(self._batch) < self.batch_rows and self._queue:
            self._batch.append(self._queue.popleft())

    def _write(self, connection: Any, size: int) -> None:
        """The batch's first `size` items in one transaction."""
        items = self._batch[:size]
        usage = [item for item in items if isinstance(item, UsageRow)]
        resources = [item for item in items if isinstance(item, ResourceRow)]
        write_batch(connection, self.target, usage, resources)
        del self._batch[:size]
        self._suspects = max(0, self._suspects - size)
        self.written += size
        self.batches += 1

    def _refused(self, error: Exception, size: int) -> None:
        """The database refused these rows (one bad value, e.g. a NUL byte in a client-sent
        model name, fails its whole batch): retry them one per transaction, dropping only the
        rows refused alone."""
        if size > 1:
            self._suspects = size
            return
        if self._error_log.due():
            logger.error(
                "usage ledger: %s refused a row, dropped: %s",
                self.target,
                self.target.scrub(str(error)),
            )
        del self._batch[:1]
        self._suspects = max(0, self._suspects - 1)
        self._drop(1)

    def _drain(self) -> int:
        """Empty the queue; the number of rows it held."""
        rows = len(self._queue)
        self._queue.clear()
        return rows

    def _abandon(self, error: Exception) -> None:
        lost = len(self._batch) + self._drain()
        self._batch = []
        self._drop(lost)
        logger.warning(
            "usage ledger: %d rows could not be written to %s before shutdown: %s",
            lost,
            self.target,
            self.target.scrub(str(error)),
        )

    def _log_failure(self, error: Exception, delay: float) -> None:
        if self._error_log.due():
            logger.warning(
                "usage ledger: cannot write to %s (failed attempts so far: %d), retrying in "
                "%.0fs with %d rows waiting: %s",
                self.target,
                self.failed_writes,
                delay,
                self.pending,
                self.target.scrub(str(error)),
            )


def open_ledger(
    target: str,
    *,
    queue_limit: int = QUEUE_LIMIT,
    batch_rows: int = BATCH_ROWS,
    flush_seconds: float = FLUSH_SECONDS,
) -> Ledger:
    """A running ledger on `target`, a file path or a postgresql:// URL. A SQLite file is created
    and checked here (ValueError when it cannot be); PostgreSQL is reached from the writer
    thread, so a database that is down delays rows, not the gateway."""
    where = parse_target(target)
    if where.dialect == "sqlite":
        try:
            create_sqlite(Path(where.location))
        except (OSError, sqlite3.Error) as error:
            raise ValueError(f"usage ledger {where}: {error}") from None
    return Ledger(
        where, queue_limit=queue_limit, batch_rows=batch_rows, flush_seconds=flush_seconds
    )

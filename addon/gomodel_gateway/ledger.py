"""The usage ledger's writer: one row per gateway call, kept in SQLite or PostgreSQL.

`Ledger.add` only puts the row on a bounded queue, so the request path never waits for a
database. One background thread writes the queue in batches, one transaction each. A database
that is down costs rows only once the queue is full: the batch in hand is retried with backoff,
and what does not fit is dropped and counted. Several gateways may share one ledger; each row
names the gateway that wrote it.

Owner lookups on the request path (`Ledger.lookup`) run on a LookupPool (ledger_lookup.py), each
answered within `LOOKUP_SECONDS`, as "unknown" when the database does not answer in time. A
stuck database thus costs the calls that need it a bounded wait, and no other call anything.
The rows and the databases are in ledger_store.py, where a ledger lives in ledger_location.py.
"""

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from .ledger_location import LedgerLocation, parse_target
from .ledger_lookup import LOOKUP_SECONDS, LookupPool
from .ledger_store import (
    Owned,
    ResourceRow,
    UsageRow,
    create_sqlite,
    database_errors,
    open_connection,
    transient_errors,
    write_batch,
)

logger = logging.getLogger("gomodel")

QUEUE_LIMIT = 100_000
BATCH_ROWS = 500
FLUSH_SECONDS = 1.0
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
LOG_INTERVAL_SECONDS = 60.0


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


def retry_delay(failures: int) -> float:
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (failures - 1))


class Ledger:
    """The usage ledger's writer. Counters (read them from any thread): `written` rows and
    resource ids committed, `batches` committed, `failed_writes` (batch attempts that failed),
    `dropped` (never to be written: queue full, refused by the database, or left at close),
    `pending` (queued or in hand)."""

    def __init__(
        self,
        location: LedgerLocation,
        *,
        queue_limit: int = QUEUE_LIMIT,
        batch_rows: int = BATCH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.location = location
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
        self._lookups = LookupPool(location)
        self._transient = transient_errors(location)
        self._thread = threading.Thread(target=self._run, name="gomodel-ledger", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return (
            f"Ledger({self.location}, written={self.written}, pending={self.pending}, "
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
        mark = self.location.mark
        return self._owned(f"ORDER BY created DESC LIMIT {mark}", (limit,))

    def find_resource(self, id: str) -> Owned | None:
        """One stored id's owner, as another gateway sharing this ledger may have written it;
        blocks. None when unknown or when the ledger cannot be read (logged)."""
        found = self._owned(f"WHERE id = {self.location.mark}", (id,))
        return found[0] if found else None

    async def lookup(self, id: str) -> Owned | None:
        """`find_resource` for the request path (see the module's docstring): None when
        unknown, or when the ledger did not answer within LOOKUP_SECONDS (logged, throttled)."""
        future = self._lookups.submit(id)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), LOOKUP_SECONDS)
        except TimeoutError:
            reason = f"no answer within {LOOKUP_SECONDS:.0f}s"
        except database_errors(self.location) as error:
            reason = self.location.scrub(str(error))
        if self._lookup_log.due():
            logger.warning(
                "usage ledger: could not look up a stored id in %s, taken as unknown: %s",
                self.location,
                reason,
            )
        return None

    def _owned(self, condition: str, params: tuple[Any, ...]) -> list[Owned]:
        sql = f'SELECT id, provider, kind, "key" FROM gomodel_resources {condition}'
        try:
            with (
                closing(open_connection(self.location)) as connection,
                closing(connection.cursor()) as cursor,
            ):
                cursor.execute(sql, params)
                return [(id, provider, kind, key) for id, provider, kind, key in cursor.fetchall()]
        except database_errors(self.location) as error:
            logger.warning(
                "usage ledger: could not read stored ids from %s: %s",
                self.location,
                self.location.scrub(str(error)),
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
                "usage ledger: %d rows not yet written to %s at shutdown",
                self.pending,
                self.location,
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
                    self.location,
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
                connection = connection or open_connection(self.location)
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
                logger.info("usage ledger: writing to %s again", self.location)
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
        write_batch(connection, self.location, usage, resources)
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
                self.location,
                self.location.scrub(str(error)),
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
            self.location,
            self.location.scrub(str(error)),
        )

    def _log_failure(self, error: Exception, delay: float) -> None:
        if self._error_log.due():
            logger.warning(
                "usage ledger: cannot write to %s (failed attempts so far: %d), retrying in "
                "%.0fs with %d rows waiting: %s",
                self.location,
                self.failed_writes,
                delay,
                self.pending,
                self.location.scrub(str(error)),
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
    location = parse_target(target)
    if location.dialect == "sqlite":
        try:
            create_sqlite(Path(location.location))
        except (OSError, sqlite3.Error) as error:
            raise ValueError(f"usage ledger {location}: {error}") from None
    return Ledger(
        location, queue_limit=queue_limit, batch_rows=batch_rows, flush_seconds=flush_seconds
    )

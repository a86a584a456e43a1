"""The usage ledger's rows and their tables, in SQLite or PostgreSQL: the schema, connecting,
writing a batch, reading a query. Knows nothing of threads or queues (see ledger.py)."""

import math
import operator
import os
import socket
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .ledger_location import LedgerLocation

CONNECT_TIMEOUT_SECONDS = 5
SQLITE_BUSY_SECONDS = 10.0  # another gateway's transaction on the same file
SCHEMA_LOCK = 0x676F6D6F  # pg_advisory_xact_lock key: gateways starting together create tables once


# Not frozen: a frozen dataclass sets each field through object.__setattr__, 2.9 µs a row
# against 0.4 µs, on the request path (one row a call). Nothing changes a row once made.
@dataclass(slots=True)
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
USAGE_NAMES = [column.name for column in fields(UsageRow)]
RESOURCE_NAMES = [column.name for column in fields(ResourceRow)]
USAGE_COLUMNS = ", ".join(f'"{name}"' for name in USAGE_NAMES)
RESOURCE_COLUMNS = ", ".join(f'"{name}"' for name in RESOURCE_NAMES)
# A row's values in column order: 0.3 µs a row where dataclasses.astuple takes 3.9 µs (it walks
# fields() and copies each value deeply).
usage_values = operator.attrgetter(*USAGE_NAMES)
resource_values = operator.attrgetter(*RESOURCE_NAMES)
Owned = tuple[str, str, str, str]  # a stored id, its provider, its kind, its key's name


def insert_usage_sql(mark: str) -> str:
    marks = ", ".join([mark] * len(USAGE_NAMES))
    return f"INSERT INTO gomodel_usage ({USAGE_COLUMNS}) VALUES ({marks})"


def upsert_resource_sql(mark: str) -> str:
    marks = ", ".join([mark] * len(RESOURCE_NAMES))
    return (
        f"INSERT INTO gomodel_resources ({RESOURCE_COLUMNS}) VALUES ({marks}) "
        "ON CONFLICT (id) DO UPDATE SET provider = excluded.provider, kind = excluded.kind, "
        '"key" = excluded."key", created = excluded.created'
    )


def gateway_id() -> str:
    """This gateway process, for UsageRow.gateway: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LedgerError(Exception):
    """The ledger could not be read; the message names the ledger without its password."""


def connect(where: LedgerLocation, timeout: float | None = None) -> Any:
    """A DB-API connection to an existing ledger (a SQLite file is never created here); with
    `timeout`, connecting and each statement take at most about that long."""
    if where.dialect == "sqlite":
        uri = Path(where.location).as_uri() + "?mode=rw"
        return sqlite3.connect(uri, uri=True, timeout=timeout or SQLITE_BUSY_SECONDS)
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(where.location)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    params.setdefault("application_name", "gomodel")
    if timeout is not None:
        params["connect_timeout"] = min(int(params["connect_timeout"]), math.ceil(timeout))
        statement = f"-c statement_timeout={int(timeout * 1000)}"
        params["options"] = f"{params.get('options', '')} {statement}".strip()
    return psycopg.connect(**params)


def prepare(connection: Any, where: LedgerLocation) -> None:
    """WAL for SQLite (the report reads while gateways write); the tables, if missing."""
    with closing(connection.cursor()) as cursor:
        if where.dialect == "sqlite":
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable across crashes in WAL mode
        else:
            # CREATE TABLE IF NOT EXISTS races when two gateways start together.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in SCHEMA:
            cursor.execute(statement)
    connection.commit()


def write_batch(
    connection: Any,
    where: LedgerLocation,
    usage: Sequence[UsageRow],
    resources: Sequence[ResourceRow],
) -> None:
    """Both kinds of row in one transaction."""
    with closing(connection.cursor()) as cursor:
        if usage:
            cursor.executemany(insert_usage_sql(where.mark), map(usage_values, usage))
        if resources:
            cursor.executemany(upsert_resource_sql(where.mark), map(resource_values, resources))
    connection.commit()


def read_query(where: LedgerLocation, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of one query; LedgerError when the ledger is missing or unreadable."""
    if where.dialect == "sqlite" and not Path(where.location).is_file():
        raise LedgerError(
            f"no usage ledger at {where} (a gateway started with "
            f"--set gomodel_usage_db={where} creates it)"
        )
    try:
        with closing(connect(where)) as connection, closing(connection.cursor()) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    except database_errors(where) as error:
        raise LedgerError(f"{where}: {where.scrub(str(error))}") from None


def database_errors(where: LedgerLocation) -> tuple[type[Exception], ...]:
    if where.dialect == "sqlite":
        return (sqlite3.Error,)
    import psycopg

    return (psycopg.Error,)


def transient_errors(where: LedgerLocation) -> tuple[type[Exception], ...]:
    """Errors worth retrying a batch for: the database is down, locked or out of space. Others
    (a row the database refuses) would fail forever and block every row behind them."""
    if where.dialect == "sqlite":
        return (sqlite3.OperationalError,)
    import psycopg

    return (psycopg.OperationalError,)


def open_connection(where: LedgerLocation) -> Any:
    """A connection to the ledger, its tables ready."""
    connection = connect(where)
    try:
        prepare(connection, where)
    except BaseException:
        connection.close()
        raise
    return connection


def create_sqlite(path: Path) -> None:
    """The file (mode 0600, its directory 0700 if new) with WAL on and the tables."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    open_connection(LedgerLocation("sqlite", str(path))).close()


def find_owner(connection: Any, where: LedgerLocation, id: str) -> Owned | None:
    """One stored id's (id, provider, kind, key), or None; the read's transaction ended."""
    sql = f'SELECT id, provider, kind, "key" FROM gomodel_resources WHERE id = {where.mark}'
    try:
        with closing(connection.cursor()) as cursor:
            cursor.execute(sql, (id,))
            row = cursor.fetchone()
    finally:
        connection.rollback()
    return (row[0], row[1], row[2], row[3]) if row else None

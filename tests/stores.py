"""Real Redis and PostgreSQL servers for tests, from Debian's packages (scripts/install-stores).

Each listens on a free loopback port only, keeps its files in a temporary directory, and ends
with `stop()`. When the server is not installed the helper skips the test, saying so.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from processes import Process, clean_env, free_port, spawn

STARTUP_TIMEOUT = 30.0
INSTALL_HINT = "run scripts/install-stores (as root) for Debian's redis-server and postgresql"
POSTGRES_ROOT = Path("/usr/lib/postgresql")


@dataclass
class RedisServer:
    url: str
    process: Process

    def stop(self) -> None:
        self.process.stop()


@dataclass
class PostgresServer:
    """`down()` and `up()` stop and restart it on the same port and data, as an outage would."""

    url: str  # as the postgres superuser, trusted on loopback: any password is accepted
    port: int
    home: Path  # data directory, Unix socket and log
    bin: Path
    process: Process | None = None

    def up(self) -> None:
        self.process = spawn_as_postgres(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.home / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.home),
                "-c",
                "listen_addresses=127.0.0.1",
                # A test server: speed over crash safety.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            self.home / "postgres.log",
        )
        wait_until(self.ready, self.process, "postgres")

    def ready(self) -> bool:
        probe = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, timeout=10).returncode == 0

    def down(self) -> None:
        if self.process is not None:
            self.process.stop()  # SIGINT: PostgreSQL's fast shutdown

    def stop(self) -> None:
        self.down()
        shutil.rmtree(self.home, ignore_errors=True)


def start_redis(tmp: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"redis-server is not installed; {INSTALL_HINT}")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = spawn(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        tmp / "redis.log",
        clean_env(),
    )
    wait_until(lambda: redis_answers(port), process, "redis-server")
    return RedisServer(f"redis://127.0.0.1:{port}/0", process)


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_postgres(tmp: Path) -> PostgresServer:
    """A fresh cluster. Its files live in a short directory of their own in the system temp
    directory, not in `tmp`: a Unix socket path must stay under 108 bytes, and as root the server
    runs as the `postgres` user, who cannot enter pytest's directories (private to root)."""
    bin = postgres_bin()
    tmp.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="gomodel-pg-"))
    if os.geteuid() == 0:
        account = postgres_account()
        os.chown(home, account.pw_uid, account.pw_gid)
    initdb = [
        str(bin / "initdb"),
        "-D",
        str(home / "data"),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]
    with (tmp / "initdb.log").open("wb") as log:
        done = subprocess.run(
            initdb, stdout=log, stderr=subprocess.STDOUT, timeout=120, **as_postgres()
        )
    if done.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{(tmp / 'initdb.log').read_text()}")
    port = free_port()
    server = PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", port, home, bin)
    try:
        server.up()
    except BaseException:
        server.stop()
        raise
    return server


def postgres_bin() -> Path:
    """Debian's newest server binaries (/usr/lib/postgresql/<version>/bin), whatever is on PATH."""
    found = [path.parent for path in POSTGRES_ROOT.glob("*/bin/postgres")]
    if not found:
        pytest.skip(f"PostgreSQL's server is not installed in {POSTGRES_ROOT}; {INSTALL_HINT}")
    return max(found, key=lambda bin: int(bin.parent.name) if bin.parent.name.isdigit() else 0)


def postgres_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip(f"there is no postgres user to run PostgreSQL as root; {INSTALL_HINT}")


def as_postgres() -> dict[str, Any]:
    """Popen arguments to run as the postgres user when we are root (initdb and postgres refuse
    to run as root); nothing otherwise."""
    if os.geteuid() != 0:
        return {}
    account = postgres_account()
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def spawn_as_postgres(args: list[str], output: Path) -> Process:
    with output.open("ab") as sink:
        popen = subprocess.Popen(
            args,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
            **as_postgres(),
        )
    return Process(popen, output)


def wait_until(ready: Callable[[], bool], process: Process, name: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{name} exited at start; output:\n{process.text()}")
        if ready():
            return
        time.sleep(0.05)
    process.stop()
    raise RuntimeError(f"{name} did not get ready in {STARTUP_TIMEOUT:.0f}s:\n{process.text()}")

"""The store helpers: real servers that answer on loopback and are gone after stop()."""

import socket
from pathlib import Path

import psycopg
from stores import PostgresServer, RedisServer, start_postgres


def test_the_redis_server_answers_ping_on_loopback(redis_server: RedisServer) -> None:
    host, port = redis_server.url.removeprefix("redis://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"PING\r\n")
        assert connection.recv(16) == b"+PONG\r\n"
    assert host == "127.0.0.1"


def test_the_postgres_server_takes_queries(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url) as connection:
        assert connection.execute("SELECT 1 + 1").fetchone() == (2,)


def test_a_stopped_postgres_is_gone_with_its_files(tmp_path: Path) -> None:
    server = start_postgres(tmp_path)
    server.stop()

    assert server.process is not None and server.process.popen.poll() is not None
    assert not server.home.exists()
    assert not server.ready()

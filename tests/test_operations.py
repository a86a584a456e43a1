"""What the port does under operational abuse, end to end with a real mitmdump: the moment it
opens, memory after abandoned calls, the log under strangers' garbage, a stuck ledger."""

import socket
import time
from pathlib import Path

from processes import ADDON, MITMDUMP, Simulator, clean_env, free_port, spawn

MASTER = "gm-ops-key-7c2a9e"
NEVER_ENDING_UPLOAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gomodel.local\r\n"
    b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    b'10\r\n{"model": "xai.g\r\n'
)


def connect_as_soon_as_open(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the port never opened"
            time.sleep(0.001)


def test_first_connection_at_start_up_is_answered(tmp_path: Path, chicago: Simulator) -> None:
    """The port opens before the addon's start-up is done: a stranger's upload that never ends,
    sent at once, is refused like at any other moment (it used to wait for its body's end)."""
    for round_number in range(3):
        workdir = tmp_path / f"round{round_number}"
        workdir.mkdir()
        port = free_port()
        args = [
            str(MITMDUMP),
            "--listen-host",
            "127.0.0.1",
            "-p",
            str(port),
            "--set",
            f"confdir={workdir / 'mitmproxy'}",
            "--set",
            f"ssl_verify_upstream_trusted_ca={chicago.ca}",
            "--set",
            f"gomodel_usage_db={workdir / 'usage.db'}",
            "-s",
            str(ADDON),
        ]
        env = clean_env(**chicago.oracle_env("xai.grok-4", GOMODEL_MASTER_KEY=MASTER))
        process = spawn(args, workdir / "mitmdump.log", env)
        try:
            connection = connect_as_soon_as_open(port, time.monotonic() + 30)
            with connection:
                connection.sendall(NEVER_ENDING_UPLOAD)
                sent = time.monotonic()
                connection.settimeout(5)
                try:
                    answer = connection.recv(65536)
                except TimeoutError:
                    answer = b""
                waited = time.monotonic() - sent
            assert answer.startswith(b"HTTP/1.1 401"), (answer, waited, process.text())
            assert waited < 3
        finally:
            process.stop()

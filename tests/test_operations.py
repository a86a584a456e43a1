"""What the port does under operational abuse, end to end with a real mitmdump: the moment it
opens, memory after abandoned calls, the log under strangers' garbage, a stuck ledger."""

import contextlib
import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from conftest import openai_client
from processes import (
    ADDON,
    MITMDUMP,
    Gateway,
    Process,
    Simulator,
    clean_env,
    free_port,
    spawn,
    start_gateway,
)
from stores import start_postgres
from test_exposure import abandoned_stream_call, answer_complete, closed_by_the_proxy

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


def rss_mib(process: Process) -> float:
    status = Path(f"/proc/{process.popen.pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
    return int(kib) / 1024


def test_memory_is_given_back_after_abandoned_streams(tmp_path: Path, chicago: Simulator) -> None:
    """Four rounds of 100 streamed calls with 2 MiB bodies whose clients leave at once. RSS used
    to stay 180 MiB above its start-up figure (the allocator kept what was freed)."""
    gateway = start_gateway(
        tmp_path, chicago.oracle_env("xai.grok-4", GOMODEL_MASTER_KEY=MASTER), ca=chicago.ca
    )
    chicago.configure(header_delay=0.5)
    try:
        call = abandoned_stream_call(MASTER)
        time.sleep(2)  # start-up done, its garbage collected
        at_start = rss_mib(gateway.process)
        figures = [at_start]
        for round_number in range(1, 5):
            for _ in range(100):
                with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
                    connection.sendall(call)
            deadline = time.monotonic() + 60
            while gateway.log().count("gomodel oracle xai.grok-4") < 100 * round_number:
                assert time.monotonic() < deadline, "the gateway did not log the abandoned calls"
                time.sleep(0.05)
            figures.append(rss_mib(gateway.process))
        time.sleep(10)
        after = rss_mib(gateway.process)
        figures.append(after)
        shown = " -> ".join(f"{figure:.0f}" for figure in figures)
        assert after - at_start < 40, f"RSS {shown} MiB"
        assert openai_client(gateway, MASTER).models.list().data  # still serving
    finally:
        chicago.reset()
        gateway.stop()


def test_strangers_cannot_fill_the_log(tmp_path: Path, chicago: Simulator) -> None:
    """300 connections each sending an unfinished 63 KiB head and closing: mitmproxy echoed
    each head in its log (19.5 MB in 2 s); its lines are now clipped and rate-limited."""
    gateway = start_gateway(
        tmp_path, chicago.oracle_env("xai.grok-4", GOMODEL_MASTER_KEY=MASTER), ca=chicago.ca
    )
    try:
        time.sleep(1)
        before = gateway.process.output.stat().st_size
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gomodel.local\r\nX-Pad: "
        head += b"A" * (63 * 1024 - len(head))
        for _ in range(300):
            with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
                connection.sendall(head)
        time.sleep(2)
        grown = gateway.process.output.stat().st_size - before
        assert grown < 200_000, f"the log grew by {grown} bytes"
        assert openai_client(gateway, MASTER).models.list().data  # still serving
    finally:
        gateway.stop()


def test_a_stranger_pipelining_refused_requests_writes_a_bounded_log(
    tmp_path: Path, chicago: Simulator
) -> None:
    """2,000 requests without a key, pipelined on 4 connections: each was a line of the access
    log and a line of mitmdump's own (about 400 bytes a request: 780 KB); now lines about
    strangers are rate-limited, and a later one says how many were dropped."""
    gateway = start_gateway(
        tmp_path, chicago.oracle_env("xai.grok-4", GOMODEL_MASTER_KEY=MASTER), ca=chicago.ca
    )
    try:
        time.sleep(1)
        before = gateway.process.output.stat().st_size
        request = (
            b"GET /v1/" + b"%ff" * 3000 + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % gateway.port
        )

        def pipeline(_: int) -> int:
            answered = 0
            with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
                connection.sendall(request * 500)
                connection.settimeout(10)
                received = b""
                while answered < 500 and (chunk := connection.recv(1 << 20)):
                    received += chunk
                    answered = received.count(b"HTTP/1.1 401")
            return answered

        with ThreadPoolExecutor(4) as pool:
            answered = sum(pool.map(pipeline, range(4)))
        time.sleep(1.5)  # the next stranger's line says how many were dropped
        with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
            request_on(connection, b"GET /v1/models HTTP/1.1\r\nHost: gomodel.local\r\n\r\n")
        time.sleep(0.5)
        grown = gateway.process.output.stat().st_size - before
        assert answered == 2000  # every one refused, as before
        assert grown < 250_000, f"the log grew by {grown} bytes"
        assert "lines about strangers dropped before this one" in gateway.log()
    finally:
        gateway.stop()


def keyed_config(chicago: Simulator) -> str:
    """Two client keys; Oracle named by a hostname (resolved in the event loop's default thread
    pool), in allowlist mode (no discovery call before the first chat)."""
    base_url = chicago.base_url().replace("127.0.0.1", "localhost")
    return (
        "providers:\n  oracle:\n    type: oracle\n"
        f"    base_url: {base_url}\n    api_key: {chicago.api_key}\n"
        "    models: [xai.grok-4]\n    models_mode: allowlist\n"
        "server:\n  keys:\n    alpha: {key: gm-alpha-ops-1}\n    beta: {key: gm-beta-ops-2}\n"
        "    gamma: {key: gm-gamma-ops-3, requests_per_minute: 2}\n"
    )


def start_keyed(tmp_path: Path, chicago: Simulator, *options: str) -> Gateway:
    """A gateway with keyed_config's keys, and `options`."""
    config = tmp_path / "gomodel.yaml"
    config.write_text(keyed_config(chicago))
    return start_gateway(
        tmp_path / "gw", {}, "--set", f"gomodel_config={config}", *options, ca=chicago.ca
    )


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (PostgreSQL's postmaster and its backends)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {pid}, True
    while grown:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return sorted(tree)


def test_a_stuck_ledger_delays_no_other_key(tmp_path: Path, chicago: Simulator) -> None:
    """PostgreSQL stopped (SIGSTOP: connections hang, nothing fails): 24 calls of key alpha
    naming ids this gateway never saw are looked up in the ledger, each waiting for it; key
    beta's chat, which needs no lookup, used to wait 19.5 s behind them."""
    server = start_postgres(tmp_path / "pg")
    gateway = start_keyed(tmp_path, chicago, "--set", f"gomodel_usage_db={server.url}")
    assert server.process is not None
    stopped: list[int] = []
    try:
        gateway.process.wait_for("usage ledger at")
        alpha, beta = (
            openai_client(gateway, "gm-alpha-ops-1"),
            openai_client(gateway, "gm-beta-ops-2"),
        )
        assert beta.models.list().data  # answered by the gateway: no call to Oracle yet
        stopped = process_tree(server.process.popen.pid)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)

        def look_up(number: int) -> None:
            with contextlib.suppress(openai.APIError):
                alpha.with_options(max_retries=0, timeout=60).responses.retrieve(
                    f"resp_unknown{number:04d}"
                )

        with ThreadPoolExecutor(24) as pool:
            lookups = [pool.submit(look_up, number) for number in range(24)]
            time.sleep(0.5)  # all 24 waiting for the ledger
            started = time.monotonic()
            beta.with_options(max_retries=0).chat.completions.create(
                model="xai.grok-4", messages=[{"role": "user", "content": "hi"}]
            )
            waited = time.monotonic() - started
            for lookup in lookups:
                lookup.result()
        assert waited < 2.0, f"key beta's chat waited {waited:.1f}s"
        assert gateway.log().count("stored id") <= 1  # a warning per failure before, now throttled

        # Lookups come after the key's admission: past its rate limit, a key costs none.
        gamma = openai_client(gateway, "gm-gamma-ops-3").with_options(max_retries=0, timeout=60)
        answers = []
        for number in range(4):
            started = time.monotonic()
            try:
                gamma.responses.retrieve(f"resp_gamma{number:04d}")
            except openai.APIStatusError as refused:
                answers.append((refused.status_code, time.monotonic() - started))
        assert [status for status, _ in answers] == [404, 404, 429, 429]
        assert max(seconds for _, seconds in answers[2:]) < 1.0  # no lookup waited for
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        gateway.stop()
        server.stop()


def request_on(connection: socket.socket, raw: bytes) -> bytes:
    connection.sendall(raw)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer_complete(answer):
        if not (chunk := connection.recv(65536)):
            raise ConnectionResetError("closed by the proxy")
        answer += chunk
    return answer


def test_a_client_keys_local_calls_do_not_hold_a_connection(
    tmp_path: Path, chicago: Simulator
) -> None:
    """One GET /v1/models per connection used to make it the key's to keep for ever; a call
    sent to Oracle still does."""
    gateway = start_keyed(
        tmp_path, chicago, "--set", "gomodel_usage_db=off", "--set", "gomodel_idle_timeout=1"
    )
    authorization = b"Host: gomodel.local\r\nAuthorization: Bearer gm-alpha-ops-1\r\n"
    chat = json.dumps({"model": "xai.grok-4", "messages": [{"role": "user", "content": "hi"}]})
    try:
        with (
            socket.create_connection(("127.0.0.1", gateway.port)) as listing,
            socket.create_connection(("127.0.0.1", gateway.port)) as chatting,
        ):
            models = request_on(listing, b"GET /v1/models HTTP/1.1\r\n" + authorization + b"\r\n")
            assert models.startswith(b"HTTP/1.1 200")
            answer = request_on(
                chatting,
                b"POST /v1/chat/completions HTTP/1.1\r\n"
                + authorization
                + f"Content-Type: application/json\r\nContent-Length: {len(chat)}\r\n\r\n".encode()
                + chat.encode(),
            )
            assert answer.startswith(b"HTTP/1.1 200")
            assert closed_by_the_proxy(listing, 5)
            assert not closed_by_the_proxy(chatting, 2.5)  # the key holder's to keep
    finally:
        gateway.stop()

"""Closed to strangers: what the proxy port gives someone on the same network, end to end with a
real mitmdump. Every load here is bounded and stays on loopback."""

import contextlib
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from capture import CaptureServer
from conftest import openai_client
from processes import Gateway, Simulator, free_port, start_gateway

MASTER = "gm-team-key-5b8e1d"
HUNDRED_MIB = 100 * 1024 * 1024
UPLOAD = 300_000_000
CUT_OFF = 64 * 1024 * 1024  # a refused upload must be stopped long before this


def rss_kib(gateway: Gateway) -> int:
    status = Path(f"/proc/{gateway.process.popen.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def open_fds(gateway: Gateway) -> int:
    return len(list(Path(f"/proc/{gateway.process.popen.pid}/fd").iterdir()))


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the proxy closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(raw)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
                if answer_complete(answer):
                    break
        except TimeoutError:
            pass
    return answer


def answer_complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


@dataclass
class Upload:
    accepted: int  # bytes the proxy took before it stopped the upload
    stopped_by: str
    answer: bytes


def upload(port: int, head: bytes, total: int, chunked: bool) -> Upload:
    """Send a large body as fast as the proxy takes it, reading the answer on the side."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=20)
    answer = bytearray()

    def read() -> None:
        try:
            while chunk := connection.recv(65536):
                answer.extend(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    block = b"\0" * (1024 * 1024)
    frame = (b"%x\r\n" % len(block)) + block + b"\r\n" if chunked else block
    accepted, stopped_by = 0, "sent everything"
    try:
        connection.sendall(head)
        while accepted < total:
            connection.sendall(frame)
            accepted += len(block)
    except OSError as e:
        stopped_by = type(e).__name__
    reader.join(timeout=10)
    connection.close()
    return Upload(accepted, stopped_by, bytes(answer))


def start_guarded(tmp_path: Path, chicago: Simulator, *options: str) -> Gateway:
    """A shared gateway: the master key set, so pass-through is closed."""
    env = chicago.oracle_env("xai.grok-4", GOMODEL_MASTER_KEY=MASTER)
    return start_gateway(tmp_path, env, *options, ca=chicago.ca)


@pytest.fixture
def team_gateway(tmp_path: Path, chicago: Simulator) -> Iterator[Gateway]:
    """A shared gateway, its flows written to a file."""
    gateway = start_guarded(tmp_path, chicago, "-w", str(tmp_path / "flows.mitm"))
    yield gateway
    gateway.stop()


# -- refusals before reading ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "chunked", "status", "code"),
    [
        pytest.param(
            b"Host: gomodel.local\r\nTransfer-Encoding: chunked\r\n",
            True,
            401,
            "invalid_api_key",
            id="no-key-chunked",
        ),
        pytest.param(
            f"Host: gomodel.local\r\nAuthorization: Bearer {MASTER}\r\n"
            f"Content-Length: {UPLOAD}\r\n".encode(),
            False,
            413,
            "request_too_large",
            id="declared-too-large",
        ),
        pytest.param(  # a declared size past the limit: mitmproxy refuses it first
            f"Host: gomodel.local\r\nContent-Length: {UPLOAD}\r\n".encode(),
            False,
            413,
            "request_too_large",
            id="no-key-declared",
        ),
        pytest.param(
            b"Host: example.invalid\r\nTransfer-Encoding: chunked\r\n",
            True,
            403,
            "passthrough_disabled",
            id="foreign-host",
        ),
    ],
)
def test_a_refused_upload_is_answered_before_its_body_is_read(
    team_gateway: Gateway, chicago: Simulator, tmp_path: Path, headers, chunked, status, code
) -> None:
    before = rss_kib(team_gateway)
    head = b"POST /v1/chat/completions HTTP/1.1\r\n" + headers + b"\r\n"
    sent = upload(team_gateway.port, head, UPLOAD, chunked)
    after = rss_kib(team_gateway)

    got_status, document = status_and_json(sent.answer)
    assert (got_status, document["error"]["code"]) == (status, code)
    assert sent.accepted < CUT_OFF, f"the proxy read {sent.accepted} bytes ({sent.stopped_by})"
    assert sent.stopped_by in ("ConnectionResetError", "BrokenPipeError")
    assert after - before < 20 * 1024, f"RSS grew from {before} to {after} KiB"
    time.sleep(0.5)  # the flow file is written when the flow ends
    assert (tmp_path / "flows.mitm").stat().st_size < 64 * 1024
    assert chicago.posts() == []


def test_refused_uploads_keep_memory_and_descriptors_flat(team_gateway: Gateway) -> None:
    """Ten 300 MB uploads without a key, one after another."""
    head = (
        b"POST /v1/responses HTTP/1.1\r\nHost: gomodel.local\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    upload(team_gateway.port, head, UPLOAD, chunked=True)  # warm up
    fds, rss = open_fds(team_gateway), rss_kib(team_gateway)
    accepted = [upload(team_gateway.port, head, UPLOAD, chunked=True).accepted for _ in range(10)]
    time.sleep(0.5)

    assert max(accepted) < CUT_OFF
    assert open_fds(team_gateway) <= fds + 2
    assert rss_kib(team_gateway) - rss < 20 * 1024


# -- connections that carry no request ------------------------------------------------------------


@pytest.fixture
def impatient_gateway(tmp_path: Path, chicago: Simulator) -> Iterator[Gateway]:
    """A shared gateway that lets a connection idle for one second."""
    gateway = start_guarded(tmp_path, chicago, "--set", "gomodel_idle_timeout=1")
    yield gateway
    gateway.stop()


def health_check(connection: socket.socket, key: str | None = None) -> bytes:
    authorization = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: gomodel.local\r\n" + authorization + b"\r\n")
    answer = b""
    while not answer_complete(answer):
        if not (chunk := connection.recv(65536)):
            raise ConnectionResetError("closed by the proxy")
        answer += chunk
    return answer


def closed_by_the_proxy(connection: socket.socket, within: float) -> bool:
    connection.settimeout(within)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_connections_that_carry_no_call_are_closed(impatient_gateway: Gateway) -> None:
    """What a stranger holds open: unfinished heads, nothing at all, an idle keep-alive, a
    /health whose body never ends."""
    port, fds = impatient_gateway.port, open_fds(impatient_gateway)
    unfinished = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-a: " + b"a" * 60_000
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(60)]
    for connection in held[:50]:
        connection.sendall(unfinished)
    held[50].sendall(b"GET /health HTTP/1.1\r\nHost: gomodel.local\r\nContent-Length: 99\r\n\r\n")
    assert health_check(held[-1]).startswith(b"HTTP/1.1 200")  # then idle, kept alive

    started = time.monotonic()
    closed = [closed_by_the_proxy(connection, within=5) for connection in held]
    waited = time.monotonic() - started
    for connection in held:
        connection.close()

    assert all(closed) and waited < 5
    time.sleep(0.5)
    assert open_fds(impatient_gateway) <= fds + 2
    request = urllib.request.Request(
        f"{impatient_gateway.url}/metrics", headers={"Authorization": f"Bearer {MASTER}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert "gomodel_idle_connections_closed_total 60.0" in answer.read().decode()


def test_a_strangers_requests_do_not_keep_a_connection_open(impatient_gateway: Gateway) -> None:
    """Refused and /health requests, one every 0.3 s: the clock runs from the connection's
    start."""
    with socket.create_connection(("127.0.0.1", impatient_gateway.port)) as connection:
        started, answers = time.monotonic(), 0
        with contextlib.suppress(OSError):
            while time.monotonic() - started < 5:
                answers += health_check(connection).startswith(b"HTTP/1.1 200")
                time.sleep(0.3)
        lived = time.monotonic() - started
    assert 0.9 < lived < 2.5 and 2 <= answers <= 5


def test_calls_in_progress_and_key_holders_connections_are_never_cut(
    impatient_gateway: Gateway, chicago: Simulator
) -> None:
    chicago.configure(chunk_delay=0.25)  # a stream of about three seconds
    client = openai_client(impatient_gateway, MASTER)
    stream = client.chat.completions.create(
        model="xai.grok-4", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert len(list(stream)) > 10
    with socket.create_connection(("127.0.0.1", impatient_gateway.port)) as connection:
        assert health_check(connection, MASTER).startswith(b"HTTP/1.1 200")
        assert not closed_by_the_proxy(connection, within=2.5)  # a key holder's to keep
        assert health_check(connection, MASTER).startswith(b"HTTP/1.1 200")


def test_a_private_gateway_leaves_idle_connections_open(tmp_path: Path, chicago: Simulator) -> None:
    """Pass-through open (loopback, no key): other hosts' tunnels and WebSockets may idle."""
    gateway = start_gateway(
        tmp_path, chicago.oracle_env("xai.grok-4"), "--set", "gomodel_idle_timeout=1"
    )
    try:
        with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
            assert not closed_by_the_proxy(connection, within=2.5)
    finally:
        gateway.stop()


# -- closed to other hosts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_head",
    [
        pytest.param("GET http://{target}/anything HTTP/1.1\r\nHost: {target}\r\n", id="absolute"),
        pytest.param("GET /anything HTTP/1.1\r\nHost: {target}\r\n", id="foreign-host-header"),
        pytest.param("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n", id="connect"),
        pytest.param(
            "GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer "
            + MASTER
            + "\r\n",
            id="absolute-with-master-key",
        ),
    ],
)
def test_a_closed_proxy_forwards_nothing_to_other_hosts(
    team_gateway: Gateway, request_head: str
) -> None:
    with CaptureServer() as target:
        raw = request_head.format(target=target.address).encode() + b"\r\n"
        answer = exchange(team_gateway.port, raw)
        seen = target.seen()

    status, document = status_and_json(answer)
    assert (status, document["error"]["code"]) == (403, "passthrough_disabled")
    assert seen == []
    assert "pass-through closed" in team_gateway.log()


@pytest.mark.parametrize(
    ("env", "options", "forwarded", "reason"),
    [
        pytest.param({}, (), True, "loopback only and no gateway keys", id="auto-loopback"),
        pytest.param(
            {"GOMODEL_MASTER_KEY": MASTER},
            (),
            False,
            "gateway keys are configured",
            id="auto-master-key",
        ),
        pytest.param(
            {},
            ("--listen-host", "0.0.0.0"),
            False,
            "mitmproxy listens on 0.0.0.0",
            id="auto-all-interfaces",
        ),
        pytest.param(
            {}, ("--set", "gomodel_passthrough=false"), False, "passthrough=false", id="false"
        ),
        pytest.param(
            {"GOMODEL_MASTER_KEY": MASTER},
            ("--set", "gomodel_passthrough=true"),
            True,
            "passthrough=true",
            id="true-with-master-key",
        ),
    ],
)
def test_passthrough_modes(
    tmp_path: Path, chicago: Simulator, env, options, forwarded, reason
) -> None:
    gateway = start_gateway(tmp_path, chicago.oracle_env("xai.grok-4", **env), *options)
    try:
        with CaptureServer() as target:
            raw = f"GET http://{target.address}/x HTTP/1.1\r\nHost: {target.address}\r\n\r\n"
            answer = exchange(gateway.port, raw.encode())
            seen = target.seen()
        models = exchange(
            gateway.port,
            f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
            f"Authorization: Bearer {MASTER}\r\n\r\n".encode(),
        )
    finally:
        gateway.stop()

    assert reason in gateway.log()
    assert models.startswith(b"HTTP/1.1 200")  # the gateway itself serves in every mode
    if forwarded:
        assert answer.endswith(b"captured")
        (request,) = seen
        assert b"\r\nvia: 1.1 gomodel-" in request.lower()
    else:
        assert status_and_json(answer)[0] == 403
        assert seen == []


# -- no loops -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling", ["127.1", "0x7f000001", "2130706433", "0177.0.0.1", "0.0.0.0", "127.0.0.2"]
)
def test_a_host_naming_the_proxy_in_any_spelling_is_the_gateway(
    team_gateway: Gateway, spelling: str
) -> None:
    fds = open_fds(team_gateway)
    raw = (
        f"GET /v1/models HTTP/1.1\r\nHost: {spelling}:{team_gateway.port}\r\n"
        f"Authorization: Bearer {MASTER}\r\n\r\n"
    )
    status, document = status_and_json(exchange(team_gateway.port, raw.encode()))
    time.sleep(0.3)

    assert status == 200 and document["object"] == "list"
    assert open_fds(team_gateway) <= fds + 2


def this_machines_name() -> str:
    """A name of this machine that resolves to loopback but is not localhost (e.g. from
    /etc/hosts); the Via mark is what catches a loop through it."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:
        addresses = set()
    if not addresses or not all(a.startswith("127.") for a in addresses):
        pytest.skip(f"this machine's name {name!r} does not resolve to loopback here")
    return name


@pytest.mark.parametrize("kind", ["another-spelling", "machine-name"])
def test_a_request_that_comes_back_to_the_proxy_is_a_detected_loop(
    tmp_path: Path, chicago: Simulator, kind: str
) -> None:
    """An open proxy on every interface with a second listener: a request for it would reach the
    proxy itself under a name mitmproxy's own self-connect check does not know. 127.0.0.2 is
    recognised from the headers, a name of this machine once resolved; both before any
    connection. (The Via mark catches what neither can tell, e.g. a streamed request body.)"""
    host = "127.0.0.2" if kind == "another-spelling" else this_machines_name()
    second = free_port()
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4"),
        "--listen-host",
        "0.0.0.0",
        "--set",
        "gomodel_passthrough=true",
        "--mode",
        "regular",
        "--mode",
        f"regular@{second}",
    )
    try:
        fds = open_fds(gateway)
        raw = f"GET /anything HTTP/1.1\r\nHost: {host}:{second}\r\n\r\n"
        answers = [exchange(gateway.port, raw.encode()) for _ in range(5)]
        time.sleep(0.5)
        fds_after = open_fds(gateway)
    finally:
        gateway.stop()

    for answer in answers:
        status, document = status_and_json(answer)
        assert (status, document["error"]["code"]) == (508, "loop_detected")
    assert fds_after <= fds + 4
    assert gateway.log().count("loop_detected") == 5  # one hop at most, then refused


# -- abandoned streams ----------------------------------------------------------------------------


def abandoned_stream_call(key: str) -> bytes:
    """A streamed call with a 2 MiB body, as raw HTTP/1.1, for a client that leaves once sent."""
    body = json.dumps(
        {
            "model": "xai.grok-4",
            "stream": True,
            "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}],
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gomodel.local\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def test_abandoned_streams_leave_nothing_behind(team_gateway: Gateway, chicago: Simulator) -> None:
    """100 streamed calls with 2 MiB bodies whose clients leave as soon as they have sent, one
    after another. Memory settles after the first few (the allocator keeps what it reuses);
    before the fix each abandoned call kept its body, about 2 MiB more per call."""
    chicago.configure(header_delay=0.5)
    call = abandoned_stream_call(MASTER)
    rss = {}
    for number in range(1, 101):
        with socket.create_connection(("127.0.0.1", team_gateway.port)) as connection:
            connection.sendall(call)
        deadline = time.monotonic() + 10
        while team_gateway.log().count("gomodel oracle xai.grok-4") < number:
            assert time.monotonic() < deadline, "the gateway did not log the abandoned call"
            time.sleep(0.02)
        rss[number] = rss_kib(team_gateway)

    second_half = rss[100] - rss[50]
    assert second_half < 40 * 1024, f"RSS grew by {second_half} KiB over the last 50 calls"
    assert team_gateway.log().count("ended early") >= 100
    assert openai_client(team_gateway, MASTER).models.list().data  # still serving


def test_large_calls_leave_no_memory_behind(team_gateway: Gateway) -> None:
    """Each 8 MiB call used to leave about twice its body in reference cycles until Python's
    rare full collection (mitmproxy's field type check, its connections): +17 MiB a call, 168
    MiB over ten."""
    client = openai_client(team_gateway, MASTER)

    def call() -> None:
        answer = client.chat.completions.create(
            model="xai.grok-4", messages=[{"role": "user", "content": "x" * (8 * 1024 * 1024)}]
        )
        assert answer.choices[0].message.content

    for _ in range(3):  # the allocator's first large blocks
        call()
    time.sleep(1.5)  # a collection follows within a second
    before = rss_kib(team_gateway)
    for _ in range(20):
        call()
    time.sleep(1.5)
    grown = rss_kib(team_gateway) - before
    assert grown < 80 * 1024, f"RSS grew by {grown} KiB over twenty 8 MiB calls"


# -- browsers -------------------------------------------------------------------------------------


@pytest.fixture
def browser_gateway(tmp_path: Path, chicago: Simulator) -> Iterator[Gateway]:
    """No master key, on loopback: the setup a web page could reach."""
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4"),
        "--set",
        "gomodel_allowed_origins=http://localhost:3000",
        ca=chicago.ca,
    )
    yield gateway
    gateway.stop()


def chat_request(port: int, **headers: str) -> bytes:
    body = json.dumps({"model": "xai.grok-4", "messages": [{"role": "user", "content": "hi"}]})
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    raw = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    return exchange(port, raw.encode())


def test_a_cross_site_post_is_refused_and_sends_nothing(
    browser_gateway: Gateway, chicago: Simulator
) -> None:
    answer = chat_request(
        browser_gateway.port, Origin="https://evil.example", **{"Content-Type": "text/plain"}
    )

    status, document = status_and_json(answer)
    assert (status, document["error"]["code"]) == (403, "origin_not_allowed")
    assert chicago.posts() == []


def test_an_allowed_origin_gets_cors_answers(browser_gateway: Gateway, chicago: Simulator) -> None:
    origin = "http://localhost:3000"
    port = browser_gateway.port
    preflight = exchange(
        port,
        f"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n"
        "Access-Control-Request-Method: POST\r\n"
        "Access-Control-Request-Headers: authorization, content-type\r\n\r\n".encode(),
    ).lower()
    refused_preflight = exchange(
        port,
        f"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n\r\n".encode(),
    )
    answer = chat_request(port, Origin=origin, **{"Content-Type": "application/json"})

    assert preflight.startswith(b"http/1.1 204")
    assert f"access-control-allow-origin: {origin}".encode() in preflight
    assert b"access-control-allow-headers: authorization, content-type" in preflight
    assert status_and_json(refused_preflight)[0] == 403
    assert answer.startswith(b"HTTP/1.1 200")
    assert f"access-control-allow-origin: {origin}".encode() in answer.lower()
    assert len(chicago.posts()) == 1


# -- hostile credentials --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe",
        b"Bearer " + MASTER.encode() + b"\xff",
        b"\xc3(",
        b"Bearer " + b"k" * 60000,
    ],
)
def test_any_bytes_in_authorization_are_a_plain_401(team_gateway: Gateway, value: bytes) -> None:
    raw = b"GET /v1/models HTTP/1.1\r\nHost: gomodel.local\r\nAuthorization: " + value + b"\r\n\r\n"
    status, document = status_and_json(exchange(team_gateway.port, raw))

    assert (status, document["error"]["code"]) == (401, "invalid_api_key")
    assert "Traceback" not in team_gateway.log()


def test_a_strangers_path_cannot_drive_the_operators_terminal(team_gateway: Gateway) -> None:
    raw = b"GET /v1/x\x1b[2K\x1b]0;pwned\x07 HTTP/1.1\r\nHost: gomodel.local\r\n\r\n"
    status, _ = status_and_json(exchange(team_gateway.port, raw))

    assert status == 401
    [line] = [line for line in team_gateway.log().splitlines() if "invalid_api_key GET" in line]
    assert "GET /v1/x\\u001b[2K\\u001b]0;pwned\\u0007 " in line
    assert "\x1b" not in team_gateway.log() and "\x07" not in team_gateway.log()


# -- reloads never open ---------------------------------------------------------------------------


def test_a_reload_never_opens_a_guarded_gateway(tmp_path: Path, chicago: Simulator) -> None:
    config = tmp_path / "gomodel.yaml"
    guarded = (
        "server:\n  master_keys: [gm-file-key-91c3]\n"
        "providers:\n  oracle:\n    base_url: ${URL}\n    api_key: ${KEY}\n"
        "    models: [xai.grok-4]\n    models_mode: allowlist\n"
    )
    keyless = guarded.replace("server:\n  master_keys: [gm-file-key-91c3]\n", "")
    config.write_text(guarded)
    gateway = start_gateway(
        tmp_path / "gw",
        {"URL": chicago.base_url(), "KEY": chicago.api_key},
        "--set",
        f"gomodel_config={config}",
        ca=chicago.ca,
    )
    no_key = f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode()
    edits = {
        "truncated": lambda: config.write_text(""),
        "comment only": lambda: config.write_text("# being edited\n"),
        "deleted": config.unlink,
        "keys removed": lambda: config.write_text(keyless),
    }
    statuses = {}
    try:
        for name, edit in edits.items():
            errors_before = gateway.log().count("configuration not reloaded")
            edit()
            deadline = time.monotonic() + 10
            while gateway.log().count("configuration not reloaded") == errors_before:
                assert time.monotonic() < deadline, f"{name}: no error line"
                time.sleep(0.1)
            statuses[name] = int(exchange(gateway.port, no_key).split(b" ")[1])
            config.write_text(guarded)
            time.sleep(1.5)  # the restored file is read again (same keys: accepted)
    finally:
        gateway.stop()

    assert statuses == dict.fromkeys(edits, 401)
    assert "gm-file-key-91c3" not in gateway.log()


# -- headers by allowlist -------------------------------------------------------------------------

CLIENT_HEADERS_NOT_FOR_ORACLE = {
    "Cookie": "session=client-cookie",
    "X-Forwarded-For": "10.9.8.7",
    "Forwarded": "for=10.9.8.7",
    "OpenAI-Organization": "org-client",
    "X-Goog-Api-Key": "goog-client-key",
    "Ocp-Apim-Subscription-Key": "azure-client-key",
    "X-Auth-Token": "client-token",
}
ORACLE_HEADERS_NOT_FOR_CLIENTS = [
    ["Set-Cookie", "oracle-session=1"],
    ["WWW-Authenticate", 'Bearer realm="oci"'],
    ["Server", "oracle-internal-frontend"],
    ["x-oracle-internal-route", "node-7"],
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_headers_cross_by_allowlist_both_ways(
    team_gateway: Gateway, chicago: Simulator, stream: bool
) -> None:
    chicago.configure(
        headers=[*ORACLE_HEADERS_NOT_FOR_CLIENTS, ["x-ratelimit-remaining-requests", "99"]]
    )
    body = json.dumps(
        {"model": "xai.grok-4", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    )
    extra = "".join(f"{k}: {v}\r\n" for k, v in CLIENT_HEADERS_NOT_FOR_ORACLE.items())
    raw = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gomodel.local\r\n"
        f"Authorization: Bearer {MASTER}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    )
    with socket.create_connection(("127.0.0.1", team_gateway.port), timeout=10) as connection:
        connection.sendall(raw.encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0].decode().lower()
    (received,) = chicago.posts()

    assert head.startswith("http/1.1 200")
    assert not {k.lower() for k in CLIENT_HEADERS_NOT_FOR_ORACLE} & set(received["headers"])
    for name, _ in ORACLE_HEADERS_NOT_FOR_CLIENTS:
        assert f"\r\n{name.lower()}:" not in head
    assert "\r\nserver:" not in head and "\r\ndate:" not in head  # nor the relay's own
    assert "\r\nopc-request-id:" in head
    assert "\r\nx-ratelimit-remaining-requests: 99" in head


def test_a_header_that_is_not_latin_1_from_oracle_is_passed_on(
    team_gateway: Gateway, chicago: Simulator
) -> None:
    chicago.configure(headers=[["x-request-id", "zürich-東京"]])

    reply = openai_client(team_gateway, MASTER).chat.completions.with_raw_response.create(
        model="xai.grok-4", messages=[{"role": "user", "content": "hi"}]
    )

    assert reply.http_response.status_code == 200  # not a 502
    raw = {k.lower(): v for k, v in reply.http_response.headers.raw}
    assert raw[b"x-request-id"] == "zürich-東京".encode()  # the bytes Oracle sent
    assert "Traceback" not in team_gateway.log()


# -- raw TCP, request heads, redaction of refused flows ------------------------------------------


def connect_then_raw(port: int, target: str, first: bytes, rest: bytes) -> bytes:
    """CONNECT, then bytes too few for mitmproxy to see HTTP in them (so it relays raw TCP)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        established = connection.recv(65536)
        answer = b""
        try:
            connection.sendall(first)
            time.sleep(0.1)
            connection.sendall(rest)
            while chunk := connection.recv(65536):
                answer += chunk
        except OSError:
            pass
    return established + answer


def test_raw_tcp_in_a_gateway_tunnel_reaches_nothing(tmp_path: Path, chicago: Simulator) -> None:
    """A gateway hostname that resolves (localhost here, api.openai.com or the machine's name
    elsewhere) must not become a tunnel to any port behind it."""
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4", GOMODEL_MASTER_KEY=MASTER),
        "--set",
        "gomodel_hosts=gomodel.local,localhost",
    )
    try:
        with CaptureServer() as target:
            answer = connect_then_raw(
                gateway.port,
                f"localhost:{target.port}",
                b"GE",
                b"T /secret HTTP/1.1\r\nHost: internal\r\n\r\n",
            )
            seen = target.seen()
    finally:
        gateway.stop()

    assert seen == []
    assert b"captured" not in answer


@pytest.mark.parametrize("kind", ["zero", "machine-name"])
def test_nested_tunnels_to_the_proxy_itself_are_refused(
    tmp_path: Path, chicago: Simulator, kind: str
) -> None:
    """CONNECT 0:port (this proxy, in a spelling mitmproxy's own guard does not know) or the
    machine's own name, then raw TCP that would be relayed back into the proxy: a CONNECT
    inside a CONNECT, and so on."""
    host = "0" if kind == "zero" else this_machines_name()
    gateway = start_gateway(tmp_path, chicago.oracle_env("xai.grok-4"))  # open: auto, loopback
    try:
        fds = open_fds(gateway)
        answers = [
            connect_then_raw(
                gateway.port,
                f"{host}:{gateway.port}",
                b"CO",
                f"NNECT {host}:{gateway.port} HTTP/1.1\r\n\r\n".encode(),
            )
            for _ in range(20)
        ]
        time.sleep(0.5)
        fds_after = open_fds(gateway)
    finally:
        gateway.stop()

    for answer in answers:
        assert answer.count(b"200 Connection established") <= 1
    assert fds_after <= fds + 2
    assert "the destination is this proxy itself" in gateway.log()


def test_an_endless_request_head_is_cut_off(team_gateway: Gateway) -> None:
    rss = rss_kib(team_gateway)
    with socket.create_connection(("127.0.0.1", team_gateway.port), timeout=10) as connection:
        connection.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gomodel.local\r\n")
        sent, answer = 0, b""
        try:
            line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
            while sent < 30_000_000:
                connection.sendall(line * 64)
                sent += len(line) * 64
        except OSError:
            pass
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except OSError:
            pass
    time.sleep(0.3)

    assert sent < 10_000_000
    status, document = status_and_json(answer)
    assert (status, document["error"]["code"]) == (431, "request_header_too_large")
    assert rss_kib(team_gateway) - rss < 20 * 1024
    assert len(team_gateway.log()) < 1_000_000


def test_refused_flows_keep_no_credentials(team_gateway: Gateway, tmp_path: Path) -> None:
    with CaptureServer() as target:
        for head in (
            f"GET http://{target.address}/x HTTP/1.1\r\nHost: {target.address}\r\n",
            f"POST http://{target.address}/x HTTP/1.1\r\nHost: {target.address}\r\n"
            "Content-Length: 5\r\n",
        ):
            raw = (
                f"{head}Authorization: Bearer {MASTER}\r\n"
                f"Proxy-Authorization: Bearer {MASTER}\r\n\r\nhello"
            )
            assert status_and_json(exchange(team_gateway.port, raw.encode()))[0] == 403
    time.sleep(0.5)

    assert MASTER.encode() not in (tmp_path / "flows.mitm").read_bytes()
    assert MASTER not in team_gateway.log()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("header", ["User-Agent", "Content-Type", "opc-request-id"])
def test_a_forwarded_header_with_control_characters_is_a_400(
    team_gateway: Gateway, chicago: Simulator, header: str, stream: bool
) -> None:
    body = json.dumps(
        {"model": "xai.grok-4", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    )
    raw = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gomodel.local\r\n"
        f"Authorization: Bearer {MASTER}\r\n{header}: a\x01b\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    status, document = status_and_json(exchange(team_gateway.port, raw.encode()))

    assert (status, document["error"]["code"]) == (400, "invalid_header")
    assert chicago.posts() == []
    assert "Traceback" not in team_gateway.log()


def test_an_oracle_header_with_control_characters_is_dropped(
    team_gateway: Gateway, chicago: Simulator
) -> None:
    chicago.configure(headers=[["x-request-id", "a\x01b"]])
    api = openai_client(team_gateway, MASTER)

    plain = api.chat.completions.with_raw_response.create(
        model="xai.grok-4", messages=[{"role": "user", "content": "hi"}]
    )
    chunks = list(
        api.chat.completions.create(
            model="xai.grok-4", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )

    assert plain.http_response.status_code == 200
    assert "x-request-id" not in plain.http_response.headers
    assert chunks and chunks[-1].choices[0].finish_reason == "stop"
    assert "Traceback" not in team_gateway.log()


# -- what refused requests leave behind -----------------------------------------------------------


def test_refused_requests_with_bodies_leave_no_flow_behind(team_gateway: Gateway) -> None:
    """Each early refusal once kept its flow alive (the refusal's traceback held it)."""
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gomodel.local\r\nContent-Length: 2\r\n\r\n{}"
    )
    for _ in range(200):
        exchange(team_gateway.port, raw)
    rss = rss_kib(team_gateway)
    for _ in range(2000):
        exchange(team_gateway.port, raw)
    time.sleep(0.5)

    assert rss_kib(team_gateway) - rss < 5 * 1024  # was about 30 MiB


def h2_streams_without_a_key(gateway: Gateway, count: int) -> list[str]:
    """`count` HTTP/2 streams at once over one TLS connection (CONNECT to a gateway hostname):
    the status of each."""
    import h2.config
    import h2.connection
    import h2.events

    raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    raw.sendall(b"CONNECT gomodel.local:443 HTTP/1.1\r\nHost: gomodel.local:443\r\n\r\n")
    assert b" 200 " in raw.recv(4096)
    context = ssl.create_default_context(cafile=str(gateway.ca))
    context.set_alpn_protocols(["h2"])
    tls = context.wrap_socket(raw, server_hostname="gomodel.local")
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    for _ in range(count):
        stream = connection.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":scheme", "https"),
            (":authority", "gomodel.local"),
        ]
        connection.send_headers(stream, headers)
        connection.send_data(stream, b"{}", end_stream=True)
    tls.sendall(connection.data_to_send())
    statuses: dict[int, str] = {}
    deadline = time.monotonic() + 10
    with tls:
        while len(statuses) < count and time.monotonic() < deadline:
            for event in connection.receive_data(tls.recv(65536)):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
            tls.sendall(connection.data_to_send())
    return list(statuses.values())


def test_refused_http2_streams_leave_no_socket_behind(team_gateway: Gateway) -> None:
    """Concurrent refused streams once left mitmproxy's connection to the relay half-closed, a
    descriptor each, for good."""
    fds = open_fds(team_gateway)
    statuses = [s for _ in range(3) for s in h2_streams_without_a_key(team_gateway, 50)]
    time.sleep(1)

    assert statuses == ["401"] * 150
    assert open_fds(team_gateway) <= fds + 2


def test_a_refused_head_request_gets_no_body(team_gateway: Gateway) -> None:
    """HEAD then GET on one connection: a body after the HEAD answer would be read as the next
    answer's start."""
    raw = (
        b"HEAD /health HTTP/1.1\r\nHost: gomodel.local\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: gomodel.local\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", team_gateway.port), timeout=5) as connection:
        connection.sendall(raw)
        time.sleep(0.5)
        answer = connection.recv(65536)

    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 401")  # no key: refused before its path is judged
    assert rest.startswith(b"HTTP/1.1 200")  # the GET's answer comes right after the HEAD's

"""Fail closed, keep every secret, survive any input: end to end with real processes."""

import gzip
import http.client
import json
import random
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from conftest import CHICAGO_KEY, CLIENT_KEY, openai_client
from openai import DefaultHttpxClient, OpenAI
from processes import (
    REPO,
    Gateway,
    Simulator,
    clean_env,
    free_port,
    start_gateway,
    start_mitmweb,
    start_simulator,
)

HELLO = [{"role": "user", "content": "hello"}]
TLS_KEY = "sk-oracle-untrusted-tls-4c1d9e"
DOWN_KEY = "sk-oracle-refused-77a0b3"


def post(gateway: Gateway, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- fail closed ----------------------------------------------------------------------------------


def test_an_internal_failure_answers_502_and_sends_nothing_upstream(
    tmp_path: Path, chicago: Simulator
) -> None:
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4,boom.model"),
        "-s",
        str(REPO / "tests" / "fault_addon.py"),
        ca=chicago.ca,
    )
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            openai_client(gateway).chat.completions.create(model="boom.model", messages=HELLO)
        still_serving = openai_client(gateway).chat.completions.create(
            model="xai.grok-4", messages=HELLO
        )
    finally:
        gateway.stop()

    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "gateway_error"
    assert [r["body"]["model"] for r in chicago.posts()] == ["xai.grok-4"]
    assert still_serving.choices[0].message.content
    log = gateway.log()
    assert "internal error in request hook" in log and "injected routing failure" in log
    assert CHICAGO_KEY not in log


# -- secrets --------------------------------------------------------------------------------------


@pytest.fixture
def untrusted_simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A simulator whose CA the gateway does not trust: TLS to it fails."""
    simulator = start_simulator(tmp_path / "untrusted", TLS_KEY)
    yield simulator
    simulator.process.stop()


def three_provider_config(tmp_path: Path, untrusted: Simulator) -> Path:
    config = tmp_path / "gomodel.yaml"
    config.write_text(
        "providers:\n"
        "  oracle:\n"
        "    base_url: ${CHICAGO_URL}\n"
        "    api_key: ${CHICAGO_KEY}\n"
        "    models: [xai.grok-4, cohere.command-r]\n"
        "    models_mode: allowlist\n"
        "  oracle-tls:\n"
        f"    base_url: {untrusted.base_url()}\n"
        f"    api_key: {TLS_KEY}\n"
        "    models: [tls.model]\n"
        "    models_mode: allowlist\n"
        "  oracle-down:\n"
        f"    base_url: https://127.0.0.1:{free_port()}/openai/v1\n"
        f"    api_key: {DOWN_KEY}\n"
        "    models: [down.model]\n"
        "    models_mode: allowlist\n"
    )
    return config


def exercise(base_url: str, chicago: Simulator) -> list[str]:
    """Successes, streams, Oracle 4xx/5xx, a TLS failure and a refused connection; returns every
    status line, header and body the client saw."""
    seen: list[str] = []
    api = OpenAI(
        base_url=base_url,
        api_key=CLIENT_KEY,
        max_retries=0,
        http_client=DefaultHttpxClient(trust_env=False),
    )

    def record(call) -> None:
        try:
            response = call().http_response
            seen.extend([str(response.headers), response.read().decode()])
        except openai.APIStatusError as e:
            seen.extend([str(e.response.headers), e.response.text])

    chat = api.chat.completions.with_raw_response
    record(lambda: chat.create(model="xai.grok-4", messages=HELLO))
    record(lambda: chat.create(model="xai.grok-4", messages=HELLO, stream=True))
    record(
        lambda: api.responses.with_raw_response.create(model="xai.grok-4", input="hi", stream=True)
    )
    record(lambda: chat.create(model="cohere.command-r", messages=HELLO))  # Oracle's 404
    chicago.configure(fail=[503, 503, 503])  # more than the gateway's retries
    record(lambda: chat.create(model="xai.grok-4", messages=HELLO))  # Oracle's 503
    record(lambda: chat.create(model="tls.model", messages=HELLO))  # TLS failure
    record(lambda: chat.create(model="down.model", messages=HELLO))  # connection refused
    return seen


def test_keys_never_reach_clients_logs_or_saved_flows(
    tmp_path: Path, chicago: Simulator, untrusted_simulator: Simulator, shared_ca: Path
) -> None:
    flows = tmp_path / "flows.mitm"
    gateway = start_gateway(
        tmp_path / "gw",
        {"CHICAGO_URL": chicago.base_url(), "CHICAGO_KEY": CHICAGO_KEY},
        "--set",
        f"gomodel_config={three_provider_config(tmp_path, untrusted_simulator)}",
        "--set",
        "termlog_verbosity=debug",
        "--set",
        "flow_detail=4",
        "-w",
        str(flows),
        ca=chicago.ca,
    )
    try:
        seen = exercise(f"{gateway.url}/v1", chicago)
    finally:
        gateway.stop()  # flushes the flow file

    statuses = " ".join(seen)
    assert "Simulated failure 503" in statuses and "Authorization failed" in statuses
    assert "upstream_unreachable" in statuses and "connection refused" in statuses
    assert "TLS certificate verification failed" in statuses  # JSON, not mitmproxy's HTML page
    assert "<html>" not in statuses
    log, saved = gateway.log(), flows.read_bytes()
    assert "sk-oracle" in (CHICAGO_KEY + TLS_KEY + DOWN_KEY)  # the needles are right
    for key in (CHICAGO_KEY, TLS_KEY, DOWN_KEY):
        assert key not in statuses
        assert key not in log
        assert key.encode() not in saved
    assert "[redacted by gomodel]" in log  # flow_detail=4 printed the redacted header
    assert len(saved) > 1000


def test_keys_never_reach_mitmweb_flow_data(
    tmp_path: Path, chicago: Simulator, untrusted_simulator: Simulator
) -> None:
    web_port = free_port()
    mitmweb = start_mitmweb(
        tmp_path,
        {"CHICAGO_URL": chicago.base_url(), "CHICAGO_KEY": CHICAGO_KEY},
        web_port,
        "web-test-pw",
        "--set",
        f"gomodel_config={three_provider_config(tmp_path, untrusted_simulator)}",
        ca=chicago.ca,
    )
    try:
        exercise(f"{mitmweb.url}/v1", chicago)
        pages = {}
        for page in ("/flows", "/flows/dump"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{web_port}{page}",
                headers={"Authorization": "Bearer web-test-pw"},
            )
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(request, timeout=10) as answer:
                pages[page] = answer.read()
    finally:
        mitmweb.stop()

    flows = json.loads(pages["/flows"])
    assert len(flows) >= 7
    assert any(
        f["request"]["host"] == "127.0.0.1" and f.get("comment", "").startswith("gomodel")
        for f in flows
    )
    for key in (CHICAGO_KEY, TLS_KEY, DOWN_KEY):
        for page in pages.values():
            assert key.encode() not in page


# -- client authentication ------------------------------------------------------------------------


def test_master_key_guards_every_endpoint_but_health(tmp_path: Path, chicago: Simulator) -> None:
    master = "gm-master-6d2f0e41"
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4", GOMODEL_MASTER_KEY=master),
        ca=chicago.ca,
    )
    try:
        with pytest.raises(openai.AuthenticationError) as wrong:
            openai_client(gateway, "not-the-key").chat.completions.create(
                model="xai.grok-4", messages=HELLO
            )
        with pytest.raises(openai.AuthenticationError):
            openai_client(gateway, "not-the-key").models.list()
        health = subprocess.run(
            ["curl", "-sS", f"{gateway.url}/health"],
            capture_output=True,
            text=True,
            env=clean_env(),
            check=True,
        )
        reply = openai_client(gateway, master).chat.completions.create(
            model="xai.grok-4", messages=HELLO
        )
    finally:
        gateway.stop()

    assert wrong.value.body["code"] == "invalid_api_key"
    assert json.loads(health.stdout)["status"] == "ok"
    assert reply.choices[0].message.content
    (received,) = chicago.posts()
    assert received["headers"]["authorization"] == f"Bearer {CHICAGO_KEY}"
    assert master not in json.dumps(chicago.requests())
    assert master not in gateway.log()


# -- hostile input --------------------------------------------------------------------------------


@pytest.fixture
def small_gateway(tmp_path: Path, chicago: Simulator) -> Iterator[Gateway]:
    """A gateway with a 64 KiB body limit."""
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4"),
        "--set",
        "gomodel_max_body_size=64KiB",
        ca=chicago.ca,
    )
    yield gateway
    gateway.stop()


def chat_body(size: int = 0, model: str = "xai.grok-4") -> bytes:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "x" * size}]}
    ).encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        pytest.param(chat_body(70_000), {}, 413, "request_too_large", id="content-length"),
        pytest.param(
            chat_body(70_000),
            {"Transfer-Encoding": "chunked"},
            413,
            "request_too_large",
            id="chunked-without-length",
        ),
        pytest.param(
            gzip.compress(chat_body()),
            {"Content-Encoding": "gzip"},
            415,
            "unsupported_encoding",
            id="gzip",
        ),
        pytest.param(chat_body(model="xai.grok-4\u0007"), {}, 400, "invalid_model", id="control"),
        pytest.param(chat_body(model="oracle/../../admin"), {}, 400, "invalid_model", id="dots"),
        pytest.param(chat_body(model="xai.grok-4%0d%0a"), {}, 400, "invalid_model", id="escapes"),
        pytest.param(b"\xc3\x28{}", {}, 400, "invalid_body", id="not-utf8"),
        pytest.param(b"[" * 50_000, {}, 400, "invalid_json", id="deep-nesting"),
    ],
)
def test_hostile_requests_are_refused_and_nothing_is_sent(
    small_gateway: Gateway, chicago: Simulator, body, headers, status, code
) -> None:
    headers = dict(headers)
    if headers.pop("Transfer-Encoding", None) == "chunked":  # http.client then chunks it itself
        body = iter([body[i : i + 8192] for i in range(0, len(body), 8192)])
    got_status, answer = post(
        small_gateway, "/v1/chat/completions", body, {"Content-Type": "application/json", **headers}
    )

    assert got_status == status
    assert json.loads(answer)["error"]["code"] == code
    assert chicago.posts() == []


# -- config reload --------------------------------------------------------------------------------


def test_config_edits_reload_without_restart_and_broken_ones_are_rejected(
    tmp_path: Path, chicago: Simulator
) -> None:
    config = tmp_path / "gomodel.yaml"
    provider = (
        "providers:\n  oracle:\n    base_url: ${URL}\n    api_key: ${KEY}\n"
        "    models_mode: allowlist\n    models: [{models}]\n"
    )
    config.write_text(provider.replace("{models}", "xai.grok-4"))
    gateway = start_gateway(
        tmp_path / "gw",
        {"URL": chicago.base_url(), "KEY": CHICAGO_KEY},
        "--set",
        f"gomodel_config={config}",
        ca=chicago.ca,
    )
    chicago.configure(chunk_delay=0.15)
    api = openai_client(gateway)

    def listed() -> list[str]:
        return [m.id for m in api.models.list().data]

    def wait_for(condition, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.1)

    try:
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(
                lambda: [
                    c
                    for c in api.chat.completions.create(
                        model="xai.grok-4", messages=HELLO, stream=True
                    )
                ]
            )
            time.sleep(0.5)  # the stream is running
            config.write_text(provider.replace("{models}", "xai.grok-4, google.gemini-2.5-pro"))
            wait_for(lambda: "google.gemini-2.5-pro" in listed())
            config.write_text("providers: [\n")  # broken
            wait_for(lambda: "configuration not reloaded" in gateway.log())
            assert listed() == ["xai.grok-4", "google.gemini-2.5-pro"]
            chunks = in_flight.result(timeout=30)
    finally:
        gateway.stop()

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("You said: hello")  # the stream survived both reloads
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- fuzzing through a real mitmdump --------------------------------------------------------------


def malformed_requests(count: int, seed: int = 20261125) -> list[tuple[str, str, bytes, dict]]:
    """Requests that each have at least one defect the gateway must refuse."""
    rng = random.Random(seed)
    junk_paths = [
        "/v1/embeddings",
        "/v1/../etc/passwd",
        "/v1/chat/completions/x",
        "/%00",
        "/v1/models/../../x",
        "/v2/chat/completions",
        "/v1/chat%2Fcompletions",
        "/v1/files/../x",
        "//",
        "/v1/responses/a%2Fb/cancel",
        "/admin",
        "/v1/audio/speech",
    ]
    hostile_models = [
        "../x",
        "a/../b",
        "m%2e",
        "m a",
        "\x00",
        "",
        "x" * 5000,
        "oracle-eu/",
        "nope.model",
        "oracle/nope",
        "\u202emodel",
        "m\u3000",
        3,
        None,
        [],
        {},
    ]

    def body_defect(path: str) -> tuple[bytes, dict]:
        choice = rng.randrange(9)
        inputs = "messages" if path == "/v1/chat/completions" else "input"
        base = {"model": "xai.grok-4", inputs: HELLO}
        if choice == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) + b"\xff", {}
        if choice == 1:
            return json.dumps(rng.choice([[], "s", 1, None, True, [base]])).encode(), {}
        if choice == 2:
            return json.dumps({**base, "model": rng.choice(hostile_models)}).encode(), {}
        if choice == 3:
            return json.dumps({**base, "stream": rng.choice(["yes", 1, [], {}])}).encode(), {}
        if choice == 4:
            return json.dumps({**base, inputs: rng.choice([1, {}, True, 2.5])}).encode(), {}
        if choice == 5:
            return json.dumps(base).encode()[: rng.randrange(1, 40)], {}
        if choice == 6:
            return gzip.compress(json.dumps(base).encode()), {"Content-Encoding": "gzip"}
        if choice == 7:
            return b"[" * rng.randrange(1000, 60_000), {}
        return json.dumps({inputs: HELLO}).encode(), {}

    requests = []
    for _ in range(count):
        kind = rng.randrange(4)
        headers = {"Content-Type": rng.choice(["application/json", "text/plain", "", "x/\x7f"])}
        path = rng.choice(["/v1/chat/completions", "/v1/responses"])
        if kind == 0:
            requests.append(("POST", rng.choice(junk_paths), b"{}", headers))
        elif kind == 1:
            requests.append((rng.choice(["GET", "PUT", "DELETE", "PATCH"]), path, b"", headers))
        else:
            body, extra = body_defect(path)
            requests.append(("POST", path, body, {**headers, **extra}))
    return requests


def test_two_thousand_malformed_requests_are_refused_cleanly(
    gateway: Gateway, chicago: Simulator, frankfurt: Simulator
) -> None:
    requests = malformed_requests(2000)

    def send(batch: list[tuple[str, str, bytes, dict]]) -> list[tuple[int, bytes]]:
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
        answers = []
        for method, path, body, headers in batch:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            answers.append((response.status, response.read()))
            if response.will_close:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
        connection.close()
        return answers

    with ThreadPoolExecutor(4) as pool:
        answers = [a for batch in pool.map(send, [requests[i::4] for i in range(4)]) for a in batch]

    statuses = sorted({status for status, _ in answers})
    assert len(answers) == 2000
    assert all(400 <= status < 500 for status in statuses), statuses
    for _, body in answers:
        assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
    assert chicago.requests() == [] and frankfurt.requests() == []
    assert "Traceback" not in gateway.log() and "internal error" not in gateway.log()

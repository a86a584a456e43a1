"""One request, one Call, end to end: flows show what really went to Oracle, streams included;
saved flows replay through another gateway; a corporate CONNECT proxy carries every call."""

import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CHICAGO_KEY, CLIENT_KEY, openai_client
from connect_proxy import ConnectProxy
from mitmproxy import io
from mitmproxy.http import HTTPFlow
from openai import DefaultHttpxClient, OpenAI
from processes import REPO, Gateway, Simulator, clean_env, mitmdump_args, start_gateway

HELLO = [{"role": "user", "content": "hello"}]
REDACTED = "[redacted by gomodel]"


def saved_flows(path: Path) -> list[HTTPFlow]:
    with path.open("rb") as source:
        return [f for f in io.FlowReader(source).stream() if isinstance(f, HTTPFlow)]


def proxied_client(gateway: Gateway, scheme: str) -> OpenAI:
    """An app that only knows a hostname and a proxy (HTTP_PROXY / HTTPS_PROXY)."""
    verify = ssl.create_default_context(cafile=str(gateway.ca)) if scheme == "https" else True
    return OpenAI(
        base_url=f"{scheme}://gomodel.local/v1",
        api_key=CLIENT_KEY,
        max_retries=0,
        http_client=DefaultHttpxClient(proxy=gateway.proxy, verify=verify, trust_env=False),
    )


@pytest.fixture
def recorded_gateway(tmp_path: Path, chicago: Simulator) -> Gateway:
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4"),
        "-w",
        str(tmp_path / "flows.mitm"),
        ca=chicago.ca,
    )
    yield gateway
    gateway.stop()


def test_flows_show_what_went_to_oracle_and_what_the_client_got(
    recorded_gateway: Gateway, chicago: Simulator, tmp_path: Path
) -> None:
    clients = {
        "direct": openai_client(recorded_gateway),
        "http": proxied_client(recorded_gateway, "http"),
        "https": proxied_client(recorded_gateway, "https"),
    }
    for client in clients.values():
        client.chat.completions.create(model="xai.grok-4", messages=HELLO)
        list(client.chat.completions.create(model="xai.grok-4", messages=HELLO, stream=True))
        list(client.responses.create(model="xai.grok-4", input="hi", stream=True))
    recorded_gateway.stop()

    flows = saved_flows(tmp_path / "flows.mitm")
    raw = (tmp_path / "flows.mitm").read_bytes()
    oracle_host = chicago.url.removeprefix("https://")
    assert len(flows) == 9
    for flow in flows:
        meta = flow.metadata["gomodel"]
        assert flow.request.pretty_url.startswith(chicago.base_url())
        assert flow.request.host_header == oracle_host
        assert flow.request.headers["authorization"] == REDACTED
        assert flow.request.json()["model"] == "xai.grok-4"
        assert flow.response.status_code == 200 and flow.response.content
        assert meta["client_url"] in {
            f"{recorded_gateway.url}/v1/chat/completions",
            f"{recorded_gateway.url}/v1/responses",
            "http://gomodel.local/v1/chat/completions",
            "http://gomodel.local/v1/responses",
            "https://gomodel.local/v1/chat/completions",
            "https://gomodel.local/v1/responses",
        }
        assert meta["provider"] == "oracle" and meta["requested_model"] == "xai.grok-4"
        assert f"client: POST {meta['client_url']} model=xai.grok-4" in flow.comment
        if meta["stream"]:
            assert flow.response.content.rstrip().endswith((b"[DONE]", b"}"))
            assert b"data: " in flow.response.content
    assert b"gomodel-relay" not in raw and b"gomodel-refusal" not in raw
    assert CHICAGO_KEY.encode() not in raw and CLIENT_KEY.encode() not in raw


def test_a_long_stream_is_kept_up_to_the_size_option(tmp_path: Path, chicago: Simulator) -> None:
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4"),
        "-w",
        str(tmp_path / "flows.mitm"),
        "--set",
        "gomodel_stream_body_size=300",
        ca=chicago.ca,
    )
    try:
        chunks = list(
            openai_client(gateway).chat.completions.create(
                model="xai.grok-4", messages=HELLO, stream=True
            )
        )
    finally:
        gateway.stop()

    (flow,) = saved_flows(tmp_path / "flows.mitm")
    assert chunks[-1].choices[0].finish_reason == "stop"  # the client got all of it
    assert flow.response.content.startswith(b"data: ")
    assert flow.response.content.endswith(b": [gomodel: kept the first 300 bytes of this stream]\n")


def replay(flows: Path, tmp_path: Path, env: dict[str, str], ca: Path) -> str:
    """A second gateway replays saved flows (mitmdump -C), and stops once they are done."""
    args = mitmdump_args(
        tmp_path / "conf", ca, "-C", str(flows), "--set", "client_replay_concurrency=1"
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    output = tmp_path / "replay.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            args,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=clean_env(**env),
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while output.read_text(errors="replace").count("gomodel oracle") < 3:
            assert time.monotonic() < deadline, output.read_text(errors="replace")
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(10)
    return output.read_text(errors="replace")


def test_saved_flows_replay_through_another_gateway(
    recorded_gateway: Gateway, chicago: Simulator, tmp_path: Path
) -> None:
    client = openai_client(recorded_gateway)
    client.chat.completions.create(model="xai.grok-4", messages=HELLO)
    list(client.chat.completions.create(model="xai.grok-4", messages=HELLO, stream=True))
    list(client.responses.create(model="xai.grok-4", input="hi", stream=True))
    recorded_gateway.stop()
    chicago.reset()

    log = replay(
        tmp_path / "flows.mitm", tmp_path / "second", chicago.oracle_env("xai.grok-4"), chicago.ca
    )

    posts = chicago.posts()
    assert len(posts) == 3
    assert all(p["headers"]["authorization"] == f"Bearer {CHICAGO_KEY}" for p in posts)
    assert sorted(p["body"].get("stream") is True for p in posts) == [False, True, True]
    assert log.count("gomodel oracle xai.grok-4 200") == 3  # the access log: a call each


def test_every_call_goes_through_the_corporate_proxy(tmp_path: Path, chicago: Simulator) -> None:
    with ConnectProxy(credentials=("corp", "s3cret")) as proxy:
        gateway = start_gateway(
            tmp_path,
            chicago.oracle_env("xai.grok-4"),
            "--mode",
            f"upstream:{proxy.url}",
            "--set",
            "upstream_auth=corp:s3cret",
            ca=chicago.ca,
        )
        try:
            client = openai_client(gateway)
            plain = client.chat.completions.create(model="xai.grok-4", messages=HELLO)
            streamed = list(
                client.chat.completions.create(model="xai.grok-4", messages=HELLO, stream=True)
            )
            deadline = time.monotonic() + 10
            while "model discovery unavailable" not in gateway.log():
                assert time.monotonic() < deadline, gateway.log()
                time.sleep(0.1)
        finally:
            gateway.stop()

    oracle = chicago.url.removeprefix("https://")
    assert plain.choices[0].message.content and streamed[-1].choices[0].finish_reason == "stop"
    # The gateway's own client keeps its tunnel open: the calls and /models share it.
    assert set(proxy.tunnels) == {oracle}  # never the relay, nothing else
    assert [r["method"] for r in chicago.requests()].count("POST") == 2
    assert proxy.refused == []
    assert "calls to Oracle go through" in gateway.log()
    assert "s3cret" not in gateway.log()


def test_the_doctor_goes_through_the_same_proxy(chicago: Simulator) -> None:
    with ConnectProxy(credentials=("corp", "s3cret")) as proxy:
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "doctor.py"),
                "--oracle-ca",
                str(chicago.ca),
                "--proxy",
                f"http://corp:s3cret@127.0.0.1:{proxy.port}",
            ],
            capture_output=True,
            text=True,
            env=clean_env(**chicago.oracle_env("xai.grok-4")),
            timeout=120,
        )

    oracle = chicago.url.removeprefix("https://")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "proxy " in result.stdout and f"CONNECT {oracle}" in result.stdout
    assert set(proxy.tunnels) == {oracle} and proxy.refused == []
    gateway_line = next(line for line in result.stdout.splitlines() if "verification" in line)
    assert " PASS " in gateway_line  # the temporary gateway ran in upstream mode too

"""Faults injected into real Oracle simulators, seen through a real mitmdump by the openai SDK
(its own retries off): retries, failover, timeouts, circuit breakers and broken streams."""

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from conftest import CHICAGO_KEY, FRANKFURT_KEY, openai_client
from processes import Gateway, Simulator, clean_env, free_port, start_gateway

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def regions(
    tmp_path: Path, chicago: Simulator, frankfurt: Simulator, shared_ca: Path
) -> Iterator[Gateway]:
    """oracle-down and oracle-down2 refuse connections; oracle is Chicago, oracle-eu Frankfurt.

    openai.gpt-oss-20b: down, then Chicago.  xai.grok-3: down, then down2.
    openai.gpt-oss-120b: Chicago, then Frankfurt.  xai.grok-4: Chicago only.
    """
    config = tmp_path / "regions.yaml"
    config.write_text(
        "timeouts: {connect: 2, headers: 1.5, idle: 1}\n"
        "retries: {max_retries: 2, backoff_initial: 0.05, backoff_max: 0.1}\n"
        "failover: {failure_threshold: 3, cooldown_seconds: 30}\n"
        "providers:\n"
        f"  oracle-down: {{base_url: 'https://127.0.0.1:{free_port()}/v1', api_key: k1,"
        " models: [openai.gpt-oss-20b, xai.grok-3], models_mode: allowlist}\n"
        f"  oracle-down2: {{base_url: 'https://127.0.0.1:{free_port()}/v1', api_key: k2,"
        " models: [xai.grok-3], models_mode: allowlist}\n"
        f"  oracle: {{base_url: '{chicago.base_url()}', api_key: {CHICAGO_KEY}, models_mode:"
        " allowlist, models: [openai.gpt-oss-20b, openai.gpt-oss-120b, xai.grok-4]}\n"
        f"  oracle-eu: {{base_url: '{frankfurt.base_url('/openai/v1')}', api_key: {FRANKFURT_KEY},"
        " models_mode: allowlist, models: [openai.gpt-oss-120b]}\n"
    )
    gateway = start_gateway(tmp_path / "gw", {}, "--set", f"gomodel_config={config}", ca=shared_ca)
    yield gateway
    gateway.stop()


def chat(gateway: Gateway, model: str, **extra):
    return openai_client(gateway).chat.completions.create(model=model, messages=HELLO, **extra)


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    try:
        result = call()
    except openai.APIStatusError as e:
        result = e
    return result, time.monotonic() - started


def test_a_503_then_success_is_one_200_and_two_requests(regions, chicago: Simulator) -> None:
    chicago.configure(fail=[503])
    reply = chat(regions, "xai.grok-4")
    assert reply.choices[0].message.content
    assert len(chicago.posts()) == 2
    assert "attempts: oracle 503, oracle 200" in regions.log()


def test_one_region_down_is_a_200_from_the_other(regions, chicago: Simulator) -> None:
    reply = chat(regions, "openai.gpt-oss-20b")
    assert reply.choices[0].message.content
    assert [r["body"]["model"] for r in chicago.posts()] == ["openai.gpt-oss-20b"]
    assert "attempts: oracle-down connection refused, oracle 200" in regions.log()


def test_a_busy_region_fails_over_to_the_other(
    regions, chicago: Simulator, frankfurt: Simulator
) -> None:
    chicago.configure(fail=[503])
    reply = chat(regions, "openai.gpt-oss-120b")
    assert reply.choices[0].message.content
    assert len(chicago.posts()) == 1 and len(frankfurt.posts()) == 1
    assert frankfurt.posts()[0]["headers"]["authorization"] == f"Bearer {FRANKFURT_KEY}"


def test_both_regions_down_is_one_clear_error(regions) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        chat(regions, "xai.grok-3")
    error = caught.value.body
    assert caught.value.status_code == 502 and error["code"] == "upstream_unreachable"
    assert "oracle-down (127.0.0.1:" in error["message"]
    assert "oracle-down2 (127.0.0.1:" in error["message"]
    assert caught.value.response.headers["content-type"] == "application/json"


def test_a_slow_region_is_a_504_within_the_configured_bound(regions, chicago: Simulator) -> None:
    chicago.configure(header_delay=4)
    error, elapsed = timed(lambda: chat(regions, "xai.grok-4"))
    assert isinstance(error, openai.APIStatusError) and error.status_code == 504
    assert error.body["code"] == "upstream_timeout"
    assert 1.5 <= elapsed < 3.0, elapsed  # headers timeout 1.5 s, not retried on that region
    assert len(chicago.posts()) == 1


def test_a_stream_cut_midway_ends_with_an_error_the_sdk_raises(regions, chicago: Simulator) -> None:
    chicago.configure(cut_after=4)
    received = []
    with pytest.raises(openai.APIError, match="The stream is incomplete"):
        for chunk in chat(regions, "xai.grok-4", stream=True):
            received.append(chunk)
    assert len(received) == 4
    assert "stream from oracle (127.0.0.1) broke" in regions.log()


def test_a_responses_stream_cut_midway_ends_with_an_error_event(
    regions, chicago: Simulator
) -> None:
    chicago.configure(cut_after=5)
    stream = openai_client(regions).responses.create(model="xai.grok-4", input="hi", stream=True)
    events = [event.type for event in stream]
    assert events[-1] == "error" and "response.completed" not in events


def test_an_idle_stream_ends_with_an_error_event(regions, chicago: Simulator) -> None:
    chicago.configure(chunk_delay=2.5)  # longer than the idle timeout of 1 s
    body = json.dumps({"model": "xai.grok-4", "messages": HELLO, "stream": True})
    result, elapsed = timed(
        lambda: subprocess.run(
            ["curl", "-sSN", "--max-time", "20", "-d", body, f"{regions.url}/v1/chat/completions"],
            capture_output=True,
            text=True,
            env=clean_env(),
            check=True,
        )
    )
    assert '"code": "stream_interrupted"' in result.stdout and "idle timeout" in result.stdout
    assert "[DONE]" not in result.stdout and elapsed < 5


def test_a_failing_region_is_cooled_down_and_shown_in_health(regions) -> None:
    # Each call makes 3 attempts at oracle-down (and at oracle-down2), which the circuit counts
    # as one failure: the third failed call opens it (threshold 3), not the first.
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            chat(regions, "xai.grok-3")
    with pytest.raises(openai.APIStatusError) as caught:
        chat(regions, "xai.grok-3")
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "providers_cooling_down"
    assert int(caught.value.response.headers["retry-after"]) > 0

    health = json.loads(
        subprocess.run(
            ["curl", "-sS", f"{regions.url}/health"],
            capture_output=True,
            text=True,
            env=clean_env(),
            check=True,
        ).stdout
    )
    circuits = {p["name"]: p["circuit"]["state"] for p in health["providers"]}
    assert circuits == {
        "oracle-down": "open",
        "oracle-down2": "open",
        "oracle": "closed",
        "oracle-eu": "closed",
    }


def test_a_client_leaving_midstream_is_logged_without_a_traceback(
    regions, chicago: Simulator
) -> None:
    chicago.configure(chunk_delay=0.3)
    body = json.dumps({"model": "xai.grok-4", "messages": HELLO, "stream": True})
    subprocess.run(
        ["curl", "-sSN", "--max-time", "1", "-d", body, f"{regions.url}/v1/chat/completions"],
        capture_output=True,
        env=clean_env(),
        check=False,
    )
    deadline = time.monotonic() + 5
    while "the client left a stream from oracle" not in regions.log():
        assert time.monotonic() < deadline, regions.log()
        time.sleep(0.1)
    assert "ended early: Client disconnected" in regions.log()
    assert "Traceback" not in regions.log()


@pytest.mark.parametrize(
    ("path", "body", "last_event"),
    [
        (
            "/v1/chat/completions",
            {"model": "xai.grok-4", "messages": HELLO, "stream": True},
            b"data: [DONE]",
        ),
        (
            "/v1/responses",
            {"model": "xai.grok-4", "input": "hi", "stream": True},
            b"response.completed",
        ),
    ],
)
def test_a_client_closing_right_after_the_last_event_got_a_whole_answer(
    regions, chicago: Simulator, path: str, body: dict, last_event: bytes
) -> None:
    """As llm does: it closes the moment it has read the last event, while Oracle has not yet
    ended the stream."""
    chicago.configure(tail_delay=1.0)
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gomodel.local\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    received = b""
    with socket.create_connection(("127.0.0.1", regions.port), timeout=10) as connection:
        connection.sendall(head + payload)
        while last_event not in received:
            chunk = connection.recv(65536)
            assert chunk, received
            received += chunk
    deadline = time.monotonic() + 5
    while f"POST {path} stream" not in regions.log():
        assert time.monotonic() < deadline, regions.log()
        time.sleep(0.05)
    time.sleep(1.5)  # until Oracle's stream has ended too

    [line] = [line for line in regions.log().splitlines() if f"POST {path} stream" in line]
    assert " 200 " in line and "client closed after the last event" in line, line
    assert "ended early" not in regions.log()
    assert "the client left a stream" not in regions.log()

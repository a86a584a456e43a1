"""Metrics, the access log and flow labels, through a real mitmdump."""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CHICAGO_KEY, FRANKFURT_KEY, openai_client
from processes import Gateway, Simulator, clean_env, start_gateway
from prometheus_client.parser import text_string_to_metric_families

HELLO = [{"role": "user", "content": "a secret prompt"}]


@pytest.fixture
def observed(
    tmp_path: Path, chicago: Simulator, frankfurt: Simulator, shared_ca: Path
) -> Iterator[tuple[Gateway, Path]]:
    """A gateway with two regions serving openai.gpt-oss-120b, logging JSON to a file."""
    config = tmp_path / "gomodel.yaml"
    config.write_text(
        "retries: {backoff_initial: 0.01, backoff_max: 0.02}\n"
        "providers:\n"
        f"  oracle: {{base_url: '{chicago.base_url()}', api_key: {CHICAGO_KEY},"
        " models: [xai.grok-4, openai.gpt-oss-120b], models_mode: allowlist}\n"
        f"  oracle-eu: {{base_url: '{frankfurt.base_url('/openai/v1')}', api_key: {FRANKFURT_KEY},"
        " models: [openai.gpt-oss-120b], models_mode: allowlist}\n"
    )
    access_log = tmp_path / "access.jsonl"
    gateway = start_gateway(
        tmp_path / "gw",
        {},
        "--set",
        f"gomodel_config={config}",
        "--set",
        "gomodel_access_log_format=json",
        "--set",
        f"gomodel_access_log_file={access_log}",
        ca=shared_ca,
    )
    yield gateway, access_log
    gateway.stop()


def scrape(gateway: Gateway, *headers: str) -> tuple[int, dict[tuple, float]]:
    args = ["curl", "-sS", "-w", "\n%{http_code}", f"{gateway.url}/metrics"]
    for header in headers:
        args += ["-H", header]
    output = subprocess.run(args, capture_output=True, text=True, env=clean_env(), check=True)
    text, _, status = output.stdout.rpartition("\n")
    if status != "200":
        return int(status), {}
    return 200, parse_samples(text)


def parse_samples(text: str) -> dict[tuple, float]:
    """A Prometheus exposition as {(name, sorted labels): value}, for `value`."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def exercise(gateway: Gateway, chicago: Simulator) -> None:
    api = openai_client(gateway)
    api.chat.completions.create(model="xai.grok-4", messages=HELLO)
    list(
        api.chat.completions.create(
            model="xai.grok-4", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    chicago.configure(fail=[503])
    api.chat.completions.create(model="openai.gpt-oss-120b", messages=HELLO)  # fails over
    api.models.list()
    with pytest.raises(Exception):  # noqa: B017 - any error will do: it is counted below
        api.chat.completions.create(model="nope.model", messages=HELLO)


def test_metrics_count_requests_tokens_latency_retries_and_failovers(observed, chicago) -> None:
    gateway, _ = observed
    exercise(gateway, chicago)
    status, samples = scrape(gateway)

    assert status == 200
    chat = {
        "provider": "oracle",
        "model": "xai.grok-4",
        "endpoint": "chat/completions",
        "status": "200",
    }
    assert value(samples, "gomodel_requests_total", **chat) == 2
    assert (
        value(
            samples,
            "gomodel_requests_total",
            provider="oracle-eu",
            model="openai.gpt-oss-120b",
            endpoint="chat/completions",
            status="200",
        )
        == 1
    )
    assert (
        value(
            samples,
            "gomodel_requests_total",
            provider="gateway",
            model="",
            endpoint="models",
            status="200",
        )
        == 1
    )
    assert (
        value(samples, "gomodel_rejected_requests_total", code="model_not_found", status="404") == 1
    )
    # The plain call and the stream (whose client asked for usage) both report tokens.
    assert (
        value(
            samples,
            "gomodel_tokens_total",
            provider="oracle",
            model="xai.grok-4",
            direction="output",
        )
        >= 2 * 10
    )
    assert value(samples, "gomodel_upstream_errors_total", provider="oracle", kind="503") == 1
    assert (
        value(samples, "gomodel_failovers_total", from_provider="oracle", to_provider="oracle-eu")
        == 1
    )
    assert (
        value(
            samples,
            "gomodel_request_duration_seconds_count",
            provider="oracle",
            endpoint="chat/completions",
            stream="true",
        )
        == 1
    )
    assert (
        value(
            samples,
            "gomodel_time_to_first_byte_seconds_count",
            provider="oracle",
            endpoint="chat/completions",
            stream="false",
        )
        == 1
    )
    assert value(samples, "gomodel_models", provider="oracle") == 2
    assert value(samples, "gomodel_circuit_open", provider="oracle-eu") == 0


def test_the_access_log_has_one_line_per_request_and_no_secrets(observed, chicago) -> None:
    gateway, access_log = observed
    exercise(gateway, chicago)
    scrape(gateway)

    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert [(r["provider"], r.get("model", ""), r["status"]) for r in lines] == [
        ("oracle", "xai.grok-4", 200),
        ("oracle", "xai.grok-4", 200),
        ("oracle-eu", "openai.gpt-oss-120b", 200),
        ("gateway", "", 200),
        ("gateway", "", 404),
        ("gateway", "", 200),
    ]
    plain, stream, failover, listing, refused, metrics = lines
    assert plain["tokens_out"] > 0 and plain["request_id"] and plain["seconds"] > 0
    assert stream["stream"] is True and stream["tokens_out"] > 0 and "first_byte_seconds" in stream
    assert failover["attempts"] == ["oracle 503", "oracle-eu 200"]
    assert listing["endpoint"] == "models" and refused["error"] == "model_not_found"
    assert metrics["path"] == "/metrics"
    text = access_log.read_text()
    for secret in (CHICAGO_KEY, FRANKFURT_KEY, "a secret prompt"):
        assert secret not in text


def test_bodies_are_logged_only_when_asked(tmp_path: Path, chicago: Simulator) -> None:
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4"),
        "--set",
        "gomodel_log_bodies=true",
        ca=chicago.ca,
    )
    try:
        openai_client(gateway).chat.completions.create(model="xai.grok-4", messages=HELLO)
    finally:
        gateway.stop()
    line = next(line for line in gateway.log().splitlines() if "gomodel oracle xai.grok-4" in line)
    assert "a secret prompt" in line and "Hello from xai.grok-4" in line
    assert CHICAGO_KEY not in gateway.log()


def test_metrics_need_the_master_key_when_one_is_set(tmp_path: Path, chicago: Simulator) -> None:
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4", GOMODEL_MASTER_KEY="gm-metrics-key"),
        ca=chicago.ca,
    )
    try:
        refused, _ = scrape(gateway)
        allowed, samples = scrape(gateway, "Authorization: Bearer gm-metrics-key")
    finally:
        gateway.stop()
    assert refused == 401 and allowed == 200
    assert (
        value(samples, "gomodel_rejected_requests_total", code="invalid_api_key", status="401") == 1
    )


def test_stream_usage_is_asked_for_counted_and_hidden_from_clients_that_did_not_ask(
    tmp_path: Path, chicago: Simulator
) -> None:
    gateway = start_gateway(
        tmp_path,
        chicago.oracle_env("xai.grok-4"),
        "--set",
        "gomodel_stream_usage=true",
        ca=chicago.ca,
    )
    try:
        api = openai_client(gateway)
        plain = list(api.chat.completions.create(model="xai.grok-4", messages=HELLO, stream=True))
        asked = list(
            api.chat.completions.create(
                model="xai.grok-4",
                messages=HELLO,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    finally:
        gateway.stop()
    assert all(chunk.choices for chunk in plain) and plain[-1].usage is None
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens > 0
    first, second = (r["body"] for r in chicago.posts())
    assert second["stream_options"] == {"include_usage": True}  # the client's own
    assert first["stream_options"] == {"include_usage": True}
    lines = [line for line in gateway.log().splitlines() if "gomodel oracle xai.grok-4 200" in line]
    assert len(lines) == 2 and all(" out=- " not in line for line in lines)
    assert "stream_options.include_usage added" in lines[0]

"""The addon's hooks with mitmproxy's own test helpers (taddons, tflow), no processes."""

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gomodel_gateway import addon as addon_module
from gomodel_gateway.addon import GoModel
from gomodel_gateway.hosts import is_gateway_request, parse_hosts
from gomodel_gateway.upstream import REDACTED
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

ORACLE_KEY = "sk-oracle-unit-test-key"


@pytest.fixture
def upstream_port() -> Iterator[int]:
    """A real listening socket standing in for Oracle's host: connects succeed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture
def config_file(tmp_path: Path, upstream_port: int) -> Path:
    path = tmp_path / "gomodel.yaml"
    path.write_text(
        "providers:\n"
        "  oracle:\n"
        f"    base_url: https://127.0.0.1:{upstream_port}/20231130/actions/v1\n"
        f"    api_key: {ORACLE_KEY}\n"
        "    models: [xai.grok-4, openai.gpt-oss-120b]\n"
        "    models_mode: allowlist\n"
        "  oracle-eu:\n"
        f"    base_url: https://127.0.0.1:{upstream_port}/openai/v1\n"
        "    api_key: sk-eu\n"
        "    models: [openai.gpt-oss-120b]\n"
        "    models_mode: allowlist\n"
    )
    return path


@pytest.fixture
def gomodel(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GoModel]:
    for name in ("ORACLE_BASE_URL", "ORACLE_API_KEY", "ORACLE_MODELS"):
        monkeypatch.delenv(name, raising=False)
    gateway = GoModel()
    with taddons.context(gateway) as tctx:
        tctx.configure(gateway, gomodel_config=str(config_file))
        yield gateway


def gateway_flow(method: str, url: str, body: object = None, **headers: str) -> http.HTTPFlow:
    content = json.dumps(body).encode() if body is not None else b""
    request = http.Request.make(method, url, content, headers)
    return tflow.tflow(req=request)


def run_request_hooks(gateway: GoModel, flow: http.HTTPFlow) -> None:
    gateway.requestheaders(flow)
    asyncio.run(gateway.request(flow))


def error_of(flow: http.HTTPFlow) -> dict:
    assert flow.response is not None
    return json.loads(flow.response.content)["error"]


def test_gateway_flow_is_rewritten_to_oracle_with_the_provider_key(
    gomodel: GoModel, upstream_port: int
) -> None:
    flow = gateway_flow(
        "POST",
        "http://gomodel.local/v1/chat/completions?trace=1",
        {"model": "xai.grok-4", "messages": []},
        authorization="Bearer client",
        **{"api-key": "client", "x-api-key": "client", "OpenAI-Project": "p"},
    )
    run_request_hooks(gomodel, flow)

    assert flow.response is None
    assert flow.request.url == (
        f"https://127.0.0.1:{upstream_port}/20231130/actions/v1/chat/completions?trace=1"
    )
    assert flow.request.headers["authorization"] == f"Bearer {ORACLE_KEY}"
    assert "api-key" not in flow.request.headers and "x-api-key" not in flow.request.headers
    assert flow.request.headers["openai-project"] == "p"
    assert flow.metadata["gomodel"]["provider"] == "oracle"


def test_pinned_model_is_rewritten_in_the_body(gomodel: GoModel) -> None:
    flow = gateway_flow(
        "POST", "http://gomodel.local/v1/responses", {"model": "oracle-eu/openai.gpt-oss-120b"}
    )
    run_request_hooks(gomodel, flow)

    assert flow.request.path == "/openai/v1/responses"
    assert json.loads(flow.request.content) == {"model": "openai.gpt-oss-120b"}
    assert flow.request.headers["authorization"] == "Bearer sk-eu"


def test_models_are_answered_locally_without_streaming_the_request(gomodel: GoModel) -> None:
    flow = gateway_flow("GET", "http://gomodel.local/v1/models")
    flow.request.stream = True
    run_request_hooks(gomodel, flow)

    assert flow.request.stream is False
    assert flow.response.status_code == 200
    ids = [m["id"] for m in json.loads(flow.response.content)["data"]]
    assert ids == ["xai.grok-4", "openai.gpt-oss-120b", "oracle-eu/openai.gpt-oss-120b"]


def test_errors_are_answered_locally(gomodel: GoModel) -> None:
    flow = gateway_flow(
        "POST", "http://gomodel.local/v1/chat/completions", {"model": "x.y", "messages": []}
    )
    run_request_hooks(gomodel, flow)

    assert flow.response.status_code == 404
    assert flow.response.headers["content-type"] == "application/json"
    assert error_of(flow)["code"] == "model_not_found"
    assert flow.request.host == "gomodel.local"


def test_other_traffic_is_left_alone(gomodel: GoModel) -> None:
    flow = gateway_flow(
        "POST",
        "https://example.com/v1/chat/completions",
        {"model": "xai.grok-4"},
        authorization="Bearer own",
    )
    flow.request.stream = True
    run_request_hooks(gomodel, flow)

    assert flow.response is None and flow.request.stream is True
    assert flow.request.url == "https://example.com/v1/chat/completions"
    assert flow.request.headers["authorization"] == "Bearer own"


def test_an_internal_error_fails_closed_with_a_502(
    gomodel: GoModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_route(*args: object) -> None:
        raise RuntimeError("routing exploded")

    monkeypatch.setattr(addon_module, "route", broken_route)
    flow = gateway_flow(
        "POST",
        "http://gomodel.local/v1/chat/completions",
        {"model": "xai.grok-4"},
        authorization="Bearer client",
    )
    with caplog.at_level(logging.ERROR):
        run_request_hooks(gomodel, flow)

    assert flow.response.status_code == 502
    assert error_of(flow)["type"] == "gateway_error"
    assert flow.request.host == "gomodel.local"  # never rewritten toward Oracle
    assert ORACLE_KEY not in str(flow.request.headers)
    assert "routing exploded" in caplog.text
    assert flow.marked


def test_the_key_is_redacted_once_response_headers_arrive(gomodel: GoModel) -> None:
    flow = gateway_flow(
        "POST", "http://gomodel.local/v1/chat/completions", {"model": "xai.grok-4", "messages": []}
    )
    run_request_hooks(gomodel, flow)
    assert flow.request.headers["authorization"] == f"Bearer {ORACLE_KEY}"

    flow.response = http.Response.make(
        200, b"", {"content-type": "text/event-stream", "opc-request-id": "R9"}
    )
    gomodel.responseheaders(flow)

    assert flow.request.headers["authorization"] == REDACTED
    assert callable(flow.response.stream)
    chunk = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 5}}\n\n'
    assert flow.response.stream(chunk) == chunk  # bytes pass unchanged
    assert flow.response.stream(b"") == b""
    assert flow.comment.startswith("gomodel oracle xai.grok-4 200 in=2 out=5")


def test_the_key_is_redacted_when_the_upstream_connection_fails(gomodel: GoModel) -> None:
    flow = gateway_flow(
        "POST", "http://gomodel.local/v1/chat/completions", {"model": "xai.grok-4", "messages": []}
    )
    run_request_hooks(gomodel, flow)
    flow.error = tflow.terr("connection refused")
    gomodel.error(flow)
    assert flow.request.headers["authorization"] == REDACTED


def test_oracle_errors_are_reshaped_in_the_response_hook(gomodel: GoModel) -> None:
    flow = gateway_flow(
        "POST", "http://gomodel.local/v1/chat/completions", {"model": "xai.grok-4", "messages": []}
    )
    run_request_hooks(gomodel, flow)
    flow.response = http.Response.make(
        404,
        b'{"code":"404","message":"Authorization failed or requested resource not found."}',
        {"content-type": "application/json", "opc-request-id": "R404"},
    )
    gomodel.responseheaders(flow)
    gomodel.response(flow)

    error = error_of(flow)
    assert flow.response.status_code == 404
    assert "IAM policy" in error["message"] and "R404" in error["message"]


def test_an_unreachable_provider_is_a_json_502(gomodel: GoModel, tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = tmp_path / "down.yaml"
    config.write_text(
        f"providers:\n  down:\n    base_url: https://127.0.0.1:{port}/v1\n    api_key: k\n"
        "    models: [m.x]\n    models_mode: allowlist\n"
    )
    with taddons.context(gomodel) as tctx:
        tctx.configure(gomodel, gomodel_config=str(config))
        flow = gateway_flow(
            "POST", "http://gomodel.local/v1/chat/completions", {"model": "m.x", "messages": []}
        )
        run_request_hooks(gomodel, flow)

    assert flow.response.status_code == 502
    assert error_of(flow)["code"] == "upstream_unreachable"
    assert f"'down' at 127.0.0.1:{port}" in error_of(flow)["message"]
    assert flow.request.host == "gomodel.local"


def test_bad_options_at_startup_log_an_error_and_when_running_are_refused(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = GoModel()
    with taddons.context(gateway) as tctx:
        with caplog.at_level(logging.ERROR):
            tctx.configure(gateway, gomodel_config=str(config_file.with_name("missing.yaml")))
        assert "missing.yaml does not exist" in caplog.text
        assert gateway.inventory.providers == ()  # nothing served from a config in error

        tctx.configure(gateway, gomodel_config=str(config_file))
        gateway.is_running = True
        with pytest.raises(exceptions.OptionsError, match="gomodel_hosts"):
            tctx.configure(gateway, gomodel_hosts="not a host")
        assert [p.name for p in gateway.inventory.providers] == ["oracle", "oracle-eu"]


def test_reconfiguring_rebuilds_state_from_scratch(gomodel: GoModel, tmp_path: Path) -> None:
    gomodel.on_discovered("oracle", ("stale.model",))
    other = tmp_path / "other.yaml"
    other.write_text("providers: {}\n")
    with taddons.context(gomodel) as tctx:
        tctx.configure(gomodel, gomodel_config=str(other), gomodel_hosts="api.openai.com")
    assert gomodel.inventory.providers == () and gomodel.discovered == {}
    assert gomodel.hosts == ("api.openai.com",)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("gomodel.local", ("gomodel.local",)),
        (" gomodel.local , API.OpenAI.com., gomodel.local,", ("gomodel.local", "api.openai.com")),
        ("", ()),
    ],
)
def test_hosts_option_is_parsed(option: str, expected: tuple[str, ...]) -> None:
    assert parse_hosts(option) == expected


@pytest.mark.parametrize("bad", ["has space", "under_score", "-lead", "a..b", "x" * 64 + ".com"])
def test_bad_hostnames_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="not a hostname"):
        parse_hosts(bad)


@pytest.mark.parametrize(
    ("host", "port", "listen", "expected"),
    [
        ("gomodel.local", 80, ("127.0.0.1", 8080), True),
        ("GOMODEL.LOCAL.", 443, None, True),
        ("localhost", 8080, ("127.0.0.1", 8080), True),
        ("127.0.0.1", 8080, ("127.0.0.1", 8080), True),
        ("localhost", 8080, ("::ffff:127.0.0.1", 8080), True),
        ("192.168.1.5", 8080, ("192.168.1.5", 8080), True),
        ("localhost", 9090, ("127.0.0.1", 8080), False),
        ("example.com", 8080, ("127.0.0.1", 8080), False),
        ("localhost", 8080, ("192.168.1.5", 8080), False),
        ("example.com", 443, None, False),
    ],
)
def test_gateway_requests_are_recognised(host, port, listen, expected) -> None:
    assert is_gateway_request(host, port, ("gomodel.local",), listen) is expected

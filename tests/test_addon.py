"""The addon's hooks with mitmproxy's own test helpers (taddons, tflow) and an in-process Oracle."""

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import dispatch
import pytest
from fake_oracle import CA, Answer, FakeOracle, completion
from gomodel_gateway import service as service_module
from gomodel_gateway.addon import REDACTED, GoModel
from gomodel_gateway.hosts import is_gateway_request, parse_hosts
from mitmproxy import contentviews, ctx, exceptions, http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow

ORACLE_KEY = "sk-oracle-unit-test-key"


def write_config(tmp_path: Path, base_url: str, models: str = "xai.grok-4, m.one") -> Path:
    path = tmp_path / "gomodel.yaml"
    path.write_text(
        "providers:\n"
        "  oracle:\n"
        f"    base_url: {base_url}\n"
        f"    api_key: {ORACLE_KEY}\n"
        f"    models: [{models}]\n"
        "    models_mode: allowlist\n"
        "  oracle-eu:\n"
        f"    base_url: {base_url.replace('/20231130/actions/v1', '/openai/v1')}\n"
        "    api_key: sk-eu\n"
        "    models: [m.one]\n"
        "    models_mode: allowlist\n"
        "retries:\n  max_retries: 0\n"
    )
    return path


def with_gateway(
    tmp_path: Path, scenario: Callable[[GoModel, FakeOracle], Awaitable[None]], *answers: Answer
) -> None:
    """Run a scenario against a configured addon and a fake Oracle, in one event loop."""

    async def main() -> None:
        async with FakeOracle(*answers) as oracle:
            gateway = GoModel()
            with taddons.context(gateway) as tctx:
                tctx.configure(gateway, gomodel_config=str(write_config(tmp_path, oracle.base_url)))
                CA.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
                tctx.options.update(ssl_verify_upstream_trusted_ca=str(tmp_path / "ca.pem"))
                try:
                    await scenario(gateway, oracle)
                finally:
                    await gateway.runtime.done()

    asyncio.run(main())


def gateway_flow(method: str, url: str, body: object = None, **headers: str) -> http.HTTPFlow:
    content = json.dumps(body).encode() if body is not None else b""
    return tflow.tflow(req=http.Request.make(method, url, content, headers))


async def run_request_hooks(gateway: GoModel, flow: http.HTTPFlow) -> None:
    dispatch.requestheaders(gateway, flow)
    await dispatch.request(gateway, flow)


def error_of(flow: http.HTTPFlow) -> dict:
    assert flow.response is not None
    return json.loads(flow.response.content)["error"]


CHAT = "http://gomodel.local/v1/chat/completions"
PROJECT = "ocid1.generativeaiproject.oc1.us-chicago-1.amaaaaaaexample"


def test_a_call_is_answered_by_oracle_with_the_provider_key(tmp_path: Path) -> None:
    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        flow = gateway_flow(
            "POST",
            CHAT,
            {"model": "xai.grok-4", "messages": []},
            authorization="Bearer client",
            **{"api-key": "client", "OpenAI-Project": PROJECT, "Cookie": "session=1"},
        )
        await run_request_hooks(gateway, flow)

        assert flow.response.status_code == 200
        assert json.loads(flow.response.content)["usage"]["total_tokens"] == 4
        assert flow.response.headers["opc-request-id"] == "R1"
        (received,) = oracle.received
        assert received["path"] == "/20231130/actions/v1/chat/completions"
        assert received["headers"]["Authorization"] == f"Bearer {ORACLE_KEY}"
        assert not {"api-key", "cookie"} & {k.lower() for k in received["headers"]}
        assert received["headers"]["OpenAI-Project"] == PROJECT
        # The flow shows what went to Oracle (mitmproxy connects nowhere: it has an answer),
        # the client's URL and model in its comment and metadata, and no key of either side.
        assert flow.request.url == oracle.base_url + "/chat/completions"
        assert flow.request.headers["authorization"] == REDACTED
        assert "api-key" not in flow.request.headers and "cookie" not in flow.request.headers
        assert json.loads(flow.request.content)["model"] == "xai.grok-4"
        assert ORACLE_KEY not in str(flow.get_state())
        assert "Bearer client" not in str(flow.get_state())
        assert flow.comment.startswith("gomodel oracle xai.grok-4 200 in=3 out=1")
        assert f"client: POST {CHAT} model=xai.grok-4" in flow.comment
        assert flow.metadata["gomodel"]["client_url"] == CHAT

    with_gateway(tmp_path, scenario, Answer(body=completion("xai.grok-4")))


def test_a_pinned_model_goes_with_its_bare_id(tmp_path: Path) -> None:
    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        flow = gateway_flow("POST", CHAT, {"model": "oracle-eu/m.one", "messages": []})
        await run_request_hooks(gateway, flow)

        (received,) = oracle.received
        assert received["path"] == "/openai/v1/chat/completions"
        assert json.loads(received["body"])["model"] == "m.one"
        assert received["headers"]["Authorization"] == "Bearer sk-eu"
        assert flow.metadata["gomodel"]["provider"] == "oracle-eu"

    with_gateway(tmp_path, scenario)


def test_a_streamed_call_is_pointed_at_the_relay_without_any_key(tmp_path: Path) -> None:
    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        flow = gateway_flow(
            "POST",
            CHAT,
            {"model": "xai.grok-4", "messages": [], "stream": True},
            authorization="Bearer client",
        )
        await run_request_hooks(gateway, flow)

        assert flow.response is None
        assert (flow.request.scheme, flow.request.host) == ("http", "127.0.0.1")
        assert flow.request.port == gateway.runtime.relay.port
        assert flow.request.path.startswith("/gomodel-relay/")
        # Nothing of the client's request goes to the relay: no header, no body.
        assert list(flow.request.headers) == ["host"] and flow.request.content == b""
        assert oracle.received == []  # the relay calls Oracle when mitmproxy connects

        # What the relay does when mitmproxy connects: Oracle answers, chunks pass through it.
        call = gateway.desk.calls[flow]
        call.answered(call.route.target, 200, "R9")
        chunk = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 5}}\n\n'
        assert call.pass_chunk(chunk) == chunk and call.pass_chunk(b"") == b""

        flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        flow.response.headers["server"] = "Python/3.13 aiohttp/3.14"
        dispatch.responseheaders(gateway, flow)
        assert flow.response.stream is True and "server" not in flow.response.headers
        # Once the relay answers, the flow shows the request as it went to Oracle.
        assert flow.request.url == oracle.base_url + "/chat/completions"
        assert flow.request.headers["authorization"] == REDACTED
        assert json.loads(flow.request.content)["stream"] is True
        dispatch.response(gateway, flow)
        assert flow.response.content == chunk  # kept for mitmweb and flow files
        assert flow.comment.startswith("gomodel oracle xai.grok-4 200 in=2 out=5")

    with_gateway(tmp_path, scenario)


def test_oracle_errors_come_back_in_openai_shape(tmp_path: Path) -> None:
    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        flow = gateway_flow("POST", CHAT, {"model": "xai.grok-4", "messages": []})
        await run_request_hooks(gateway, flow)

        error = error_of(flow)
        assert flow.response.status_code == 404
        assert "IAM policy" in error["message"] and "R1" in error["message"]

    body = {"code": "404", "message": "Authorization failed or requested resource not found."}
    with_gateway(tmp_path, scenario, Answer(status=404, body=body))


def test_models_are_answered_locally_without_streaming_the_request(tmp_path: Path) -> None:
    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        flow = gateway_flow("GET", "http://gomodel.local/v1/models")
        flow.request.stream = True
        await run_request_hooks(gateway, flow)

        assert flow.request.stream is False
        ids = [m["id"] for m in json.loads(flow.response.content)["data"]]
        assert ids == ["xai.grok-4", "m.one", "oracle-eu/m.one"]
        assert oracle.received == []

    with_gateway(tmp_path, scenario)


def test_errors_are_answered_locally(tmp_path: Path) -> None:
    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        flow = gateway_flow("POST", CHAT, {"model": "x.y", "messages": []})
        await run_request_hooks(gateway, flow)

        assert flow.response.status_code == 404
        assert flow.response.headers["content-type"] == "application/json"
        assert error_of(flow)["code"] == "model_not_found"
        assert oracle.received == []

    with_gateway(tmp_path, scenario)


def test_other_traffic_passes_through_only_when_open(tmp_path: Path) -> None:
    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        def other_flow() -> http.HTTPFlow:
            flow = gateway_flow(
                "POST",
                "https://example.com/v1/chat/completions",
                {"model": "xai.grok-4"},
                authorization="Bearer own",
            )
            flow.request.stream = True
            return flow

        ctx.options.update(gomodel_passthrough="true")
        passed = other_flow()
        await run_request_hooks(gateway, passed)
        ctx.options.update(gomodel_passthrough="false")
        refused = other_flow()
        await run_request_hooks(gateway, refused)

        assert passed.response is None and passed.request.stream is True
        assert passed.request.url == "https://example.com/v1/chat/completions"
        assert passed.request.headers["authorization"] == "Bearer own"
        assert passed.request.headers["via"].startswith("1.1 gomodel-")
        assert error_of(refused)["code"] == "passthrough_disabled"
        assert refused.response.status_code == 403

    with_gateway(tmp_path, scenario)


def test_an_internal_error_fails_closed_with_a_502(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_route(*args: object) -> None:
        raise RuntimeError("routing exploded")

    monkeypatch.setattr(service_module, "route", broken_route)

    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        flow = gateway_flow("POST", CHAT, {"model": "xai.grok-4"}, authorization="Bearer client")
        with caplog.at_level(logging.ERROR):
            await run_request_hooks(gateway, flow)

        assert flow.response.status_code == 502
        assert error_of(flow)["type"] == "gateway_error"
        assert flow.request.host == "gomodel.local"  # never pointed anywhere
        assert oracle.received == []
        assert "routing exploded" in caplog.text
        assert flow.marked

    with_gateway(tmp_path, scenario)


def test_an_unreachable_provider_is_a_json_502(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        config = tmp_path / "down.yaml"
        config.write_text(
            f"providers:\n  down:\n    base_url: https://127.0.0.1:{port}/v1\n    api_key: k\n"
            "    models: [m.x]\n    models_mode: allowlist\nretries:\n  max_retries: 0\n"
        )
        with taddons.context(gateway) as tctx:
            tctx.configure(gateway, gomodel_config=str(config))
            flow = gateway_flow("POST", CHAT, {"model": "m.x", "messages": []})
            await run_request_hooks(gateway, flow)

        assert flow.response.status_code == 502
        assert error_of(flow)["code"] == "upstream_unreachable"
        assert f"down (127.0.0.1:{port}): connection refused" in error_of(flow)["message"]

    with_gateway(tmp_path, scenario)


def test_bad_options_at_startup_log_an_error_and_when_running_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, "https://h.example/v1")
    gateway = GoModel()
    with taddons.context(gateway) as tctx:
        with caplog.at_level(logging.ERROR):
            tctx.configure(gateway, gomodel_config=str(tmp_path / "missing.yaml"))
        assert "missing.yaml does not exist" in caplog.text
        assert gateway.runtime.inventory.providers == ()  # nothing served from a config in error

        tctx.configure(gateway, gomodel_config=str(config))
        gateway.runtime.is_running = True
        with pytest.raises(exceptions.OptionsError, match="gomodel_hosts"):
            tctx.configure(gateway, gomodel_hosts="not a host")
        assert [p.name for p in gateway.runtime.inventory.providers] == ["oracle", "oracle-eu"]


def test_reconfiguring_rebuilds_state_from_scratch(tmp_path: Path) -> None:
    gateway = GoModel()
    other = tmp_path / "other.yaml"
    other.write_text("providers: {}\n")
    with taddons.context(gateway) as tctx:
        tctx.configure(gateway, gomodel_config=str(write_config(tmp_path, "https://h/v1")))
        gateway.runtime.on_discovered("oracle", ("stale.model",))
        tctx.configure(gateway, gomodel_config=str(other), gomodel_hosts="api.openai.com")
    assert gateway.runtime.inventory.providers == () and gateway.runtime.discovered == {}
    assert gateway.runtime.hosts == ("api.openai.com",) and gateway.runtime.breakers == {}


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
        ("localhost", 8080, ("192.168.1.5", 8080), True),  # this machine, the proxy's port
        ("127.1", 8080, ("127.0.0.1", 8080), True),
        ("0x7f000001", 8080, ("127.0.0.1", 8080), True),
        ("2130706433", 8080, ("127.0.0.1", 8080), True),
        ("[::1]", 8080, ("127.0.0.1", 8080), True),
        ("0.0.0.0", 8080, ("192.168.1.5", 8080), True),
        ("127.1", 80, ("127.0.0.1", 8080), False),  # another port of this machine
        ("example.com", 443, None, False),
    ],
)
def test_gateway_requests_are_recognised(host, port, listen, expected) -> None:
    assert is_gateway_request(host, port, ("gomodel.local",), listen) is expected


def test_gateway_flows_get_the_gomodel_content_view(tmp_path: Path) -> None:
    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        flow = gateway_flow("POST", CHAT, {"model": "xai.grok-4", "messages": []})
        await run_request_hooks(gateway, flow)
        other = gateway_flow("GET", "http://example.com/x.json")
        other.response = http.Response.make(200, b'{"a": 1}', {"content-type": "application/json"})

        shown = contentviews.prettify_message(flow.request, flow)
        other_shown = contentviews.prettify_message(other.response, other)

        assert shown.view_name == "GoModel"
        assert shown.text.startswith(f"client:     POST {CHAT}\nmodel:      xai.grok-4 -> oracle")
        assert '"model": "xai.grok-4"' in shown.text
        assert other_shown.view_name != "GoModel"

    with_gateway(tmp_path, scenario, Answer(body=completion("xai.grok-4")))


def test_a_call_that_comes_in_as_the_proxy_starts_waits_until_it_has_started(
    tmp_path: Path,
) -> None:
    """mitmproxy listens before the addon's running hook is done (the relay, the ledger)."""

    async def main() -> None:
        gateway = GoModel()
        with taddons.context(gateway, proxyserver.Proxyserver()) as tctx:
            tctx.configure(
                gateway,
                gomodel_config=str(
                    write_config(tmp_path, "https://127.0.0.1:9/20231130/actions/v1")
                ),
                gomodel_usage_db="off",
            )
            relay_started, start_relay = asyncio.Event(), gateway.runtime.relay.start

            async def slow_relay_start() -> None:
                await relay_started.wait()
                await start_relay()

            gateway.runtime.relay.start = slow_relay_start  # type: ignore[method-assign]
            starting = asyncio.create_task(gateway.runtime.running())
            flow = gateway_flow("GET", "http://gomodel.local/v1/models")
            call = asyncio.create_task(run_request_hooks(gateway, flow))
            await asyncio.sleep(0.1)
            assert not call.done() and flow.response is None

            relay_started.set()
            await asyncio.wait_for(call, 5)
            await starting
            await gateway.runtime.done()
        assert flow.response is not None and flow.response.status_code == 200

    asyncio.run(main())

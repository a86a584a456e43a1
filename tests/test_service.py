"""The call service on its own: no mitmproxy, no flow; real parts (the configuration parser, the
inventory, the limiter, the transport and relay against an in-process HTTPS Oracle) and a call
served from its head and body to a typed outcome."""

import asyncio
import dataclasses
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fake_oracle import CA, Answer, FakeOracle, completion
from gomodel_gateway.affinity import AffinityStore
from gomodel_gateway.call import Call
from gomodel_gateway.collection import Collector
from gomodel_gateway.config import load_config
from gomodel_gateway.errors import ErrorCode, GatewayError
from gomodel_gateway.inventory import Inventory, build_inventory
from gomodel_gateway.ledger import Ledger
from gomodel_gateway.limiter import Limiter
from gomodel_gateway.metrics import Metrics
from gomodel_gateway.options import Settings, default_settings
from gomodel_gateway.outcomes import Body, Local, Refused, Sent, Streamed
from gomodel_gateway.providers import GatewayConfig
from gomodel_gateway.relay import PATH_PREFIX, StreamRelay
from gomodel_gateway.resilience import breakers_for
from gomodel_gateway.service import CallService
from gomodel_gateway.transport import Transport

CHAT = "/v1/chat/completions"
KEYS = "server:\n  keys:\n    team:\n      key: gm-team-key\n      models: [xai.grok-4]\n"


@dataclass
class State:
    """The gateway state the service reads, built from real parts as lifecycle.Runtime does."""

    settings: Settings
    inventory: Inventory
    transport: Transport
    relay: StreamRelay
    affinity: AffinityStore = field(default_factory=lambda: AffinityStore(time.monotonic))
    limiter: Limiter = field(default_factory=lambda: Limiter(time.time))
    ledger: Ledger | None = None
    metrics: Metrics = field(default_factory=Metrics)
    collector: Collector = field(default_factory=Collector)
    gateway_id: str = "test-gateway"

    @property
    def config(self) -> GatewayConfig:
        return self.settings.config

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.settings.hosts

    def breaker_states(self) -> dict[str, dict[str, object]]:
        return {}


def state_for(tmp_path: Path, base_url: str) -> State:
    path = tmp_path / "gomodel.yaml"
    path.write_text(
        f"providers:\n  oracle:\n    base_url: {base_url}\n    api_key: sk-service-test\n"
        "    models: [xai.grok-4, m.one]\n    models_mode: allowlist\n"
        "retries:\n  max_retries: 0\n" + KEYS
    )
    config = load_config(path, {}, required=True)
    context = ssl.create_default_context()
    CA.configure_trust(context)
    transport = Transport(lambda: context)
    names = tuple(p.name for p in config.providers)
    transport.configure(config.retries, config.failover, breakers_for(names, config.failover, {}))
    inventory = build_inventory(config.providers, {}, 0, config.aliases)
    settings = dataclasses.replace(default_settings(), config=config)
    return State(settings, inventory, transport, StreamRelay(transport))


def with_service(
    tmp_path: Path, scenario: Callable[[CallService, FakeOracle], Awaitable[None]], *answers: Answer
) -> None:
    async def main() -> None:
        async with FakeOracle(*answers) as oracle:
            state = state_for(tmp_path, oracle.base_url)
            try:
                await scenario(CallService(state), oracle)
            finally:
                await state.transport.close()

    asyncio.run(main())


def admitted(
    service: CallService, method: str, path: str, document: object = None, key: str = "gm-team-key"
) -> tuple[Call, Body]:
    call = Call(method, f"http://gomodel.local{path}", path, time.monotonic())
    content = json.dumps(document).encode() if document is not None else b""
    headers = {"content-type": "application/json", "content-length": str(len(content))}
    assert service.admit(call, method, path, headers, f"Bearer {key}", replay=False) is None
    return call, Body(content, "application/json", list(headers.items()))


def test_a_chat_call_is_sent_to_oracle_and_comes_back_as_sent(tmp_path: Path) -> None:
    async def scenario(service: CallService, oracle: FakeOracle) -> None:
        call, body = admitted(service, "POST", CHAT, {"model": "xai.grok-4", "messages": []})
        outcome = await service.serve(call, body)

        assert isinstance(outcome, Sent) and outcome.status == 200
        assert json.loads(outcome.body)["choices"][0]["message"]["content"] == "hi"
        (received,) = oracle.received
        assert received["headers"]["Authorization"] == "Bearer sk-service-test"
        entry = service.record(call, outcome.status)
        assert (entry.key, entry.provider, entry.model) == ("team", "oracle", "xai.grok-4")
        assert (entry.tokens_in, entry.tokens_out) == (3, 1)

    with_service(tmp_path, scenario, Answer(body=completion("xai.grok-4")))


def test_a_stream_is_handed_to_the_relay_and_nothing_is_sent_yet(tmp_path: Path) -> None:
    async def scenario(service: CallService, oracle: FakeOracle) -> None:
        document = {"model": "xai.grok-4", "messages": [], "stream": True}
        call, body = admitted(service, "POST", CHAT, document)
        outcome = await service.serve(call, body)

        assert isinstance(outcome, Streamed) and outcome.relay_path.startswith(PATH_PREFIX)
        assert call.route is not None and call.route.stream
        assert oracle.received == []

    with_service(tmp_path, scenario)


def test_the_models_list_is_answered_locally_for_the_key(tmp_path: Path) -> None:
    async def scenario(service: CallService, oracle: FakeOracle) -> None:
        call, body = admitted(service, "GET", "/v1/models")
        outcome = await service.serve(call, body)

        assert isinstance(outcome, Local) and outcome.status == 200
        assert [m["id"] for m in json.loads(outcome.body)["data"]] == ["xai.grok-4"]
        assert oracle.received == []

    with_service(tmp_path, scenario)


def test_a_model_the_key_may_not_use_is_refused_before_oracle(tmp_path: Path) -> None:
    async def scenario(service: CallService, oracle: FakeOracle) -> None:
        call, body = admitted(service, "POST", CHAT, {"model": "m.one", "messages": []})
        outcome = await service.serve(call, body)

        assert isinstance(outcome, Refused) and outcome.error.status == 403
        assert outcome.error.code is ErrorCode.MODEL_NOT_ALLOWED
        assert call.route is None and oracle.received == []

    with_service(tmp_path, scenario)


def test_a_stranger_is_refused_from_the_headers(tmp_path: Path) -> None:
    async def scenario(service: CallService, oracle: FakeOracle) -> None:
        call = Call("POST", "http://gomodel.local" + CHAT, CHAT, time.monotonic())
        with pytest.raises(GatewayError) as refused:
            service.admit(call, "POST", CHAT, {}, "Bearer wrong", replay=False)
        assert refused.value.status == 401 and call.request is None

    with_service(tmp_path, scenario)

"""The stream relay's waiting room: jobs are dropped, expire, and are capped."""

import asyncio
import ssl

import pytest
from gomodel_gateway import relay as relay_module
from gomodel_gateway.call import Call
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.inventory import Target
from gomodel_gateway.providers import Provider
from gomodel_gateway.relay import PATH_PREFIX, StreamRelay
from gomodel_gateway.routing import Endpoint, Route
from gomodel_gateway.transport import Transport

PROVIDER = Provider("oracle", "https://oracle.example/v1", "sk-oracle", ("m.one",))


def job(size: int) -> Call:
    body = b"x" * size
    route = Route(
        Endpoint.CHAT_COMPLETIONS, (Target(PROVIDER, "m.one"),), "m.one", True, {"oracle": body}
    )
    return Call("POST", "http://gomodel.local/v1/chat/completions", "/", 0.0, route=route)


def make_relay() -> StreamRelay:
    return StreamRelay(Transport(ssl.create_default_context))


def run(scenario) -> None:
    asyncio.run(scenario())


def test_a_job_whose_client_left_is_dropped_at_once() -> None:
    async def scenario() -> None:
        relay = make_relay()
        path = relay.register(job(1024))
        relay.discard(path)
        assert relay.jobs == {} and relay.pending_bytes == 0 and relay.expiries == {}
        relay.discard(path)  # twice is harmless

    run(scenario)


def test_an_unclaimed_job_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "UNCLAIMED_JOB_SECONDS", 0.05)

    async def scenario() -> None:
        relay = make_relay()
        relay.register(job(1024))
        assert relay.pending_bytes == 1024
        await asyncio.sleep(0.2)
        assert relay.jobs == {} and relay.pending_bytes == 0

    run(scenario)


def test_what_waits_is_capped_and_a_stream_over_the_cap_is_a_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay_module, "MAX_PENDING_BYTES", 10_000)

    async def scenario() -> None:
        relay = make_relay()
        first = relay.register(job(6_000))
        with pytest.raises(GatewayError) as busy:
            relay.register(job(6_000))
        relay.discard(first)
        assert relay.register(job(6_000)).startswith(PATH_PREFIX)  # room again
        assert (busy.value.status, busy.value.code) == (503, "gateway_busy")
        assert ("retry-after", "1") in busy.value.headers

    run(scenario)

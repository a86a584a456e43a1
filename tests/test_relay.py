"""The stream relay's waiting room: jobs are dropped, expire, and are capped."""

import asyncio

import pytest
from gomodel_gateway import relay as relay_module
from gomodel_gateway.config import Provider
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.inventory import Target
from gomodel_gateway.relay import PATH_PREFIX, StreamJob, StreamRelay
from gomodel_gateway.routing import Endpoint, Route
from gomodel_gateway.transport import Transport

PROVIDER = Provider("oracle", "https://oracle.example/v1", "sk-oracle", ("m.one",))


def job(size: int) -> StreamJob:
    body = b"x" * size
    route = Route(
        Endpoint.CHAT_COMPLETIONS, (Target(PROVIDER, "m.one"),), "m.one", True, {"oracle": body}
    )
    return StreamJob(route, [], Transport(lambda: None))  # type: ignore[arg-type, return-value]


def run(scenario) -> None:
    asyncio.run(scenario())


def test_a_job_whose_client_left_is_dropped_at_once() -> None:
    async def scenario() -> None:
        relay = StreamRelay()
        path = relay.register(job(1024))
        relay.discard(path)
        assert relay.jobs == {} and relay.pending_bytes == 0 and relay.expiries == {}
        relay.discard(path)  # twice is harmless

    run(scenario)


def test_an_unclaimed_job_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "UNCLAIMED_JOB_SECONDS", 0.05)

    async def scenario() -> None:
        relay = StreamRelay()
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
        relay = StreamRelay()
        first = relay.register(job(6_000))
        with pytest.raises(GatewayError) as busy:
            relay.register(job(6_000))
        relay.discard(first)
        assert relay.register(job(6_000)).startswith(PATH_PREFIX)  # room again
        assert (busy.value.status, busy.value.code) == (503, "gateway_busy")
        assert ("retry-after", "1") in busy.value.headers

    run(scenario)

"""Model discovery: parsing Oracle's /models answer, and asking the real simulator for it."""

import asyncio
import ssl
import time
from pathlib import Path

import pytest
from capture import CaptureServer
from conftest import CHICAGO_KEY, capture_url, openai_client
from gomodel_gateway.discovery import (
    Discovery,
    DiscoveryError,
    RedirectRefused,
    fetch_models,
    parse_models_response,
)
from gomodel_gateway.providers import Provider
from gomodel_gateway.transport import Transport
from processes import Simulator, start_gateway


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"object": "list", "data": [{"id": "a.b"}, {"id": "c.d"}]}', ("a.b", "c.d")),
        (b'{"data": []}', ()),
        (b'{"data": [{"id": "a.b"}, {"id": "a.b"}, {"id": 3}, {"id": "bad id"}, "x"]}', ("a.b",)),
    ],
)
def test_models_answers_are_parsed(body: bytes, expected: tuple[str, ...]) -> None:
    assert parse_models_response(body) == expected


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'{"items": []}', b'{"data": {}}', b"\xff"])
def test_unusable_models_answers_are_errors(body: bytes) -> None:
    with pytest.raises(DiscoveryError):
        parse_models_response(body)


def provider_for(simulator: Simulator, key: str = CHICAGO_KEY) -> Provider:
    return Provider("oracle", simulator.base_url(), key, ("xai.grok-4",))


def context_for(simulator: Simulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(simulator.ca))


async def fetch_async(provider: Provider, context: ssl.SSLContext) -> tuple[str, ...]:
    """Discovery on the gateway's own HTTP client, as the gateway runs it."""
    transport = Transport(lambda: context)
    try:
        return await fetch_models(transport, provider)
    finally:
        await transport.close()


def fetch(provider: Provider, context: ssl.SSLContext) -> tuple[str, ...]:
    return asyncio.run(fetch_async(provider, context))


def test_models_are_fetched_with_the_provider_key(chicago: Simulator) -> None:
    chicago.configure(list_models=True, models=["xai.grok-4", "openai.gpt-oss-120b"])
    models = fetch(provider_for(chicago), context_for(chicago))

    assert models == ("xai.grok-4", "openai.gpt-oss-120b")
    (received,) = chicago.requests()
    assert received["path"] == "/20231130/actions/v1/models"
    assert received["headers"]["authorization"] == f"Bearer {CHICAGO_KEY}"


@pytest.mark.parametrize(
    ("list_models", "key", "message"),
    [
        (False, CHICAGO_KEY, "answered 404"),  # Oracle's documented default for API keys
        (True, "sk-wrong", "answered 404"),
    ],
)
def test_failed_discovery_says_why(chicago: Simulator, list_models, key, message) -> None:
    chicago.configure(list_models=list_models)
    with pytest.raises(DiscoveryError, match=message):
        fetch(provider_for(chicago, key), context_for(chicago))


def test_a_redirected_models_call_is_refused_and_the_key_goes_nowhere(
    chicago: Simulator, capture: CaptureServer
) -> None:
    chicago.configure(list_models=True, redirects={"models": capture_url(capture, "/s?t=x")})
    with pytest.raises(RedirectRefused) as caught:
        fetch(provider_for(chicago), context_for(chicago))

    assert str(caught.value) == (
        "GET /models answered 302, a redirect to 127.0.0.1: redirect refused: the gateway does "
        "not follow redirects with the provider key"
    )
    assert capture.seen() == []
    assert len(chicago.requests()) == 1


def test_a_gateway_whose_models_call_redirects_logs_it_and_serves_its_configured_models(
    tmp_path: Path, chicago: Simulator, capture: CaptureServer
) -> None:
    chicago.configure(list_models=True, redirects={"models": capture_url(capture)})
    gateway = start_gateway(tmp_path, chicago.oracle_env("xai.grok-4"), ca=chicago.ca)
    try:
        deadline = time.monotonic() + 15
        while "model discovery unavailable" not in gateway.log():
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.1)
        ids = [m.id for m in openai_client(gateway).models.list().data]
    finally:
        gateway.stop()
    assert ids == ["xai.grok-4"]
    assert "provider oracle: model discovery unavailable (GET /models answered 302" in gateway.log()
    assert "redirect refused" in gateway.log()
    assert capture.seen() == []


def test_untrusted_certificate_is_a_discovery_error(chicago: Simulator) -> None:
    chicago.configure(list_models=True)
    with pytest.raises(DiscoveryError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(provider_for(chicago), ssl.create_default_context())


def test_refresh_reports_success_and_keeps_quiet_failures(chicago: Simulator) -> None:
    updates: list[tuple[str, tuple[str, ...]]] = []
    provider = provider_for(chicago)
    discovery = Discovery(
        (provider,),
        lambda p: fetch_async(p, context_for(chicago)),
        lambda name, models: updates.append((name, models)),
    )

    assert asyncio.run(discovery.refresh(provider)) is False
    chicago.configure(list_models=True, models=["m.one"])
    assert asyncio.run(discovery.refresh(provider)) is True
    assert updates == [("oracle", ("m.one",))]


def test_allowlist_providers_are_never_asked() -> None:
    allowlist = Provider("a", "https://h", "k", ("m",), models_mode="allowlist")
    fallback = Provider("f", "https://h", "k", ("m",))
    assert Discovery((allowlist, fallback), lambda p: (), lambda n, m: None).providers == (
        fallback,
    )

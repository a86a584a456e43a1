"""Operational settings without a running proxy: URLs with passwords taken from the
environment."""

import asyncio
import logging
from pathlib import Path

import dispatch
import pytest
from fake_oracle import Answer, FakeOracle, completion
from gomodel_gateway.addon import GoModel
from gomodel_gateway.options import holds_password
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons
from test_addon import CHAT, gateway_flow, with_gateway


def configured(tmp_path: Path, **options: str) -> GoModel:
    gateway = GoModel()
    config = tmp_path / "gomodel.yaml"
    config.write_text("")
    with taddons.context(gateway) as tctx:
        tctx.configure(gateway, gomodel_config=str(config), **options)
    return gateway


def test_urls_with_passwords_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOMODEL_REDIS_URL", "redis://:s3cret@127.0.0.1:6390/0")
    monkeypatch.setenv("GOMODEL_USAGE_DB", str(tmp_path / "from-env.db"))
    settings = configured(tmp_path).runtime.settings
    assert settings.redis_url == "redis://:s3cret@127.0.0.1:6390/0"
    assert settings.usage_db is not None
    assert settings.usage_db.location == str(tmp_path / "from-env.db")


def test_an_option_set_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOMODEL_REDIS_URL", "redis://127.0.0.1:6390/0")
    monkeypatch.setenv("GOMODEL_USAGE_DB", str(tmp_path / "from-env.db"))
    settings = configured(
        tmp_path, gomodel_redis_url="redis://127.0.0.1:6391/1", gomodel_usage_db="off"
    ).runtime.settings
    assert settings.redis_url == "redis://127.0.0.1:6391/1"
    assert settings.usage_db is None


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis://:pw@redis.internal:6379/0", True),
        ("rediss://user:pw@redis.internal/0", True),
        ("postgresql://u:pw@db/gomodel", True),
        ("postgresql://u@db/gomodel?password=pw", True),
        ("postgresql://u@db/gomodel", False),
        ("redis://redis.internal:6379/0", False),
        ("~/.gomodel/usage.db", False),
        ("", False),
    ],
)
def test_a_password_in_a_url_is_noticed(url: str, secret: bool) -> None:
    assert holds_password(url) is secret


def test_a_password_in_an_option_is_warned_about_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def start() -> None:
        gateway = GoModel()
        config = tmp_path / "gomodel.yaml"
        config.write_text("")
        with taddons.context(gateway, proxyserver.Proxyserver()) as tctx:
            tctx.configure(
                gateway,
                gomodel_config=str(config),
                gomodel_usage_db="off",
                gomodel_redis_url="redis://:s3cret@127.0.0.1:6390/0",
            )
            with caplog.at_level(logging.WARNING):
                await gateway.runtime.running()
            await gateway.runtime.done()

    asyncio.run(start())
    assert "gomodel_redis_url holds a password" in caplog.text
    assert "GOMODEL_REDIS_URL" in caplog.text and "s3cret" not in caplog.text


def test_a_call_admitted_before_its_key_is_revoked_is_refused_after(tmp_path: Path) -> None:
    """An upload under way when a reload removes its key: refused once its body is in (it
    used to be served)."""
    config = tmp_path / "gomodel.yaml"

    def keys(*names: str) -> None:
        listed = "".join(f"    {name}: {{key: gm-{name}-key}}\n" for name in names)
        config.write_text(config.read_text().split("server:")[0] + "server:\n  keys:\n" + listed)

    async def scenario(gateway: GoModel, oracle: FakeOracle) -> None:
        keys("alpha", "beta")
        gateway.runtime.reload_config_file()
        chat = {"model": "xai.grok-4", "messages": [{"role": "user", "content": "hi"}]}
        revoked = gateway_flow("POST", CHAT, chat, authorization="Bearer gm-alpha-key")
        kept = gateway_flow("POST", CHAT, chat, authorization="Bearer gm-beta-key")
        dispatch.requestheaders(gateway, revoked)
        dispatch.requestheaders(gateway, kept)
        keys("beta")
        gateway.runtime.reload_config_file()
        await dispatch.request(gateway, revoked)
        await dispatch.request(gateway, kept)
        assert revoked.response is not None and revoked.response.status_code == 401
        assert kept.response is not None and kept.response.status_code == 200
        assert len(oracle.received) == 1

    with_gateway(tmp_path, scenario, Answer(body=completion("xai.grok-4")))

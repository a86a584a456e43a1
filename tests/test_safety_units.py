"""Client keys, size limits, master-key config and reloads, without processes."""

import asyncio
import json
import logging
from pathlib import Path

import dispatch
import pytest
from gomodel_gateway.accesslog import STRANGER_LINE_BURST, AccessLog, AccessRecord
from gomodel_gateway.addon import GoModel
from gomodel_gateway.config import load_config
from gomodel_gateway.config_values import ConfigError
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.keys import MASTER, ClientKey, KeyRing, digest
from gomodel_gateway.request_checks import check_body_size, check_declared_body
from gomodel_gateway.sizes import parse_size
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons, tflow

KEYS = ("gm-key-one", "gm-key-two")


def ring(keys: tuple[str, ...]) -> KeyRing:
    return KeyRing(tuple(ClientKey(MASTER, digest(key)) for key in keys))


@pytest.mark.parametrize(
    ("authorization", "keys", "accepted"),
    [
        (None, (), True),
        ("Bearer anything", (), True),
        ("Bearer gm-key-one", KEYS, True),
        ("Bearer gm-key-two", KEYS, True),
        ("bearer  gm-key-two ", KEYS, True),
        (None, KEYS, False),
        ("", KEYS, False),
        ("Bearer", KEYS, False),
        ("Bearer ", KEYS, False),
        ("Bearer gm-key-on", KEYS, False),
        ("Bearer gm-key-one2", KEYS, False),
        ("Basic gm-key-one", KEYS, False),
        ("gm-key-one", KEYS, False),
        ("Bearer sk-oracle-key", KEYS, False),
        ("Bearer \xff\xfe", KEYS, False),
        ("Bearer \udcff\udcfe", KEYS, False),  # bytes ff fe, as mitmproxy decodes them
        ("Bearer gm-key-one\udcff", KEYS, False),
        ("Bearer \ud800", KEYS, False),  # a lone surrogate outside surrogateescape's range
        ("\udcff gm-key-one", KEYS, False),
        ("Bearer " + "k" * 1_000_000, KEYS, False),
        ("Bearer gm-key-", KEYS, False),  # a prefix of both keys
        ("Bearer \x00", KEYS, False),
        ("Bearer \udcff", ("\udcff",), True),  # a key with the same bytes still matches
    ],
)
def test_client_keys_are_checked(authorization, keys, accepted: bool) -> None:
    assert (ring(keys).identify(authorization) is not None) == accepted


# Header values as mitmproxy hands them over: any bytes, decoded with surrogateescape.
HEADER_VALUES = st.one_of(
    st.binary(max_size=200).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.text(st.characters(exclude_categories=()), max_size=200),  # surrogates included
    st.builds(lambda tail: "Bearer " + tail, st.text(st.characters(exclude_categories=()))),
)


@given(authorization=HEADER_VALUES)
def test_any_authorization_value_is_a_plain_401(authorization: str) -> None:
    if authorization.strip() in ("Bearer gm-key-one", "Bearer gm-key-two"):
        return
    assert ring(KEYS).identify(authorization) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10MiB", 10 * 1024 * 1024),
        ("10mib", 10 * 1024 * 1024),
        ("10 MB", 10_000_000),
        ("512KiB", 512 * 1024),
        ("1048576", 1048576),
        ("1.5k", 1536),
        ("2G", 2 * 1024**3),
    ],
)
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "10 parsecs", "-1", "0", "0MiB", "1e6"])
def test_bad_sizes_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("length", "encoding", "status"),
    [
        ("100", None, None),
        ("1000", None, None),
        ("1001", None, 413),
        (None, None, None),
        ("not-a-number", None, None),  # mitmproxy itself rejects malformed lengths
        ("10", "gzip", 415),
        ("10", "identity", None),
        (None, "br, gzip", 415),
    ],
)
def test_declared_bodies_are_refused_before_reading(length, encoding, status) -> None:
    if status is None:
        check_declared_body(length, encoding, 1000)
        return
    with pytest.raises(GatewayError) as caught:
        check_declared_body(length, encoding, 1000)
    assert caught.value.status == status


def test_buffered_bodies_over_the_limit_are_413() -> None:
    check_body_size(1000, 1000)
    with pytest.raises(GatewayError, match="at most 1000"):
        check_body_size(1001, 1000)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_master_keys_come_from_env_and_yaml(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "server:\n  master_keys: [a-key, '${EXTRA}', a-key]\n")
    loaded = load_config(config, {"GOMODEL_MASTER_KEY": "env-key", "EXTRA": "extra-key"})
    assert [key.name for key in loaded.keys.keys] == [MASTER] * 3
    assert [key.digest for key in loaded.keys.keys] == [
        digest(key) for key in ("env-key", "a-key", "extra-key")
    ]
    assert "env-key" not in repr(loaded)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server:\n  master_keys: ['${UNSET_KEY}']\n", r"master_keys\[0\] is empty \(UNSET_KEY"),
        ("server:\n  master_keys: ['']\n", r"master_keys\[0\] is empty"),
        ("server:\n  master_keys: key\n", "must be a list"),
        ("server:\n  master_key: [k]\n", "server.master_key: unknown key"),
        ("server: [k]\n", "server must be a mapping"),
    ],
)
def test_broken_master_keys_stop_the_gateway_instead_of_opening_it(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "c.yaml", text), {})


def flow_to(path: str, body: bytes = b"", **headers: str) -> http.HTTPFlow:
    method = "POST" if body else "GET"
    return tflow.tflow(req=http.Request.make(method, f"http://gomodel.local{path}", body, headers))


def test_master_key_is_required_before_the_body_is_read_except_for_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOMODEL_MASTER_KEY", "gm-secret")
    gateway = GoModel()
    with taddons.context(gateway) as tctx:
        tctx.configure(gateway, gomodel_config=str(write(tmp_path / "c.yaml", "")))
        refused = flow_to("/v1/chat/completions", b"{}", authorization="Bearer wrong")
        health = flow_to("/health")
        allowed = flow_to("/v1/models", authorization="Bearer gm-secret")
        for flow in (refused, health, allowed):
            dispatch.requestheaders(gateway, flow)
            asyncio.run(dispatch.request(gateway, flow))

    assert refused.response.status_code == 401
    assert refused.response.headers["www-authenticate"].startswith("Bearer")
    assert health.response.status_code == 200
    assert allowed.response.status_code == 200


def test_oversized_bodies_are_refused_from_their_headers(tmp_path: Path) -> None:
    gateway = GoModel()
    with taddons.context(gateway) as tctx:
        tctx.configure(
            gateway,
            gomodel_config=str(write(tmp_path / "c.yaml", "")),
            gomodel_max_body_size="1KiB",
        )
        flow = flow_to("/v1/chat/completions", b"x" * 2000)
        dispatch.requestheaders(gateway, flow)
    assert flow.response.status_code == 413
    assert json.loads(flow.response.content)["error"]["code"] == "request_too_large"


def test_a_broken_config_edit_is_logged_and_the_previous_config_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write(
        tmp_path / "c.yaml",
        "providers:\n  oracle:\n    base_url: https://h.example/v1\n    api_key: k\n"
        "    models: [m.one]\n",
    )
    gateway = GoModel()
    with taddons.context(gateway) as tctx:
        tctx.configure(gateway, gomodel_config=str(config))
        config.write_text("providers: [\n")
        with caplog.at_level(logging.ERROR):
            gateway.runtime.reload_config_file()
        assert "configuration not reloaded" in caplog.text
        assert gateway.runtime.inventory.models == {"oracle": ("m.one",)}

        config.write_text(config.read_text().replace("providers: [\n", "") or "providers: {}\n")
        gateway.runtime.reload_config_file()
        assert gateway.runtime.inventory.providers == ()


def test_listening_beyond_loopback_without_a_master_key_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def start() -> None:
        gateway = GoModel()
        with taddons.context(gateway, proxyserver.Proxyserver()) as tctx:
            tctx.configure(
                gateway, gomodel_config=str(write(tmp_path / "c.yaml", "")), listen_host="0.0.0.0"
            )
            with caplog.at_level(logging.WARNING):
                await gateway.runtime.running()
            await gateway.runtime.done()

    asyncio.run(start())
    assert "listening on 0.0.0.0 without a gateway key" in caplog.text


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v1/x\x1b[1A\x1b[2K\x1b]0;pwned\x07", "/v1/x\\u001b[1A\\u001b[2K\\u001b]0;pwned\\u0007"),
        ("/v1/\u202eevil", "/v1/\\u202eevil"),  # a bidi override would reorder the line
        ("/v1/a\rb\nc", "/v1/a\\u000db\\u000ac"),
        ("/v1/modèles/日本", "/v1/modèles/日本"),  # printable text stays as it is
    ],
)
def test_a_text_access_log_line_escapes_what_a_terminal_would_obey(
    tmp_path: Path, path: str, logged: str
) -> None:
    sink = tmp_path / "access.log"
    AccessLog("text", sink).write(AccessRecord("GET", path, 401, 0.001, error="invalid_api_key"))
    assert sink.read_text(encoding="utf-8") == (
        f"gomodel request 401 invalid_api_key GET {logged} opc-request-id=-\n"
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_lines_about_strangers_are_rate_limited_and_say_what_was_dropped(
    tmp_path: Path, log_format
) -> None:
    now = [0.0]
    sink = tmp_path / "access.log"
    log = AccessLog(log_format, sink, clock=lambda: now[0])
    stranger = AccessRecord("GET", "/v1/models", 401, 0.001, error="invalid_api_key")
    for _ in range(STRANGER_LINE_BURST + 50):
        log.write(stranger)
    for _ in range(10):  # a key holder's lines are never dropped
        log.write(AccessRecord("GET", "/v1/models", 200, 0.001, key="ci"))
    now[0] = 1.0
    log.write(stranger)
    lines = sink.read_text(encoding="utf-8").splitlines()
    assert len(lines) == STRANGER_LINE_BURST + 10 + 1
    if log_format == "json":
        assert json.loads(lines[-1])["strangers_dropped_before"] == 50
    else:
        assert lines[-1].endswith("(50 lines about strangers dropped before this one)")

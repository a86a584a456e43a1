"""Endpoint classification, body validation, model routing and the inventory listing."""

import json

import pytest
from gomodel_gateway import local
from gomodel_gateway.aliases import Alias
from gomodel_gateway.errors import GatewayError
from gomodel_gateway.inventory import build_inventory
from gomodel_gateway.keys import ClientKey
from gomodel_gateway.providers import Provider
from gomodel_gateway.routing import Endpoint, Request, classify, resolve_model, route

US = Provider("oracle", "https://us.example/20231130/actions/v1", "k-us", ("m.a", "m.shared"))
EU = Provider("oracle-eu", "https://eu.example/openai/v1", "k-eu", ("m.shared", "m.eu"))
INVENTORY = build_inventory((US, EU), {}, created=1700000000)
CHAT = Request(Endpoint.CHAT_COMPLETIONS)


@pytest.mark.parametrize(
    ("method", "path", "endpoint", "query", "model"),
    [
        ("GET", "/v1/models", Endpoint.MODELS, "", None),
        ("GET", "/v1/models/", Endpoint.MODELS, "", None),
        ("GET", "/v1/models/xai.grok-4", Endpoint.MODEL, "", "xai.grok-4"),
        ("GET", "/v1/models/oracle-eu%2Fm.eu", Endpoint.MODEL, "", "oracle-eu/m.eu"),
        ("GET", "/v1/models/oracle-eu/m.eu", Endpoint.MODEL, "", "oracle-eu/m.eu"),
        ("POST", "/v1/chat/completions", Endpoint.CHAT_COMPLETIONS, "", None),
        ("POST", "/v1/chat/completions?x=1&y=2", Endpoint.CHAT_COMPLETIONS, "x=1&y=2", None),
        ("POST", "/v1/responses", Endpoint.RESPONSES, "", None),
        ("GET", "/health", Endpoint.HEALTH, "", None),
    ],
)
def test_known_paths_are_classified(method, path, endpoint, query, model) -> None:
    assert classify(method, path) == Request(endpoint, query, model)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/v1/embeddings", 404, "unknown_url"),
        ("GET", "/", 404, "unknown_url"),
        ("POST", "/chat/completions", 404, "unknown_url"),
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
        ("POST", "/v1/models", 405, "method_not_allowed"),
        ("PUT", "/v1/responses", 405, "method_not_allowed"),
        ("POST", "/health", 405, "method_not_allowed"),
    ],
)
def test_unknown_paths_and_wrong_methods_are_refused(method, path, status, code) -> None:
    with pytest.raises(GatewayError) as caught:
        classify(method, path)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_unknown_path_error_lists_the_supported_endpoints() -> None:
    with pytest.raises(GatewayError) as caught:
        classify("POST", "/v1/embeddings")
    assert "POST /v1/chat/completions" in caught.value.message
    assert "GET /v1/models" in caught.value.message


def test_wrong_method_names_the_allowed_one() -> None:
    with pytest.raises(GatewayError) as caught:
        classify("GET", "/v1/responses")
    assert caught.value.headers == (("allow", "POST"),)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"", "invalid_body", None),
        (b"\xff\xfe", "invalid_body", None),
        (b"{not json", "invalid_json", None),
        (b"[" * 100_000, "invalid_json", None),  # deeper than Python's recursion limit
        (b'"a string"', "invalid_body", None),
        (b"[]", "invalid_body", None),
        (b"{}", "missing_model", "model"),
        (b'{"model": null}', "missing_model", "model"),
        (b'{"model": 3}', "invalid_type", "model"),
        (b'{"model": ""}', "invalid_model", "model"),
        (b'{"model": "m a"}', "invalid_model", "model"),
        (b'{"model": "../etc/passwd"}', "invalid_model", "model"),
        (b'{"model": "oracle/../x"}', "invalid_model", "model"),
        (b'{"model": "m%2Fa"}', "invalid_model", "model"),
        (b'{"model": "m.a\\r\\nHost: evil"}', "invalid_model", "model"),
        (b'{"model": "m.a", "stream": "true"}', "invalid_type", "stream"),
        (b'{"model": "m.a", "stream": 1}', "invalid_type", "stream"),
        (b'{"model": "m.a"}', "invalid_type", "messages"),
        (b'{"model": "m.a", "messages": "hi"}', "invalid_type", "messages"),
        (
            b'{"model": "m.a", "messages": [], "stream_options": []}',
            "invalid_type",
            "stream_options",
        ),
        (
            b'{"model": "m.a", "messages": [], "stream_options": 1}',
            "invalid_type",
            "stream_options",
        ),
        # what Python reads and the JSON standard has not: another parser may read it otherwise
        (b'{"model": "m.a", "messages": [], "temperature": NaN}', "invalid_json", None),
        (b'{"model": "m.a", "messages": [], "top_p": -Infinity}', "invalid_json", None),
        # output limits are whole numbers a budget can count and a store can hold
        (b'{"model": "m.a", "messages": [], "max_tokens": 2000.0}', "invalid_type", "max_tokens"),
        (
            b'{"model": "m.a", "messages": [], "max_completion_tokens": 1e30}',
            "invalid_type",
            "max_completion_tokens",
        ),
        (b'{"model": "m.a", "messages": [], "max_tokens": "9"}', "invalid_type", "max_tokens"),
        (b'{"model": "m.a", "messages": [], "max_tokens": true}', "invalid_type", "max_tokens"),
        (
            b'{"model": "m.a", "messages": [], "max_tokens": 2147483648}',
            "integer_above_max_value",
            "max_tokens",
        ),
    ],
)
def test_bad_bodies_are_400_with_what_is_wrong(body: bytes, code: str, param) -> None:
    with pytest.raises(GatewayError) as caught:
        route(INVENTORY, CHAT, body)
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, code, param)


@pytest.mark.parametrize(
    ("model", "providers", "upstream_model"),
    [
        ("m.a", ["oracle"], "m.a"),
        ("m.shared", ["oracle", "oracle-eu"], "m.shared"),  # preferred first, then failover
        ("m.eu", ["oracle-eu"], "m.eu"),
        ("oracle-eu/m.shared", ["oracle-eu"], "m.shared"),  # pinned: that provider only
        ("oracle/m.shared", ["oracle"], "m.shared"),
        ("oracle-eu/m.eu", ["oracle-eu"], "m.eu"),
    ],
)
def test_models_route_to_their_providers(model: str, providers, upstream_model: str) -> None:
    candidates = resolve_model(INVENTORY, model)
    assert [t.provider.name for t in candidates] == providers
    assert {t.upstream_model for t in candidates} == {upstream_model}


@pytest.mark.parametrize(
    ("inventory", "model", "message"),
    [
        (INVENTORY, "xai.grok-99", "does not exist on this gateway (available: m.a, m.shared"),
        (INVENTORY, "oracle-eu/m.a", "Provider 'oracle-eu' does not serve model 'm.a'"),
        (INVENTORY, "nobody/xai.grok-99", "'nobody/xai.grok-99' does not exist"),
        (build_inventory((), {}, 0), "m.a", "no Oracle provider is configured"),
        (
            build_inventory((Provider("oracle", "https://h", "k", ()),), {}, 0),
            "m.a",
            "no models are configured",
        ),
    ],
)
def test_unroutable_models_are_404_saying_how_to_add_them(inventory, model, message) -> None:
    with pytest.raises(GatewayError) as caught:
        resolve_model(inventory, model)
    assert caught.value.status == 404 and caught.value.code == "model_not_found"
    assert message in caught.value.message
    assert "ORACLE_MODELS" in caught.value.message


def test_route_keeps_the_clients_bytes_unless_the_model_is_rewritten() -> None:
    body = b'{"model":"m.a",  "messages":[{"role":"user","content":"h\\u00e9"}]}'
    assert route(INVENTORY, CHAT, body).body is body

    pinned = route(INVENTORY, CHAT, b'{"model": "oracle-eu/m.eu", "stream": true, "messages": []}')
    assert json.loads(pinned.body) == {"model": "m.eu", "stream": True, "messages": []}
    assert pinned.stream is True
    assert pinned.requested_model == "oracle-eu/m.eu"


def test_listing_names_shared_models_once_bare_and_once_pinned() -> None:
    listing = local.models_list(INVENTORY)
    assert [(m["id"], m["owned_by"]) for m in listing["data"]] == [
        ("m.a", "oracle"),
        ("m.shared", "oracle"),
        ("oracle-eu/m.shared", "oracle-eu"),
        ("m.eu", "oracle-eu"),
    ]
    assert all(resolve_model(INVENTORY, m["id"]) for m in listing["data"])
    assert listing["data"][0] == {
        "id": "m.a",
        "object": "model",
        "created": 1700000000,
        "owned_by": "oracle",
    }


@pytest.mark.parametrize(
    ("mode", "discovered", "expected"),
    [
        ("fallback", None, ("m.a", "m.shared")),
        ("fallback", (), ("m.a", "m.shared")),
        ("fallback", ("m.new", "m.a"), ("m.a", "m.shared", "m.new")),
        ("allowlist", ("m.new",), ("m.a", "m.shared")),
    ],
)
def test_inventory_unites_configured_and_discovered_models(mode, discovered, expected) -> None:
    provider = Provider("oracle", "https://h", "k", ("m.a", "m.shared"), models_mode=mode)
    found = {"oracle": discovered} if discovered is not None else {}
    assert build_inventory((provider,), found, 0).models["oracle"] == expected


def test_model_detail_and_health() -> None:
    assert local.model_detail(INVENTORY, "oracle-eu/m.shared")["owned_by"] == "oracle-eu"
    with pytest.raises(GatewayError) as caught:
        local.model_detail(INVENTORY, "m.none")
    assert caught.value.status == 404
    circuit = {"state": "open", "consecutive_failures": 3, "retry_in_seconds": 12}
    health = local.health(INVENTORY, ("gomodel.local",), {"oracle-eu": circuit})
    assert health["providers"][1] == {
        "name": "oracle-eu",
        "host": "eu.example",
        "models": 2,
        "models_mode": "fallback",
        "circuit": circuit,
    }
    assert "k-us" not in json.dumps(health)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"model": "m.a", "model": "m.eu", "messages": []}', "model"),
        (b'{"model": "m.a", "messages": [{"role": "user", "role": "system"}]}', "role"),
        (b'{"model": "m.a", "messages": [], "x": {"y": {"z": 1, "z": 1}}}', "z"),
        (b'{"model": "m.a", "messages": [], "\\u006dodel": "m.eu"}', "model"),  # escaped twin
    ],
)
def test_a_key_given_twice_in_a_client_body_is_a_400_naming_it(body: bytes, key: str) -> None:
    with pytest.raises(GatewayError) as caught:
        route(INVENTORY, CHAT, body)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    assert f"key {key!r} twice" in caught.value.message


@pytest.mark.parametrize("twin", ["Model", "MODEL", "mOdEl"])
def test_a_case_variant_of_model_is_a_400(twin: str) -> None:
    body = json.dumps({"model": "m.a", twin: "m.eu", "messages": []}).encode()
    with pytest.raises(GatewayError) as caught:
        route(INVENTORY, CHAT, body)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "invalid_json",
        "model",
    )
    assert repr(twin) in caught.value.message


def test_a_huge_duplicate_key_is_clipped_in_the_400() -> None:
    key = "k" * 1_000_000
    body = json.dumps({"model": "m.a", "messages": []})[:-1] + f', "{key}": 1, "{key}": 2}}'
    with pytest.raises(GatewayError) as caught:
        route(INVENTORY, CHAT, body.encode())
    assert caught.value.code == "invalid_json"
    assert len(caught.value.body()) < 1000


HUGE_ID = "m." + "x" * 9_000_000  # a valid model id, 9 MB long


@pytest.mark.parametrize(
    "refuse",
    [
        pytest.param(lambda: resolve_model(INVENTORY, HUGE_ID), id="unknown-model"),
        pytest.param(lambda: resolve_model(INVENTORY, "oracle-eu/" + HUGE_ID), id="pinned"),
        pytest.param(lambda: resolve_model(build_inventory((), {}, 0), HUGE_ID), id="no-provider"),
        pytest.param(
            lambda: resolve_model(
                build_inventory((Provider("oracle", "https://h", "k", ()),), {}, 0), HUGE_ID
            ),
            id="no-models",
        ),
        pytest.param(
            lambda: route(INVENTORY, CHAT, json.dumps({"model": HUGE_ID, "messages": []}).encode()),
            id="route",
        ),
        pytest.param(
            lambda: route(INVENTORY, CHAT, json.dumps({"model": HUGE_ID + " "}).encode()),
            id="invalid-id",
        ),
        pytest.param(lambda: local.model_detail(INVENTORY, HUGE_ID), id="model-detail"),
        pytest.param(lambda: classify("GET", "/v1/" + HUGE_ID), id="unknown-path"),
        pytest.param(lambda: classify("POST", "/v1/models/" + HUGE_ID), id="wrong-method"),
        pytest.param(lambda: classify("X" * 9_000_000, "/v1/models"), id="huge-method"),
    ],
)
def test_a_9_mb_model_id_or_path_is_echoed_clipped(refuse) -> None:
    with pytest.raises(GatewayError) as caught:
        refuse()
    assert len(caught.value.body()) < 1000
    assert "... (9000" in caught.value.message


ALIASED = build_inventory(
    INVENTORY.providers,
    {},
    0,
    (
        Alias("gpt-4o", "oracle-eu/m.shared", "aliases.gpt-4o"),
        Alias("gpt-*", "m.a", "aliases.gpt-*"),
        Alias("m.a", "m.eu", "aliases.m.a"),  # an exact alias beats a served id
        Alias("*", "m.eu", "aliases.*"),  # a catch-all never hides a served id
        Alias("claude", "m.gone", "GOMODEL_ALIASES"),
    ),
)


@pytest.mark.parametrize(
    ("requested", "providers", "upstream"),
    [
        ("gpt-4o", ["oracle-eu"], "m.shared"),  # exact beats the glob, and may pin a region
        ("gpt-4o-mini", ["oracle"], "m.a"),  # the first glob that matches
        ("m.a", ["oracle-eu"], "m.eu"),
        ("m.shared", ["oracle", "oracle-eu"], "m.shared"),  # served: no glob applies
        ("anything-else", ["oracle-eu"], "m.eu"),
    ],
)
def test_aliases_resolve_exact_then_served_then_globs(requested, providers, upstream) -> None:
    candidates = resolve_model(ALIASED, requested)

    assert [t.provider.name for t in candidates] == providers
    assert {t.upstream_model for t in candidates} == {upstream}


@pytest.mark.parametrize(
    ("patterns", "allowed"),
    [
        (("m.b*", "gpt-4o-mini"), True),  # the exact entry: the name the client sent
        (("gpt-4o*",), False),  # a pattern does not reach the glob's target by name
        (("m.a",), True),  # the glob's target
    ],
)
def test_a_key_through_the_glob_alias_gpt_star(patterns, allowed) -> None:
    planned = route(ALIASED, CHAT, b'{"model": "gpt-4o-mini", "messages": []}')
    key = ClientKey("ci", b"", patterns)

    assert planned.alias == "gpt-*"
    assert key.allows(*planned.model_names) == allowed
    assert key.allows(*local.names_for_key(ALIASED, "gpt-4o-mini")) == allowed  # /v1/models


@pytest.mark.parametrize(
    "model", ["gpt-4o-mini\n", "m.a\n", "gpt-4o\r\n", "gpt-\x00", "gpt-\x1b[2J"]
)
def test_a_model_name_with_a_control_character_is_a_400(model: str) -> None:
    """A trailing newline passed the model id check ($ matches before it), went through the
    glob alias gpt-* and broke scripts/usage's table."""
    body = json.dumps({"model": model, "messages": []}).encode()
    with pytest.raises(GatewayError) as refused:
        route(ALIASED, CHAT, body)
    assert (refused.value.status, refused.value.param, refused.value.code) == (
        400,
        "model",
        "invalid_model",
    )


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/chat/completions?x=1&y=2", "x"),
        ("/v1/responses?api-version=2024-10-21", "api-version"),
        ("/v1/responses?stream", "stream"),
        ("/v1/responses?a%26b=1", "a&b"),
        ("/v1/chat/completions?&", None),
    ],
)
def test_a_model_call_with_a_query_string_is_a_400_naming_it(path: str, param) -> None:
    """Resource calls allowlist their query parameters; model calls take none."""
    request = classify("POST", path)
    body = b'{"model": "m.a", "messages": [], "input": "hi"}'
    with pytest.raises(GatewayError) as refused:
        route(INVENTORY, request, body)
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        400,
        "invalid_query",
        param,
    )


def test_a_model_call_without_a_query_string_sends_none() -> None:
    assert route(INVENTORY, classify("POST", "/v1/responses?"), b'{"model": "m.a"}').query == ""


def test_exact_aliases_are_listed_once_their_target_is_served() -> None:
    listed = [m.id for m in ALIASED.listing]

    assert "gpt-4o" in listed and "m.a" in listed and listed.count("m.a") == 1
    assert "gpt-*" not in listed and "*" not in listed and "claude" not in listed


def test_an_alias_to_a_model_nobody_serves_is_a_clear_404() -> None:
    with pytest.raises(GatewayError) as caught:
        resolve_model(ALIASED, "claude")

    assert "'claude' is an alias (GOMODEL_ALIASES) of 'm.gone'" in caught.value.message


@pytest.mark.parametrize("name", ["gpt-4o-mini", "gpt-5.6-luna", "claude-3-5-sonnet", "o3"])
def test_an_unknown_openai_name_gets_alias_advice_not_oracle_advice(name: str) -> None:
    with pytest.raises(GatewayError) as caught:
        resolve_model(INVENTORY, name)

    assert f"GOMODEL_ALIASES='{name}=<model>'" in caught.value.message
    assert "ORACLE_MODELS" not in caught.value.message
    assert "available: m.a" in caught.value.message

"""Configuration parsing: env, YAML, precedence, expansion, suffixed env and bad input."""

import re
from pathlib import Path

import pytest
from gomodel_gateway.config import load_config
from gomodel_gateway.config_expansion import expand_variables
from gomodel_gateway.config_file import parse_yaml
from gomodel_gateway.config_reload import check_reload
from gomodel_gateway.config_values import ConfigError
from gomodel_gateway.keys import MASTER, ClientKey, KeyRing, digest
from gomodel_gateway.provider_blocks import parse_model_list
from gomodel_gateway.providers import GatewayConfig

CHICAGO = "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com/20231130/actions/v1"
FRANKFURT = "https://inference.generativeai.eu-frankfurt-1.oci.oraclecloud.com/openai/v1"


def providers(yaml_text: str | None, env: dict[str, str], tmp_path: Path) -> list[tuple]:
    path = None
    if yaml_text is not None:
        path = tmp_path / "config.yaml"
        path.write_text(yaml_text)
    config = load_config(path, env)
    return [(p.name, p.base_url, p.api_key, p.models) for p in config.providers]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a,b,c", ("a", "b", "c")),
        (" a , b ,, c ", ("a", "b", "c")),
        ("a,b,a,c,b", ("a", "b", "c")),
        ("", ()),
        (" , ,", ()),
        (["x.one", " x.two ", "x.one"], ("x.one", "x.two")),
        ("openai.gpt-oss-120b,xai.grok-4", ("openai.gpt-oss-120b", "xai.grok-4")),
    ],
)
def test_model_lists_are_trimmed_and_deduplicated_in_order(value, expected) -> None:
    assert parse_model_list(value, "test") == expected


@pytest.mark.parametrize("bad", ["has space", "tab\tmodel", "a/../b", "-dash", "new\nline", "%2e"])
def test_model_ids_with_unsafe_characters_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a valid model id"):
        parse_model_list([bad], "ORACLE_MODELS")


@pytest.mark.parametrize(
    ("text", "env", "expected", "unset"),
    [
        ("${A}", {"A": "1"}, "1", ()),
        ("${A}", {}, "", ("A",)),
        ("${A}", {"A": ""}, "", ("A",)),
        ("${A:-fallback}", {}, "fallback", ()),
        ("${A:-fallback}", {"A": "set"}, "set", ()),
        ("${A:-}", {}, "", ()),
        ("https://${HOST}/v1/${A:-x}", {"HOST": "h"}, "https://h/v1/x", ()),
        ("no variables", {}, "no variables", ()),
        ("$A is not expanded", {"A": "1"}, "$A is not expanded", ()),
    ],
)
def test_variables_expand_with_defaults(text, env, expected, unset) -> None:
    assert expand_variables(text, env) == (expected, unset)


@pytest.mark.parametrize(
    ("yaml_text", "env", "expected"),
    [
        pytest.param(
            None,
            {"ORACLE_BASE_URL": CHICAGO, "ORACLE_API_KEY": "k", "ORACLE_MODELS": "a, b,a"},
            [("oracle", CHICAGO, "k", ("a", "b"))],
            id="env-only",
        ),
        pytest.param(
            None,
            {"ORACLE_BASE_URL": CHICAGO + "/", "ORACLE_API_KEY": "k"},
            [("oracle", CHICAGO, "k", ())],
            id="trailing-slash-dropped",
        ),
        pytest.param(
            f"providers:\n  oracle:\n    type: oracle\n    base_url: {CHICAGO}\n"
            "    api_key: yaml-key\n    models: [a, b]\n",
            {"ORACLE_API_KEY": "env-key"},
            [("oracle", CHICAGO, "env-key", ("a", "b"))],
            id="env-overrides-yaml-field-by-field",
        ),
        pytest.param(
            f"providers:\n  oracle:\n    base_url: {CHICAGO}\n    api_key: k\n    models: [a, b]\n",
            {"ORACLE_MODELS": "c"},
            [("oracle", CHICAGO, "k", ("c",))],
            id="ORACLE_MODELS-overrides-yaml-models",
        ),
        pytest.param(
            f"providers:\n  oracle:\n    base_url: {CHICAGO}\n    api_key: k\n",
            {"ORACLE_API_KEY": "", "ORACLE_MODELS": "  "},
            [("oracle", CHICAGO, "k", ())],
            id="empty-env-counts-as-unset",
        ),
        pytest.param(
            "providers:\n  oracle:\n    base_url: ${URL}\n    api_key: ${KEY:-dflt}\n"
            "    models: ${MODELS}\n",
            {"URL": CHICAGO, "MODELS": "x,y"},
            [("oracle", CHICAGO, "dflt", ("x", "y"))],
            id="yaml-expansion",
        ),
        pytest.param(
            None,
            {
                "ORACLE_EU_WEST_BASE_URL": FRANKFURT,
                "ORACLE_EU_WEST_API_KEY": "k2",
                "ORACLE_EU_WEST_MODELS": "m",
                "ORACLE_BASE_URL": CHICAGO,
                "ORACLE_API_KEY": "k1",
                "ORACLE_AP_BASE_URL": CHICAGO,
                "ORACLE_AP_API_KEY": "k3",
            },
            [
                ("oracle", CHICAGO, "k1", ()),
                ("oracle-ap", CHICAGO, "k3", ()),
                ("oracle-eu-west", FRANKFURT, "k2", ("m",)),
            ],
            id="suffixed-env-providers-sorted-after-oracle",
        ),
        pytest.param(
            f"providers:\n  zeta:\n    base_url: {FRANKFURT}\n    api_key: z\n"
            f"  oracle-eu:\n    base_url: {FRANKFURT}\n    api_key: yaml\n",
            {"ORACLE_EU_API_KEY": "env", "ORACLE_BASE_URL": CHICAGO, "ORACLE_API_KEY": "k"},
            [
                ("zeta", FRANKFURT, "z", ()),
                ("oracle-eu", FRANKFURT, "env", ()),
                ("oracle", CHICAGO, "k", ()),
            ],
            id="yaml-order-then-env-only-providers",
        ),
        pytest.param(
            None,
            {"ORACLE_HOME": "/u01/app/oracle", "ORACLE_SID": "ORCL"},
            [],
            id="unrelated-oracle-variables-ignored",
        ),
        pytest.param("", {}, [], id="empty-file"),
        pytest.param("providers:\n", {}, [], id="no-providers"),
    ],
)
def test_providers_from_env_and_yaml(yaml_text, env, expected, tmp_path: Path) -> None:
    assert providers(yaml_text, env, tmp_path) == expected


@pytest.mark.parametrize(
    ("yaml_text", "env", "warning"),
    [
        pytest.param(
            None,
            {"ORACLE_MODELS": "a"},
            "provider 'oracle' skipped: base_url or region is not set (set ORACLE_BASE_URL or "
            "ORACLE_REGION); api_key is not set (set ORACLE_API_KEY)",
            id="env-models-only",
        ),
        pytest.param(
            f"providers:\n  oracle-eu:\n    base_url: {FRANKFURT}\n    api_key: ${{EU_KEY}}\n",
            {},
            "provider 'oracle-eu' skipped: api_key is empty (EU_KEY not set)",
            id="unresolved-variable-named",
        ),
        pytest.param(
            None,
            {"ORACLE_EU_BASE_URL": FRANKFURT},
            "provider 'oracle-eu' skipped: api_key is not set "
            "(set ORACLE_EU_API_KEY or providers.oracle-eu.api_key)",
            id="suffixed-missing-key",
        ),
    ],
)
def test_incomplete_providers_are_skipped_with_a_warning(yaml_text, env, warning, tmp_path) -> None:
    path = None
    if yaml_text is not None:
        path = tmp_path / "config.yaml"
        path.write_text(yaml_text)
    config = load_config(path, env)
    assert config.providers == ()
    assert config.warnings == (warning,)


@pytest.mark.parametrize(
    ("yaml_text", "env", "message"),
    [
        pytest.param("providers: [\n", {}, r"is not valid YAML at line 2", id="invalid-yaml"),
        pytest.param(
            f"providers:\n  x:\n    type: openai\n    base_url: {CHICAGO}\n    api_key: k\n",
            {},
            r"providers\.x\.type: unknown provider type 'openai'",
            id="unknown-type",
        ),
        pytest.param(
            "providers:\n  x:\n    base_url: http://plain.example/v1\n    api_key: k\n",
            {},
            r"providers\.x\.base_url: base URL 'http://plain.example/v1' is not an https URL",
            id="http-base-url",
        ),
        pytest.param(
            None,
            {"ORACLE_BASE_URL": "inference.example.com", "ORACLE_API_KEY": "k"},
            r"environment variable ORACLE_BASE_URL: base URL .* is not an https URL",
            id="env-base-url-without-scheme",
        ),
        pytest.param(
            f"providers:\n  x:\n    base_url: {CHICAGO}\n    apikey: k\n",
            {},
            r"providers\.x\.apikey: unknown key",
            id="misspelled-key",
        ),
        pytest.param("provider:\n  x: {}\n", {}, r"unknown top-level key 'provider'", id="top-key"),
        pytest.param("- a\n- b\n", {}, r"the top level must be a mapping", id="list-document"),
        pytest.param("providers: [a]\n", {}, r"providers must be a mapping", id="providers-list"),
        pytest.param(
            "providers:\n  Bad Name:\n    api_key: k\n", {}, r"provider name 'Bad Name'", id="name"
        ),
        pytest.param(
            f"providers:\n  x:\n    base_url: {CHICAGO}\n    api_key: k\n    models_mode: all\n",
            {},
            r"models_mode must be one of fallback, allowlist",
            id="models-mode",
        ),
        pytest.param(
            "models_refresh_seconds: -1\n", {}, r"must be a positive number", id="refresh"
        ),
        pytest.param(
            f"providers:\n  x:\n    base_url: {CHICAGO}\n    api_key: k\n    models: 3\n",
            {},
            r"providers\.x\.models: must be a list",
            id="models-type",
        ),
    ],
)
def test_bad_configuration_stops_with_a_message_naming_file_and_key(
    yaml_text, env, message, tmp_path: Path
) -> None:
    path = None
    if yaml_text is not None:
        path = tmp_path / "config.yaml"
        path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path, env)
    if path is not None:
        assert str(path) in str(caught.value)


def test_missing_default_file_is_fine_but_an_explicit_one_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    assert load_config(missing, {}).providers == ()
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(missing, {}, required=True)


def test_models_settings_have_top_level_defaults_and_per_provider_overrides(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "models_mode: allowlist\nmodels_refresh_seconds: 30\nproviders:\n"
        f"  a:\n    base_url: {CHICAGO}\n    api_key: k\n"
        f"  b:\n    base_url: {CHICAGO}\n    api_key: k\n    models_mode: fallback\n"
        "    models_refresh_seconds: 5\n"
    )
    a, b = load_config(path, {}).providers
    assert (a.models_mode, a.models_refresh_seconds) == ("allowlist", 30.0)
    assert (b.models_mode, b.models_refresh_seconds) == ("fallback", 5.0)


def test_provider_repr_never_shows_the_key() -> None:
    (provider,) = load_config(
        None, {"ORACLE_BASE_URL": CHICAGO, "ORACLE_API_KEY": "sk-secret"}
    ).providers
    assert "sk-secret" not in repr(provider)
    assert provider.host == "inference.generativeai.us-chicago-1.oci.oraclecloud.com"


@pytest.mark.parametrize(
    ("region", "base_url", "warning"),
    [
        (
            "us-chicago-1",
            "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com/20231130/actions/v1",
            None,
        ),
        (
            "eu-frankfurt-2",
            "https://inference.generativeai.eu-frankfurt-2.oci.oraclecloud.eu/20231130/actions/v1",
            None,
        ),
        (
            "uk-gov-london-1",
            "https://inference.generativeai.uk-gov-london-1.oci.oraclegovcloud.uk/20231130/actions/v1",
            None,
        ),
        (
            "ap-sydney-1",
            "https://inference.generativeai.ap-sydney-1.oci.oraclecloud.com/20231130/actions/v1",
            "provider 'oracle': ap-sydney-1 is not a region known to offer Generative AI",
        ),
        (
            "me-dubai-1",
            "https://inference.generativeai.me-dubai-1.oci.oraclecloud.com/20231130/actions/v1",
            "provider 'oracle': Oracle documents no OpenAI-compatible API in me-dubai-1",
        ),
    ],
)
def test_a_region_builds_the_inference_url_of_its_realm(region, base_url, warning) -> None:
    config = load_config(None, {"ORACLE_REGION": region, "ORACLE_API_KEY": "k"})
    (provider,) = config.providers
    assert (provider.base_url, provider.region) == (base_url, region)
    if warning is None:
        assert config.warnings == ()
    else:
        (only,) = config.warnings
        assert only.startswith(warning)


@pytest.mark.parametrize(
    "region", ["Chicago", "us_chicago_1", "us-chicago", "../x", "us-chicago-1a"]
)
def test_a_malformed_region_is_an_error(region: str) -> None:
    with pytest.raises(ConfigError, match=r"ORACLE_REGION: .* is not a region identifier"):
        load_config(None, {"ORACLE_REGION": region, "ORACLE_API_KEY": "k"})


def test_a_suffixed_region_variable_defines_a_provider() -> None:
    (provider,) = load_config(
        None, {"ORACLE_EU_REGION": "eu-frankfurt-1", "ORACLE_EU_API_KEY": "k"}
    ).providers
    assert provider.name == "oracle-eu" and provider.host.startswith("inference.generativeai.eu-")


def test_the_region_is_read_from_an_oracle_base_url() -> None:
    (provider,) = load_config(None, {"ORACLE_BASE_URL": FRANKFURT, "ORACLE_API_KEY": "k"}).providers
    assert provider.region == "eu-frankfurt-1"


OCI_BLOCK = (
    "providers:\n  oracle:\n    region: us-chicago-1\n    api_key: k\n"
    "    discovery: oci\n    compartment_id: ocid1.compartment.oc1..aaaa\n"
)


def test_oci_discovery_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        OCI_BLOCK
        + "    oci_profile: DEV\n    project: ocid1.generativeaiproject.oc1.us-chicago-1.x\n"
    )
    (provider,) = load_config(path, {}).providers
    assert provider.discovery == "oci" and provider.oci_profile == "DEV"
    assert provider.oci_config_file == "~/.oci/config"
    assert provider.control_plane_url == (
        "https://generativeai.us-chicago-1.oci.oraclecloud.com/20231130"
    )
    assert provider.project == "ocid1.generativeaiproject.oc1.us-chicago-1.x"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    models_mode: allowlist\n", "discovery: oci needs models_mode: fallback"),
        ("    project: my project\n", "must be a non-empty string without spaces"),
        ("    project: proj-1\n", "is not an OCID"),
    ],
)
def test_bad_oci_settings_are_errors(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(OCI_BLOCK + extra)
    with pytest.raises(ConfigError, match=message):
        load_config(path, {})


def test_an_unknown_discovery_method_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(OCI_BLOCK.replace("discovery: oci", "discovery: magic"))
    with pytest.raises(ConfigError, match="must be one of models, oci"):
        load_config(path, {})


def test_oci_discovery_needs_a_compartment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(OCI_BLOCK.replace("    compartment_id: ocid1.compartment.oc1..aaaa\n", ""))
    with pytest.raises(ConfigError, match="needs compartment_id"):
        load_config(path, {})


def test_model_rules_layer_builtin_then_top_level_then_provider(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "min_output_tokens: {'openai.gpt-oss-*': 2048, 'meta.*': 64}\n"
        "parameter_map: {'openai.*': {max_tokens: max_completion_tokens}}\n"
        "providers:\n"
        f"  a: {{base_url: '{CHICAGO}', api_key: k}}\n"
        f"  b: {{base_url: '{CHICAGO}', api_key: k,\n"
        "      min_output_tokens: {'openai.gpt-oss-20b': 512}}\n"
    )
    a, b = load_config(path, {}).providers
    assert a.rules.minimum_for("openai.gpt-oss-120b") == 2048
    assert a.rules.minimum_for("xai.grok-4-fast-reasoning") == 1024  # built in
    assert a.rules.minimum_for("xai.grok-4") is None
    assert b.rules.minimum_for("openai.gpt-oss-20b") == 512
    assert b.rules.renames_for("openai.gpt-oss-20b") == {"max_tokens": "max_completion_tokens"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_output_tokens: {'x.*': 0}\n", "must be a whole number >= 1"),
        ("min_output_tokens: [1]\n", "must map model patterns to token counts"),
        ("parameter_map: {'x.*': [a]}\n", "must map parameter names"),
    ],
)
def test_bad_model_rules_are_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, {})


PROVIDER = f"providers:\n  oracle:\n    base_url: {CHICAGO}\n    api_key: k\n"


@pytest.mark.parametrize(
    ("yaml_text", "line", "key"),
    [
        pytest.param("server: {}\nserver: {}\n", 2, "server", id="top-level"),
        pytest.param(PROVIDER + "  oracle:\n    api_key: evil\n", 5, "oracle", id="providers"),
        pytest.param(PROVIDER + "    api_key: other\n", 5, "api_key", id="provider-block"),
        pytest.param(
            "server:\n  master_keys: [a]\n  master_keys: []\n", 3, "master_keys", id="server"
        ),
        pytest.param("timeouts:\n  connect: 1\n  connect: 2\n", 3, "connect", id="nested"),
        pytest.param("failover: {enabled: true, enabled: false}\n", 1, "enabled", id="flow"),
        pytest.param(
            "parameter_map:\n  'm.*': [{a: b, a: c}]\n", 2, "a", id="mapping-inside-a-list"
        ),
    ],
)
def test_a_key_given_twice_is_an_error_naming_file_line_and_key(
    yaml_text: str, line: int, key: str, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = str(caught.value)
    assert str(path) in message
    assert f"at line {line}," in message
    assert f"duplicate key {key!r}" in message


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    text = "base: &base {connect: 1, idle: 2}\ntimeouts:\n  <<: *base\n  connect: 5\n"
    assert parse_yaml(text, "c.yaml")["timeouts"] == {"connect": 5, "idle": 2}


def test_a_long_duplicate_key_is_clipped_in_the_message() -> None:
    key = "k" * 1000  # YAML allows implicit keys up to 1024 characters
    with pytest.raises(ConfigError, match=r"duplicate key 'k+\.\.\.") as caught:
        parse_yaml(f"{key}: 1\n{key}: 2\n", "c.yaml")
    assert len(str(caught.value)) < 300


def unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that exists but cannot be read (chmod alone does not stop root)."""
    path.write_text("server: {}\n")
    real = Path.read_text

    def refuse(self: Path, *args, **kwargs) -> str:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        pytest.param(lambda path, _: None, "does not exist", id="missing"),
        pytest.param(
            lambda path, _: path.symlink_to(path.parent / "gone"),
            "does not exist",
            id="dangling-link",
        ),
        pytest.param(unreadable, "cannot read config file .*Permission denied", id="unreadable"),
        pytest.param(lambda path, _: path.write_bytes(b"\xff\xfe"), "not UTF-8", id="not-utf8"),
        pytest.param(lambda path, _: path.write_text(""), "is empty", id="empty"),
        pytest.param(lambda path, _: path.write_text("\n  \n"), "is empty", id="blank"),
        pytest.param(
            lambda path, _: path.write_text("# providers:\n#  x: {}\n"), "is empty", id="comments"
        ),
        pytest.param(lambda path, _: path.write_text("{}\n"), "is empty", id="empty-mapping"),
        pytest.param(
            lambda path, _: path.write_text("---\n...\n"), "is empty", id="empty-document"
        ),
    ],
)
def test_a_reload_refuses_a_missing_unreadable_or_empty_file(
    prepare, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    prepare(path, monkeypatch)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path, {"ORACLE_BASE_URL": CHICAGO, "ORACLE_API_KEY": "k"}, reload=True)
    assert str(path) in str(caught.value)
    assert "the previous configuration keeps serving" in str(caught.value)


def test_a_reload_loads_a_file_with_keys_and_a_first_load_still_accepts_an_empty_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("providers: {}\n")
    assert load_config(path, {}, reload=True) == GatewayConfig((), source=str(path))
    path.write_text(PROVIDER)
    (provider,) = load_config(path, {}, required=True, reload=True).providers
    assert provider.name == "oracle"
    path.write_text("")
    assert load_config(path, {}, required=True).providers == ()


def guarded(*keys: str, source: str | None = "c.yaml") -> GatewayConfig:
    ring = KeyRing(tuple(ClientKey(MASTER, digest(key)) for key in keys))
    return GatewayConfig((), source=source, keys=ring)


@pytest.mark.parametrize(
    ("previous", "new", "refused"),
    [
        (guarded(), guarded(), False),
        (guarded(), guarded("k1"), False),
        (guarded("k1"), guarded("k1"), False),
        (guarded("k1"), guarded("k2"), False),  # rotating a key
        (guarded("k1", "k2"), guarded("k2"), False),  # removing some keys
        (guarded("k1"), guarded(), True),
        (guarded("k1", "k2"), guarded(), True),
        (guarded("k1"), guarded(source=None), True),
    ],
)
def test_a_reload_may_change_master_keys_but_never_remove_them_all(previous, new, refused):
    if not refused:
        check_reload(previous, new)
        return
    with pytest.raises(ConfigError, match="removing every key takes a restart") as caught:
        check_reload(previous, new)
    assert "the previous configuration keeps serving" in str(caught.value)
    assert (new.source or "the new configuration") in str(caught.value)
    assert "k1" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "provider", "url"),
    [
        (
            {"ORACLE_REGION": "us-chicago-1", "ORACLE_API_KEY": "k"},
            "oracle",
            "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com/20231130/actions/v1",
        ),
        (
            {"ORACLE_EU_REGION": "eu-frankfurt-1", "ORACLE_EU_API_KEY": "k"},
            "oracle-eu",
            "https://inference.generativeai.eu-frankfurt-1.oci.oraclecloud.com/20231130/actions/v1",
        ),
    ],
)
def test_a_region_instead_of_a_base_url_works_with_the_shipped_config(env, provider, url) -> None:
    """The shipped config.yaml says base_url: ${ORACLE_BASE_URL}; set only ORACLE_REGION and
    that expands to nothing, which must mean 'not given', not a broken URL."""
    shipped = Path(__file__).resolve().parents[1] / "config.yaml"

    config = load_config(shipped, env)

    assert {p.name: p.base_url for p in config.providers}[provider] == url


ALIAS_CONFIG = """
providers:
  oracle:
    base_url: https://inference.generativeai.us-chicago-1.oci.oraclecloud.com/openai/v1
    api_key: k
    models: [openai.gpt-oss-120b, xai.grok-4]
    models_mode: {mode}
aliases:
  gpt-4o: openai.gpt-oss-120b
  "gpt-*": oracle/xai.grok-4
  o3: {o3}
"""


def alias_config(tmp_path: Path, mode: str = "allowlist", o3: str = "xai.grok-4") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(ALIAS_CONFIG.format(mode=mode, o3=o3))
    return path


def test_aliases_come_from_yaml_in_order_and_the_environment_overrides(tmp_path: Path) -> None:
    env = {"GOMODEL_ALIASES": "o3=openai.gpt-oss-120b, llm-default=xai.grok-4"}

    config = load_config(alias_config(tmp_path), env)

    assert [(a.name, a.target) for a in config.aliases] == [
        ("gpt-4o", "openai.gpt-oss-120b"),
        ("gpt-*", "oracle/xai.grok-4"),
        ("o3", "openai.gpt-oss-120b"),
        ("llm-default", "xai.grok-4"),
    ]
    assert config.aliases[2].origin == "environment variable GOMODEL_ALIASES"


def test_an_alias_no_provider_serves_stops_an_allowlist_gateway(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: aliases\.o3: the target 'xai\.grok-9'"):
        load_config(alias_config(tmp_path, o3="xai.grok-9"), {})


def test_an_alias_discovery_may_still_serve_is_a_warning(tmp_path: Path) -> None:
    config = load_config(alias_config(tmp_path, mode="fallback", o3="xai.grok-9"), {})

    assert any("aliases.o3: the target 'xai.grok-9'" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("gpt-4o", "is not alias=target"),
        ("gpt 4o=xai.grok-4", "is not a model name"),
        ("gpt-4o=../admin", "is not a model id"),
        ("gpt-4o=xai.*", "is not a model id"),  # a target is one model, never a pattern
    ],
)
def test_malformed_aliases_name_where_they_come_from(tmp_path: Path, env, message) -> None:
    with pytest.raises(ConfigError, match=f"GOMODEL_ALIASES: .*{re.escape(message)}"):
        load_config(alias_config(tmp_path), {"GOMODEL_ALIASES": env})


@pytest.mark.parametrize(
    ("name", "target"),
    [('"gpt-*\\n"', "xai.grok-4"), ("gpt-4o", '"xai.grok-4\\n"')],  # YAML's quoted "\n"
)
def test_an_alias_or_a_target_ending_in_a_newline_is_refused(
    tmp_path: Path, name: str, target: str
) -> None:
    """`$` also matches before a final newline: names are matched whole, or the newline would
    reach the ledger and the usage report's table."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  oracle:\n    type: oracle\n    base_url: https://x.example/v1\n"
        f"    api_key: k\n    models: [xai.grok-4]\naliases:\n  {name}: {target}\n"
    )
    with pytest.raises(ConfigError, match="is not a model"):
        load_config(path, {})

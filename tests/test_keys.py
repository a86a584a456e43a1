"""Client keys: server.keys parsing, who a header identifies, which models a key may use."""

import hashlib
from pathlib import Path

import pytest
from gomodel_gateway.config import load_config
from gomodel_gateway.config_values import ConfigError
from gomodel_gateway.keys import (
    ANONYMOUS,
    ANONYMOUS_KEY,
    MASTER,
    REPLAY,
    REPLAY_KEY,
    ClientKey,
    KeyRing,
    digest,
    model_names,
)
from gomodel_gateway.limits import Limits

KEYS_YAML = """\
server:
  master_keys: [gm-admin-7c1]
  keys:
    ci:
      key: ${CI_KEY}
      models: ["openai.gpt-oss-*", gpt-4o-mini]
      requests_per_minute: 3
    alice:
      key_sha256: '%s'
      tokens_per_minute: 1000
      tokens_per_day: 50000
"""
ALICE_KEY = "gm-alice-2f9"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, env if env is not None else {"CI_KEY": "gm-ci-4d2"})


def test_keys_by_name_with_models_and_limits(tmp_path: Path) -> None:
    config = load(tmp_path, KEYS_YAML % hashlib.sha256(ALICE_KEY.encode()).hexdigest())
    master, ci, alice = config.keys.keys
    assert (master.name, master.admin, master.limits) == (MASTER, True, Limits())
    assert ci == ClientKey(
        "ci", digest("gm-ci-4d2"), ("openai.gpt-oss-*", "gpt-4o-mini"), Limits(3)
    )
    assert alice.limits == Limits(None, 1000, 50000) and alice.models == ()
    ring = config.keys
    assert ring.identify("Bearer gm-ci-4d2") == ci
    assert ring.identify(f"Bearer {ALICE_KEY}") == alice
    assert ring.identify("Bearer gm-admin-7c1") == master
    assert "gm-ci-4d2" not in repr(config) and "gm-ci-4d2" not in repr(ci)


@pytest.mark.parametrize(
    "authorization",
    [
        *(None, "", "Bearer", "Bearer gm-ci-4d", "Bearer gm-ci-4d2x", "Basic gm-ci-4d2"),
        *("gm-ci-4d2", "Bearer " + "g" * 100_000, "Bearer gm-ci-4d2\udcff", "Bearer \ud800"),
    ],
)
def test_other_values_identify_no_key(tmp_path: Path, authorization: str | None) -> None:
    ring = load(tmp_path, KEYS_YAML % ("0" * 64)).keys
    assert ring.identify(authorization) is None


def test_only_master_keys_and_the_gateways_own_callers_are_admins(tmp_path: Path) -> None:
    config = load(tmp_path, KEYS_YAML % hashlib.sha256(ALICE_KEY.encode()).hexdigest())
    assert [(key.name, key.admin) for key in config.keys.keys] == [
        (MASTER, True),
        ("ci", False),
        ("alice", False),
    ]
    assert ANONYMOUS_KEY.admin and REPLAY_KEY.admin
    # never from a name: a key is an admin because it was made one
    assert not any(ClientKey(name, b"").admin for name in (MASTER, ANONYMOUS, REPLAY))


def test_without_keys_everyone_is_anonymous() -> None:
    assert KeyRing().identify(None).name == ANONYMOUS
    assert not KeyRing().required


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("keys: [a]", "server.keys must map key names to keys"),
        ("keys: {Bad Name: {key: k}}", "a key's name is 1-64 lowercase"),
        ("keys: {master: {key: k}}", "a key's name is 1-64 lowercase"),
        ("keys: {anonymous: {key: k}}", "server.keys.anonymous: a key's name is 1-64 lowercase"),
        ("keys: {replay: {key: k}}", "server.keys.replay: a key's name is 1-64 lowercase"),
        ('keys: {"ci\\n": {key: k}}', "a key's name is 1-64 lowercase"),
        ("keys: {ci: k}", "server.keys.ci must be a mapping"),
        ("keys: {ci: {}}", "server.keys.ci: give exactly one of key and key_sha256"),
        ("keys: {ci: {key: a, key_sha256: b}}", "give exactly one of key and key_sha256"),
        ("keys: {ci: {key: '${NOPE}'}}", "server.keys.ci.key is empty (NOPE not set)"),
        ("keys: {ci: {key: 5}}", "server.keys.ci.key must be a string"),
        ("keys: {ci: {key_sha256: abc}}", "server.keys.ci.key_sha256 must be 64 hexadecimal"),
        ("keys: {ci: {key: k, limit: 3}}", "server.keys.ci.limit: unknown field"),
        ("keys: {ci: {key: k, models: []}}", "server.keys.ci.models must be a non-empty list"),
        ("keys: {ci: {key: k, models: gpt}}", "server.keys.ci.models must be a non-empty list"),
        ("keys: {ci: {key: k, requests_per_minute: 0}}", "requests_per_minute must be a whole"),
        ("keys: {ci: {key: k, tokens_per_day: 1.5}}", "tokens_per_day must be a whole"),
        ("keys: {ci: {key: k, tokens_per_minute: true}}", "tokens_per_minute must be a whole"),
        ("keys: {a: {key: k}, b: {key: k}}", "'b' has the same key as 'a'"),
        ("master_keys: [k]\n  keys: {a: {key: k}}", "'a' has the same key as 'master'"),
    ],
)
def test_broken_keys_stop_the_gateway_naming_file_and_key(tmp_path, block, message) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml") as caught:
        load(tmp_path, f"server:\n  {block}\n")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("patterns", "names", "allowed"),
    [
        ((), ("anything",), True),
        (("openai.gpt-oss-*",), ("openai.gpt-oss-120b",), True),
        (("openai.gpt-oss-*",), ("xai.grok-4",), False),
        (("gpt-4o-mini",), ("gpt-4o-mini", "openai.gpt-oss-120b"), True),  # requested name
        (("openai.*",), ("gpt-4o-mini", "openai.gpt-oss-120b"), True),  # alias target
        (("xai.grok-4",), ("oracle-eu/xai.grok-4", "xai.grok-4"), True),  # pinned: upstream
        (("oracle-eu/*",), ("oracle-eu/xai.grok-4", "xai.grok-4"), True),
        (("oracle-eu/*",), ("xai.grok-4",), False),
        (("xai.grok-4",), ("XAI.GROK-4",), False),  # case matters, as for model ids
        (("xai.grok-[4]",), ("xai.grok-4",), False),  # only * is special
    ],
)
def test_model_patterns(patterns, names, allowed) -> None:
    assert ClientKey("k", b"", patterns).allows(*names) == allowed


@pytest.mark.parametrize(
    ("requested", "alias", "target", "upstream", "names"),
    [
        ("xai.grok-4", None, None, "xai.grok-4", ("xai.grok-4", "xai.grok-4")),
        (
            "gpt-4o-mini",
            "gpt-4o-mini",
            "openai.gpt-oss-120b",
            "openai.gpt-oss-120b",
            ("gpt-4o-mini", "openai.gpt-oss-120b", "openai.gpt-oss-120b"),
        ),
        # through a glob, the client's name is anything the glob takes: it counts for a key's
        # exact entries only (ThroughGlob)
        (
            "gpt-4o-anything",
            "gpt-*",
            "xai.grok-4",
            "xai.grok-4",
            ("gpt-4o-anything", "xai.grok-4", "xai.grok-4"),
        ),
        ("", None, None, "", ()),  # a stored resource's call names no model
    ],
)
def test_names_a_key_is_matched_against(requested, alias, target, upstream, names) -> None:
    assert model_names(requested, alias, target, upstream) == names


@pytest.mark.parametrize(
    ("patterns", "requested", "allowed"),
    [
        # an exact entry names the model the client sends, glob alias or not
        (("gpt-4o-mini",), "gpt-4o-mini", True),
        (("openai.gpt-oss-*", "gpt-4o-mini"), "gpt-4o-mini", True),  # the README's ci key
        (("gpt-4o-mini",), "gpt-4o-mini-2", False),
        (("gpt-4o-mini",), "GPT-4O-MINI", False),
        # a key's pattern does not reach the glob's target by name
        (("gpt-4o*",), "gpt-4o-mini", False),
        (("gpt-*",), "gpt-4o-mini", False),
        (("*",), "gpt-4o-mini", True),  # every model: the target too
        (("xai.*",), "gpt-4o-mini", True),  # by the target's name
    ],
)
def test_a_key_through_a_glob_alias(patterns, requested, allowed) -> None:
    """With the alias gpt-* -> xai.grok-4."""
    key = ClientKey("k", b"", patterns)
    assert key.allows(*model_names(requested, "gpt-*", "xai.grok-4", "xai.grok-4")) == allowed


def test_a_glob_alias_does_not_open_its_target_to_a_key_allowed_the_name() -> None:
    key = ClientKey("glob", b"", ("gpt-4o*",))
    assert not key.allows(*model_names("gpt-4o-anything", "gpt-*", "xai.grok-4", "xai.grok-4"))
    assert key.allows(*model_names("gpt-4o-mini", "gpt-4o-mini", "x.y", "x.y"))

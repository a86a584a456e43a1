"""Gateway configuration: env variables and config.yaml become a `GatewayConfig` (see
`providers`). This module reads the top level and calls one module per section: the file
(`config_file`), providers' blocks (`provider_blocks`, with `config_env`'s ORACLE_* variables),
`server:` (`config_server`), `aliases:` (`aliases`), and reloads (`config_reload`).

Pure functions only: the environment is passed in as a mapping and nothing here knows about
mitmproxy, so every rule (precedence, expansion, validation) is testable as a table.
"""

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .adapt import ModelRules
from .aliases import Alias, AliasError, parse_aliases
from .config_file import read_yaml
from .config_reload import read_for_reload
from .config_server import parse_server
from .config_values import (
    ConfigError,
    RawField,
    parse_models_mode,
    parse_policy,
    parse_refresh_seconds,
    parse_rules,
)
from .provider_blocks import ProviderDefaults, build_provider, provider_blocks
from .providers import (
    DEFAULT_MODELS_MODE,
    DEFAULT_MODELS_REFRESH_SECONDS,
    GatewayConfig,
    Provider,
    serves,
)
from .resilience import FailoverPolicy, RetryPolicy, Timeouts

TOP_LEVEL_KEYS = frozenset(
    {
        "providers",
        "aliases",
        "models_mode",
        "models_refresh_seconds",
        "server",
        "timeouts",
        "retries",
        "failover",
        "min_output_tokens",
        "parameter_map",
    }
)


def load_config(
    path: Path | None, env: Mapping[str, str], *, required: bool = False, reload: bool = False
) -> GatewayConfig:
    """Build the provider list from an optional YAML file and the environment.

    `required` is true when the user named the file explicitly: then a missing file is an
    error; the default config.yaml may be absent. `reload` is for a file that changed while
    the gateway serves: see `read_for_reload`.
    """
    document, source = _read_document(path, required, reload)
    where = f"config file {path}"
    _check_top_level(document, where)
    defaults = _provider_defaults(document, where)
    blocks = provider_blocks(document.get("providers"), where, env)
    warnings: list[str] = []
    providers = [
        provider
        for name, fields in blocks.items()
        if (provider := build_provider(name, fields, defaults, warnings)) is not None
    ]
    aliases = _aliases(document.get("aliases"), env, where, providers, warnings)
    keys = parse_server(document.get("server"), where, env)
    return GatewayConfig(
        tuple(providers),
        tuple(warnings),
        source,
        aliases=aliases,
        keys=keys,
        retries=parse_policy(document.get("retries"), f"{where}: retries", RetryPolicy()),
        failover=parse_policy(document.get("failover"), f"{where}: failover", FailoverPolicy()),
    )


def _read_document(
    path: Path | None, required: bool, reload: bool
) -> tuple[dict[str, Any], str | None]:
    """The file's mapping and its name; ({}, None) when there is no file to read."""
    if reload:
        return read_for_reload(path), str(path)
    if path is not None and (required or path.exists()):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (option gomodel_config)")
        return read_yaml(path), str(path)
    return {}, None


def _check_top_level(document: Mapping[str, Any], where: str) -> None:
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{where}: unknown top-level key {key!r}; expected one of "
                + ", ".join(sorted(TOP_LEVEL_KEYS))
            )


def _provider_defaults(document: Mapping[str, Any], where: str) -> ProviderDefaults:
    """The top level's model rules, timeouts and models settings, which every provider takes
    unless its block says otherwise."""
    top_rules = [
        RawField(document[key], f"{where}: {key}") if key in document else None
        for key in ("min_output_tokens", "parameter_map")
    ]
    return ProviderDefaults(
        rules=ModelRules().layered(parse_rules(*top_rules)),
        timeouts=parse_policy(document.get("timeouts"), f"{where}: timeouts", Timeouts()),
        models_mode=parse_models_mode(
            document.get("models_mode", DEFAULT_MODELS_MODE), f"{where}: models_mode"
        ),
        models_refresh_seconds=parse_refresh_seconds(
            document.get("models_refresh_seconds", DEFAULT_MODELS_REFRESH_SECONDS),
            f"{where}: models_refresh_seconds",
        ),
    )


def _aliases(
    block: Any, env: Mapping[str, str], where: str, providers: list[Provider], warnings: list[str]
) -> tuple[Alias, ...]:
    try:
        aliases = parse_aliases(block, env, where)
    except AliasError as e:
        raise ConfigError(str(e)) from e
    check_alias_targets(aliases, providers, warnings)
    return aliases


def check_alias_targets(
    aliases: Iterable[Alias], providers: list[Provider], warnings: list[str]
) -> None:
    """An alias to a model no provider serves is a mistake, unless discovery may still list it
    (a provider in fallback mode): then a warning, and a clear 404 at call time."""
    discovering = [p.name for p in providers if p.models_mode == "fallback"]
    for alias in aliases:
        if serves(providers, alias.target):
            continue
        if discovering or not providers:
            warnings.append(
                f"{alias.origin}: the target {alias.target!r} is not among the configured models; "
                "calls to it get 404 unless model discovery lists it"
            )
            continue
        raise ConfigError(
            f"{alias.origin}: the target {alias.target!r} is served by no provider (every "
            "provider is an allowlist); add it to a provider's models: or fix the alias"
        )

"""Gateway configuration: env variables and config.yaml become a list of Oracle providers
(the types they become are in `providers`).

Pure functions only: the environment is passed in as a mapping and nothing here knows about
mitmproxy, so every rule (precedence, expansion, validation) is testable as a table.
"""

import contextlib
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .adapt import ModelRules
from .aliases import Alias, AliasError, parse_aliases
from .keys import KeyConfigError, KeyRing, parse_client_keys
from .providers import (
    DEFAULT_MODELS_MODE,
    DEFAULT_MODELS_REFRESH_SECONDS,
    MODELS_MODES,
    DiscoveryMethod,
    GatewayConfig,
    ModelsMode,
    Provider,
    is_model_id,
    serves,
)
from .regions import check_region, control_plane_url, inference_base_url, region_of
from .resilience import FailoverPolicy, RetryPolicy, Timeouts

PROVIDER_TYPES = ("oracle",)
DEFAULT_PROVIDER = "oracle"

PROVIDER_KEYS = frozenset(
    {
        "type",
        "base_url",
        "region",
        "api_key",
        "models",
        "models_mode",
        "models_refresh_seconds",
        "timeouts",
        "project",
        "discovery",
        "compartment_id",
        "oci_config_file",
        "oci_profile",
        "control_plane_url",
        "min_output_tokens",
        "parameter_map",
    }
)
DISCOVERY_METHODS = tuple(method.value for method in DiscoveryMethod)
OCID = re.compile(r"^ocid1\.[a-z0-9_-]+\.[a-z0-9_-]*\.[a-z0-9_-]*\.[A-Za-z0-9._-]+$")
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
SERVER_KEYS = frozenset({"master_keys", "keys"})
MASTER_KEY_ENV = "GOMODEL_MASTER_KEY"
KEEPS_SERVING = "the previous configuration keeps serving"
SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")

# ORACLE_<NAME>_BASE_URL / _API_KEY / _MODELS define the provider "oracle-<name>".
SUFFIXED_ENV = re.compile(r"^ORACLE_([A-Z0-9_]+?)_(BASE_URL|API_KEY|MODELS|REGION)$")
ENV_FIELDS = {"BASE_URL": "base_url", "API_KEY": "api_key", "MODELS": "models", "REGION": "region"}
EXPANSION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class ConfigError(Exception):
    """A configuration that must stop the gateway; the message names the file and key."""


@dataclass
class _Field:
    """A raw provider field before validation, with where it came from for error messages."""

    value: Any
    origin: str
    unset_variables: tuple[str, ...] = ()


def parse_model_list(value: str | Iterable[Any], origin: str) -> tuple[str, ...]:
    """A comma string or a list of ids: trimmed, empties dropped, duplicates dropped in order."""
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    models: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{origin}: model ids must be strings, got {item!r}")
        model = item.strip()
        if not model or model in models:
            continue
        if not is_model_id(model):
            raise ConfigError(f"{origin}: {model!r} is not a valid model id")
        models.append(model)
    return tuple(models)


def expand_variables(value: str, env: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """Expand ${VAR} and ${VAR:-default}; also return the variables that were unset or empty."""
    unset: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        current = env.get(name, "")
        if current:
            return current
        if default is None:
            unset.append(name)
        return default or ""

    return EXPANSION.sub(substitute, value), tuple(unset)


def validate_base_url(url: str, origin: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(
            f"{origin}: base URL {url!r} is not an https URL; expected e.g. "
            "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com/20231130/actions/v1"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{origin}: base URL {url!r} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as e:
        raise ConfigError(f"{origin}: base URL {url!r} has an invalid port") from e
    return url.strip().rstrip("/")


def _models_mode(value: Any, origin: str) -> ModelsMode:
    if value not in MODELS_MODES:
        raise ConfigError(f"{origin}: models_mode must be one of {', '.join(MODELS_MODES)}")
    return value


def _refresh_seconds(value: Any, origin: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{origin}: models_refresh_seconds must be a positive number")
    return float(value)


def env_provider_name(suffix: str) -> str:
    """ORACLE_EU_WEST_* -> oracle-eu-west (GoModel's naming)."""
    return f"oracle-{suffix.lower().replace('_', '-')}"


def env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, _Field]]:
    """Provider fields set through ORACLE_* variables; an empty value counts as unset."""
    overrides: dict[str, dict[str, _Field]] = {}
    for variable, value in env.items():
        if not value.strip():
            continue
        if variable in ("ORACLE_BASE_URL", "ORACLE_API_KEY", "ORACLE_MODELS", "ORACLE_REGION"):
            name, key = DEFAULT_PROVIDER, ENV_FIELDS[variable.removeprefix("ORACLE_")]
        elif match := SUFFIXED_ENV.match(variable):
            name, key = env_provider_name(match.group(1)), ENV_FIELDS[match.group(2)]
        else:
            continue
        overrides.setdefault(name, {})[key] = _Field(value, f"environment variable {variable}")
    return overrides


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping naming a key twice, at any depth: plain YAML keeps
    the last one silently, so a second `api_key:` or `providers:` would win unnoticed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if (
                key_node.tag == "tag:yaml.org,2002:merge"
            ):  # keys merged with `<<:` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_lines.get(key)
            except TypeError:  # an unhashable key: SafeLoader explains it below
                continue
            if first is not None:
                shown = repr(key) if len(repr(key)) <= 100 else repr(key)[:100] + "..."
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {shown} (first at line {first})",
                    key_node.start_mark,
                )
            first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text") from e


def parse_yaml(text: str, path: Path | str) -> dict[str, Any]:
    """A config file's text as a mapping ({} when it holds nothing); `path` names it in errors."""
    try:
        document = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as e:
        where = ""
        if mark := getattr(e, "problem_mark", None):
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from e
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return document


def read_yaml(path: Path) -> dict[str, Any]:
    return parse_yaml(read_text(path), path)


def _yaml_fields(block: Any, name: str, where: str, env: Mapping[str, str]) -> dict[str, _Field]:
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: provider {name!r} must be a mapping")
    fields: dict[str, _Field] = {}
    for key, value in block.items():
        origin = f"{where}: providers.{name}.{key}"
        if key not in PROVIDER_KEYS:
            raise ConfigError(
                f"{origin}: unknown key; expected one of {', '.join(sorted(PROVIDER_KEYS))}"
            )
        unset: tuple[str, ...] = ()
        if isinstance(value, str):
            value, unset = expand_variables(value, env)
        elif isinstance(value, list):
            expanded = []
            for item in value:
                if isinstance(item, str):
                    item, item_unset = expand_variables(item, env)
                    unset += item_unset
                expanded.append(item)
            value = expanded
        fields[key] = _Field(value, origin, unset)
    return fields


def _build_provider(
    name: str, fields: Mapping[str, _Field], defaults: Mapping[str, Any], warnings: list[str]
) -> Provider | None:
    kind = fields.get("type")
    if kind is not None and kind.value not in PROVIDER_TYPES:
        raise ConfigError(
            f"{kind.origin}: unknown provider type {kind.value!r}; supported: "
            + ", ".join(PROVIDER_TYPES)
        )
    missing = []
    if not (_text(fields.get("base_url")) or _text(fields.get("region"))):
        missing.append(_describe_missing(name, "base_url", fields.get("base_url")))
    if not _text(fields.get("api_key")):
        missing.append(_describe_missing(name, "api_key", fields.get("api_key")))
    if missing:
        warnings.append(f"provider {name!r} skipped: " + "; ".join(missing))
        return None
    region = None
    if region_field := fields.get("region"):
        region = _region(region_field, name, warnings)
    if (base_field := fields.get("base_url")) and _text(base_field):  # may expand to ""
        base_url = validate_base_url(base_field.value, base_field.origin)
        region = region or region_of(base_url)
    else:
        base_url = inference_base_url(region)
    extras = _oracle_extras(name, fields, region, defaults)
    models_field = fields.get("models")
    models: tuple[str, ...] = ()
    if models_field is not None and models_field.value is not None:
        if not isinstance(models_field.value, str | list):
            raise ConfigError(f"{models_field.origin}: must be a list or a comma-separated string")
        models = parse_model_list(models_field.value, models_field.origin)
    mode_field = fields.get("models_mode")
    refresh_field = fields.get("models_refresh_seconds")
    timeouts_field = fields.get("timeouts")
    return Provider(
        name=name,
        base_url=base_url,
        api_key=fields["api_key"].value.strip(),
        models=models,
        models_mode=(
            _models_mode(mode_field.value, mode_field.origin)
            if mode_field
            else defaults["models_mode"]
        ),
        models_refresh_seconds=(
            _refresh_seconds(refresh_field.value, refresh_field.origin)
            if refresh_field
            else defaults["models_refresh_seconds"]
        ),
        timeouts=(
            parse_policy(timeouts_field.value, timeouts_field.origin, defaults["timeouts"])
            if timeouts_field
            else defaults["timeouts"]
        ),
        region=region,
        **extras,
    )


def _text(raw: _Field | None) -> str:
    return raw.value.strip() if raw is not None and isinstance(raw.value, str) else ""


def _region(raw: _Field, provider: str, warnings: list[str]) -> str:
    region = _text(raw)
    try:
        warning = check_region(region)
    except ValueError as e:
        raise ConfigError(f"{raw.origin}: {e}") from e
    if warning:
        warnings.append(f"provider {provider!r}: {warning}")
    return region


def _oracle_extras(
    name: str, fields: Mapping[str, _Field], region: str | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Project, discovery through the OCI control plane, and model rules."""
    extras: dict[str, Any] = {}
    for key in ("project", "compartment_id", "oci_config_file", "oci_profile"):
        if raw := fields.get(key):
            value = _text(raw)
            if not value or any(c.isspace() for c in value):
                raise ConfigError(f"{raw.origin}: must be a non-empty string without spaces")
            extras[key] = value
    for key in ("project", "compartment_id"):
        if key in extras and not OCID.match(extras[key]):
            raise ConfigError(f"{fields[key].origin}: {extras[key]!r} is not an OCID (ocid1....)")
    discovery = fields.get("discovery")
    if discovery is not None:
        if discovery.value not in DISCOVERY_METHODS:
            raise ConfigError(f"{discovery.origin}: must be one of {', '.join(DISCOVERY_METHODS)}")
        extras["discovery"] = DiscoveryMethod(discovery.value)
    if extras.get("discovery") == DiscoveryMethod.OCI:
        where = f"provider {name!r} with discovery: oci"
        if "compartment_id" not in extras:
            raise ConfigError(f"{where} needs compartment_id (the OCID whose models to list)")
        if (mode := fields.get("models_mode")) and mode.value == "allowlist":
            raise ConfigError(f"{mode.origin}: discovery: oci needs models_mode: fallback")
        plane = fields.get("control_plane_url")
        if plane is not None:
            extras["control_plane_url"] = validate_base_url(_text(plane), plane.origin)
        elif region:
            extras["control_plane_url"] = control_plane_url(region)
        else:
            raise ConfigError(f"{where} needs a region (region:, or an Oracle base_url)")
    rules = defaults["rules"]
    if (budgets := fields.get("min_output_tokens")) or fields.get("parameter_map"):
        rules = rules.layered(parse_rules(budgets, fields.get("parameter_map")))
    extras["rules"] = rules
    return extras


def parse_rules(budgets: _Field | None, renames: _Field | None) -> ModelRules:
    """min_output_tokens: {pattern: tokens}; parameter_map: {pattern: {from: to}}."""
    minimums: list[tuple[str, int]] = []
    if budgets is not None:
        if not isinstance(budgets.value, dict):
            raise ConfigError(f"{budgets.origin}: must map model patterns to token counts")
        for pattern, tokens in budgets.value.items():
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                raise ConfigError(f"{budgets.origin}.{pattern}: must be a whole number >= 1")
            minimums.append((str(pattern), tokens))
    mapping: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    if renames is not None:
        if not isinstance(renames.value, dict):
            raise ConfigError(f"{renames.origin}: must map model patterns to {{from: to}}")
        for pattern, pairs in renames.value.items():
            if not isinstance(pairs, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()
            ):
                raise ConfigError(f"{renames.origin}.{pattern}: must map parameter names")
            mapping.append((str(pattern), tuple(pairs.items())))
    return ModelRules(tuple(minimums), tuple(mapping))


Policy = Timeouts | RetryPolicy | FailoverPolicy


def parse_policy[P: Policy](raw: Any, origin: str, base: P) -> P:
    """A policy block (timeouts, retries, failover): known keys only, each of the right type;
    keys not given keep `base`'s values."""
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: must be a mapping")
    known = [f.name for f in dataclasses.fields(base)]
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{origin}.{key}: unknown key; expected one of {', '.join(known)}")
        values[key] = _policy_value(value, type(getattr(base, key)), f"{origin}.{key}")
    return dataclasses.replace(base, **values)


def _policy_value(value: Any, kind: type, origin: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{origin}: must be true or false")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{origin}: must be a number")
    if kind is int:
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{origin}: must be a whole number, 0 or more")
        return value
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{origin}: must be a positive number of seconds")
    return float(value)


def _describe_missing(name: str, key: str, raw: _Field | None) -> str:
    if raw is not None and raw.unset_variables:
        variables = ", ".join(raw.unset_variables)
        return f"{key} is empty ({variables} not set)"
    alternative = " or region" if key == "base_url" else ""
    if name == DEFAULT_PROVIDER:
        region = " or ORACLE_REGION" if key == "base_url" else ""
        return f"{key}{alternative} is not set (set ORACLE_{key.upper()}{region})"
    if name.startswith("oracle-"):
        suffix = name.removeprefix("oracle-").upper().replace("-", "_")
        return (
            f"{key}{alternative} is not set (set ORACLE_{suffix}_{key.upper()} or "
            f"providers.{name}.{key})"
        )
    return f"{key}{alternative} is not set (providers.{name}.{key})"


def load_config(
    path: Path | None, env: Mapping[str, str], *, required: bool = False, reload: bool = False
) -> GatewayConfig:
    """Build the provider list from an optional YAML file and the environment.

    `required` is true when the user named the file explicitly: then a missing file is an
    error; the default config.yaml may be absent. `reload` is for a file that changed while
    the gateway serves: see `read_for_reload`.
    """
    document: dict[str, Any] = {}
    source = None
    if reload:
        document = read_for_reload(path)
        source = str(path)
    elif path is not None and (required or path.exists()):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (option gomodel_config)")
        document = read_yaml(path)
        source = str(path)
    where = f"config file {path}"
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{where}: unknown top-level key {key!r}; expected one of "
                + ", ".join(sorted(TOP_LEVEL_KEYS))
            )
    top_rules = [
        _Field(document[key], f"{where}: {key}") if key in document else None
        for key in ("min_output_tokens", "parameter_map")
    ]
    defaults = {
        "rules": ModelRules().layered(parse_rules(*top_rules)),
        "timeouts": parse_policy(document.get("timeouts"), f"{where}: timeouts", Timeouts()),
        "models_mode": _models_mode(
            document.get("models_mode", DEFAULT_MODELS_MODE), f"{where}: models_mode"
        ),
        "models_refresh_seconds": _refresh_seconds(
            document.get("models_refresh_seconds", DEFAULT_MODELS_REFRESH_SECONDS),
            f"{where}: models_refresh_seconds",
        ),
    }
    yaml_providers = document.get("providers") or {}
    if not isinstance(yaml_providers, dict):
        raise ConfigError(f"{where}: providers must be a mapping of name to provider")

    blocks: dict[str, dict[str, _Field]] = {}
    for name, block in yaml_providers.items():
        if not isinstance(name, str) or not PROVIDER_NAME.match(name):
            raise ConfigError(
                f"{where}: provider name {name!r} must be lowercase letters, digits, '.', '_', '-'"
            )
        blocks[name] = _yaml_fields(block, name, where, env)

    overrides = env_overrides(env)
    env_only = sorted(set(overrides) - set(blocks), key=lambda n: (n != DEFAULT_PROVIDER, n))
    for name in env_only:
        blocks[name] = {}
    for name, fields in overrides.items():
        blocks[name].update(fields)

    warnings: list[str] = []
    providers = [
        provider
        for name, fields in blocks.items()
        if (provider := _build_provider(name, fields, defaults, warnings)) is not None
    ]
    try:
        aliases = parse_aliases(document.get("aliases"), env, where, is_model_id)
    except AliasError as e:
        raise ConfigError(str(e)) from e
    check_alias_targets(aliases, providers, warnings)
    master_keys = _master_keys(document.get("server"), where, env)  # checks server: too
    try:
        keys = parse_client_keys(
            (document.get("server") or {}).get("keys"),
            where,
            lambda raw: expand_variables(raw, env),
            master_keys,
        )
    except KeyConfigError as e:
        raise ConfigError(str(e)) from e
    return GatewayConfig(
        tuple(providers),
        tuple(warnings),
        source,
        aliases=aliases,
        keys=KeyRing(keys),
        retries=parse_policy(document.get("retries"), f"{where}: retries", RetryPolicy()),
        failover=parse_policy(document.get("failover"), f"{where}: failover", FailoverPolicy()),
    )


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


def read_for_reload(path: Path | None) -> dict[str, Any]:
    """The changed config file's mapping; missing, unreadable or without a single key, it is an
    error. An editor saving in place, or a deploy replacing the file, can leave it absent or empty
    for a moment; loaded as is, that would drop every provider and master key while serving."""
    if path is None:
        raise ConfigError(f"no config file to reload; {KEEPS_SERVING}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; {KEEPS_SERVING}")
    try:
        text = read_text(path)
    except ConfigError as e:
        raise ConfigError(f"{e}; {KEEPS_SERVING}") from e
    document = parse_yaml(text, path)
    if not document:
        raise ConfigError(
            f"config file {path} is empty (no keys): not reloaded, {KEEPS_SERVING}; to run "
            "without providers, write `providers: {}`"
        )
    return document


def check_reload(previous: GatewayConfig, new: GatewayConfig) -> None:
    """Refuse a reload that would open a guarded gateway: a typo in `server:` or an edit that
    drops the keys must not let every client in. Changing or removing some keys is fine."""
    if previous.keys.required and not new.keys.required:
        where = f"config file {new.source}" if new.source else "the new configuration"
        raise ConfigError(
            f"{where} has no keys (server.master_keys, server.keys, GOMODEL_MASTER_KEY) while "
            f"the gateway requires {len(previous.keys.keys)}: removing every key takes a "
            f"restart; {KEEPS_SERVING}"
        )


def _master_keys(server: Any, where: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """GOMODEL_MASTER_KEY plus server.master_keys. A key that expands to nothing is an error:
    a typo in a variable name must not leave the gateway open."""
    if server is None:
        server = {}
    if not isinstance(server, dict):
        raise ConfigError(f"{where}: server must be a mapping")
    for key in server:
        if key not in SERVER_KEYS:
            raise ConfigError(
                f"{where}: server.{key}: unknown key; expected one of "
                + ", ".join(sorted(SERVER_KEYS))
            )
    configured = server.get("master_keys") or []
    if not isinstance(configured, list):
        raise ConfigError(f"{where}: server.master_keys must be a list")
    keys: list[str] = []
    if env_key := env.get(MASTER_KEY_ENV, "").strip():
        keys.append(env_key)
    for index, raw in enumerate(configured):
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: server.master_keys[{index}] must be a string")
        key, unset = expand_variables(raw, env)
        if not key.strip():
            missing = f" ({', '.join(unset)} not set)" if unset else ""
            raise ConfigError(f"{where}: server.master_keys[{index}] is empty{missing}")
        keys.append(key.strip())
    return tuple(dict.fromkeys(keys))


def parse_size(value: str, allow_zero: bool = False) -> int:
    """A byte count such as 10485760, 512KiB, 10MiB or 10MB; ValueError when malformed."""
    match = SIZE.match(value.lower())
    if not match or match.group(2) not in SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size (e.g. 10MiB, 512KiB, 1048576)")
    size = int(float(match.group(1)) * SIZE_UNITS[match.group(2)])
    if size < 0 or (size == 0 and not allow_zero):
        raise ValueError(f"{value!r} must be more than 0 bytes")
    return size

"""Providers' blocks: each `providers.<name>:` mapping of config.yaml, with the ORACLE_*
variables over it, becomes a `Provider` (or a warning saying why it was skipped)."""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .adapt import ModelRules
from .config_env import DEFAULT_PROVIDER, describe_missing, env_overrides
from .config_expansion import expand_variables
from .config_values import (
    ConfigError,
    RawField,
    field_text,
    parse_models_mode,
    parse_policy,
    parse_refresh_seconds,
    parse_rules,
)
from .model_ids import is_model_id
from .providers import DiscoveryMethod, ModelsMode, Provider
from .regions import check_region, control_plane_url, inference_base_url, region_of
from .resilience import Timeouts

PROVIDER_TYPES = ("oracle",)
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
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

Blocks = dict[str, dict[str, RawField]]  # provider name -> its raw fields by key


@dataclass(frozen=True)
class ProviderDefaults:
    """What a provider not saying otherwise gets: the top level's settings."""

    rules: ModelRules
    timeouts: Timeouts
    models_mode: ModelsMode
    models_refresh_seconds: float


def provider_blocks(section: Any, where: str, env: Mapping[str, str]) -> Blocks:
    """The `providers:` blocks in file order, then the providers only the environment defines
    (oracle first); ORACLE_* variables override the fields of a block."""
    section = section or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: providers must be a mapping of name to provider")
    blocks: Blocks = {}
    for name, block in section.items():
        if not isinstance(name, str) or not PROVIDER_NAME.match(name):
            raise ConfigError(
                f"{where}: provider name {name!r} must be lowercase letters, digits, '.', '_', '-'"
            )
        blocks[name] = yaml_fields(block, name, where, env)
    overrides = env_overrides(env)
    env_only = sorted(set(overrides) - set(blocks), key=lambda n: (n != DEFAULT_PROVIDER, n))
    for name in env_only:
        blocks[name] = {}
    for name, fields in overrides.items():
        blocks[name].update(fields)
    return blocks


def yaml_fields(block: Any, name: str, where: str, env: Mapping[str, str]) -> dict[str, RawField]:
    """One block's known keys, their strings (also in lists) with ${VAR} expanded."""
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: provider {name!r} must be a mapping")
    fields: dict[str, RawField] = {}
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
        fields[key] = RawField(value, origin, unset)
    return fields


def build_provider(
    name: str, fields: Mapping[str, RawField], defaults: ProviderDefaults, warnings: list[str]
) -> Provider | None:
    """The provider, or None with a warning when it lacks a base URL (or region) or a key."""
    _check_type(fields.get("type"))
    if missing := _missing(name, fields):
        warnings.append(f"provider {name!r} skipped: " + "; ".join(missing))
        return None
    base_url, region = _location(name, fields, warnings)
    extras = _oracle_extras(name, fields, region, defaults.rules)
    mode, refresh, timeouts = (
        fields.get("models_mode"),
        fields.get("models_refresh_seconds"),
        fields.get("timeouts"),
    )
    return Provider(
        name=name,
        base_url=base_url,
        api_key=fields["api_key"].value.strip(),
        models=_models(fields.get("models")),
        models_mode=(parse_models_mode(mode.value, mode.origin) if mode else defaults.models_mode),
        models_refresh_seconds=(
            parse_refresh_seconds(refresh.value, refresh.origin)
            if refresh
            else defaults.models_refresh_seconds
        ),
        timeouts=(
            parse_policy(timeouts.value, timeouts.origin, defaults.timeouts)
            if timeouts
            else defaults.timeouts
        ),
        region=region,
        **extras,
    )


def _check_type(kind: RawField | None) -> None:
    if kind is not None and kind.value not in PROVIDER_TYPES:
        raise ConfigError(
            f"{kind.origin}: unknown provider type {kind.value!r}; supported: "
            + ", ".join(PROVIDER_TYPES)
        )


def _missing(name: str, fields: Mapping[str, RawField]) -> list[str]:
    """What keeps the provider from serving: no base URL nor region, no key."""
    missing = []
    if not (field_text(fields.get("base_url")) or field_text(fields.get("region"))):
        missing.append(describe_missing(name, "base_url", fields.get("base_url")))
    if not field_text(fields.get("api_key")):
        missing.append(describe_missing(name, "api_key", fields.get("api_key")))
    return missing


def _location(
    name: str, fields: Mapping[str, RawField], warnings: list[str]
) -> tuple[str, str | None]:
    """The base URL (given, or the region's) and the region (given, or read from the URL)."""
    region = None
    if region_field := fields.get("region"):
        region = _region(region_field, name, warnings)
    if (base_field := fields.get("base_url")) and field_text(base_field):  # may expand to ""
        base_url = validate_base_url(base_field.value, base_field.origin)
        return base_url, region or region_of(base_url)
    assert region  # _missing saw a base URL or a region
    return inference_base_url(region), region


def _region(raw: RawField, provider: str, warnings: list[str]) -> str:
    region = field_text(raw)
    try:
        warning = check_region(region)
    except ValueError as e:
        raise ConfigError(f"{raw.origin}: {e}") from e
    if warning:
        warnings.append(f"provider {provider!r}: {warning}")
    return region


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


def _models(raw: RawField | None) -> tuple[str, ...]:
    if raw is None or raw.value is None:
        return ()
    if not isinstance(raw.value, str | list):
        raise ConfigError(f"{raw.origin}: must be a list or a comma-separated string")
    return parse_model_list(raw.value, raw.origin)


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


def _oracle_extras(
    name: str, fields: Mapping[str, RawField], region: str | None, rules: ModelRules
) -> dict[str, Any]:
    """Project, discovery through the OCI control plane, and model rules."""
    extras = _identifiers(fields)
    if (discovery := fields.get("discovery")) is not None:
        if discovery.value not in DISCOVERY_METHODS:
            raise ConfigError(f"{discovery.origin}: must be one of {', '.join(DISCOVERY_METHODS)}")
        extras["discovery"] = DiscoveryMethod(discovery.value)
    if extras.get("discovery") == DiscoveryMethod.OCI:
        extras["control_plane_url"] = _control_plane(name, fields, region, extras)
    if (budgets := fields.get("min_output_tokens")) or fields.get("parameter_map"):
        rules = rules.layered(parse_rules(budgets, fields.get("parameter_map")))
    extras["rules"] = rules
    return extras


def _identifiers(fields: Mapping[str, RawField]) -> dict[str, Any]:
    """project, compartment_id, oci_config_file, oci_profile: single words; OCIDs where due."""
    found: dict[str, Any] = {}
    for key in ("project", "compartment_id", "oci_config_file", "oci_profile"):
        if raw := fields.get(key):
            value = field_text(raw)
            if not value or any(c.isspace() for c in value):
                raise ConfigError(f"{raw.origin}: must be a non-empty string without spaces")
            found[key] = value
    for key in ("project", "compartment_id"):
        if key in found and not OCID.match(found[key]):
            raise ConfigError(f"{fields[key].origin}: {found[key]!r} is not an OCID (ocid1....)")
    return found


def _control_plane(
    name: str, fields: Mapping[str, RawField], region: str | None, extras: Mapping[str, Any]
) -> str:
    """Where `discovery: oci` lists models; it needs a compartment and a fallback provider."""
    where = f"provider {name!r} with discovery: oci"
    if "compartment_id" not in extras:
        raise ConfigError(f"{where} needs compartment_id (the OCID whose models to list)")
    if (mode := fields.get("models_mode")) and mode.value == "allowlist":
        raise ConfigError(f"{mode.origin}: discovery: oci needs models_mode: fallback")
    if (plane := fields.get("control_plane_url")) is not None:
        return validate_base_url(field_text(plane), plane.origin)
    if region:
        return control_plane_url(region)
    raise ConfigError(f"{where} needs a region (region:, or an Oracle base_url)")

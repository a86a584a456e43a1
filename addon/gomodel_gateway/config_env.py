"""Providers defined by environment variables: ORACLE_BASE_URL / _API_KEY / _MODELS / _REGION
define the provider "oracle", ORACLE_<NAME>_* the provider "oracle-<name>". An entry overrides
the same field of a `providers:` block, and a missing field is explained in these terms."""

import re
from collections.abc import Mapping

from .config_values import RawField

DEFAULT_PROVIDER = "oracle"  # the provider the unsuffixed ORACLE_* variables define
SUFFIXED_ENV = re.compile(r"^ORACLE_([A-Z0-9_]+?)_(BASE_URL|API_KEY|MODELS|REGION)$")
ENV_FIELDS = {"BASE_URL": "base_url", "API_KEY": "api_key", "MODELS": "models", "REGION": "region"}


def env_provider_name(suffix: str) -> str:
    """ORACLE_EU_WEST_* -> oracle-eu-west (GoModel's naming)."""
    return f"oracle-{suffix.lower().replace('_', '-')}"


def env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, RawField]]:
    """Provider fields set through ORACLE_* variables; an empty value counts as unset."""
    overrides: dict[str, dict[str, RawField]] = {}
    for variable, value in env.items():
        if not value.strip():
            continue
        if variable in ("ORACLE_BASE_URL", "ORACLE_API_KEY", "ORACLE_MODELS", "ORACLE_REGION"):
            name, key = DEFAULT_PROVIDER, ENV_FIELDS[variable.removeprefix("ORACLE_")]
        elif match := SUFFIXED_ENV.match(variable):
            name, key = env_provider_name(match.group(1)), ENV_FIELDS[match.group(2)]
        else:
            continue
        overrides.setdefault(name, {})[key] = RawField(value, f"environment variable {variable}")
    return overrides


def describe_missing(name: str, key: str, raw: RawField | None) -> str:
    """Why a provider's base_url or api_key is missing, and which variable or key would set it."""
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

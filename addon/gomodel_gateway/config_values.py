"""Checks shared by every section of the configuration: one raw value, with where it came from
(a file's key or an environment variable), becomes a typed value or a `ConfigError` naming that
place. Pure: the values are passed in.
"""

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .adapt import ModelRules
from .providers import MODELS_MODES, ModelsMode
from .resilience import FailoverPolicy, RetryPolicy, Timeouts


class ConfigError(Exception):
    """A configuration that must stop the gateway; the message names the file and key."""


@dataclass
class RawField:
    """A raw configuration value before validation, with where it came from for messages."""

    value: Any
    origin: str
    unset_variables: tuple[str, ...] = ()


def field_text(raw: RawField | None) -> str:
    """The field's string, stripped; "" when absent or not a string."""
    return raw.value.strip() if raw is not None and isinstance(raw.value, str) else ""


def parse_models_mode(value: Any, origin: str) -> ModelsMode:
    if value not in MODELS_MODES:
        raise ConfigError(f"{origin}: models_mode must be one of {', '.join(MODELS_MODES)}")
    return value


def parse_refresh_seconds(value: Any, origin: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{origin}: models_refresh_seconds must be a positive number")
    return float(value)


def parse_rules(budgets: RawField | None, renames: RawField | None) -> ModelRules:
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

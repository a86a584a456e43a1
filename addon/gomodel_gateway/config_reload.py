"""Reloading a config file that changed while the gateway serves: what refuses a reload, so the
previous configuration keeps serving."""

from pathlib import Path
from typing import Any

from .config_file import parse_yaml, read_text
from .config_values import ConfigError
from .providers import GatewayConfig

KEEPS_SERVING = "the previous configuration keeps serving"


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

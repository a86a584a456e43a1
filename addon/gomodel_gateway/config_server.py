"""The `server:` section: the keys clients must present (GOMODEL_MASTER_KEY, server.master_keys,
server.keys), as one `KeyRing`."""

from collections.abc import Mapping
from typing import Any

from .config_expansion import expand_variables
from .config_values import ConfigError
from .keys import KeyConfigError, KeyRing, parse_client_keys

SERVER_KEYS = frozenset({"master_keys", "keys"})
MASTER_KEY_ENV = "GOMODEL_MASTER_KEY"


def parse_server(server: Any, where: str, env: Mapping[str, str]) -> KeyRing:
    """Master keys first, then the client keys of server.keys."""
    master_keys = _master_keys(server, where, env)  # checks server: too
    try:
        keys = parse_client_keys(
            (server or {}).get("keys"),
            where,
            lambda raw: expand_variables(raw, env),
            master_keys,
        )
    except KeyConfigError as e:
        raise ConfigError(str(e)) from e
    return KeyRing(keys)


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

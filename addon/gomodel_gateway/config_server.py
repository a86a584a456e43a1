"""The `server:` section: the keys clients must present (GOMODEL_MASTER_KEY, server.master_keys,
server.keys: a name, the key or its SHA-256, model patterns and limits), as one `KeyRing`."""

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .config_expansion import expand_variables
from .config_values import ConfigError
from .keys import ANONYMOUS, MASTER, REPLAY, RESERVED_NAMES, ClientKey, KeyRing, digest
from .limits import Limits

SERVER_KEYS = frozenset({"master_keys", "keys"})
MASTER_KEY_ENV = "GOMODEL_MASTER_KEY"
KEY_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
KEY_FIELDS = frozenset(
    {"key", "key_sha256", "models", "requests_per_minute", "tokens_per_minute", "tokens_per_day"}
)
LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")


def parse_server(server: Any, where: str, env: Mapping[str, str]) -> KeyRing:
    """Master keys first, then the client keys of server.keys."""
    master_keys = _master_keys(server, where, env)  # checks server: too
    return KeyRing(parse_client_keys((server or {}).get("keys"), where, env, master_keys))


def _master_keys(server: Any, where: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """GOMODEL_MASTER_KEY plus server.master_keys. A key that expands to nothing is an error:
    a typo in a variable name must not leave the gateway open."""
    if server is None:
        server = {}
    if not isinstance(server, dict):
        raise ConfigError(f"{where}: server must be a mapping")
    reject_unknown(server, SERVER_KEYS, f"{where}: server", "key")
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


def parse_client_keys(
    block: Any,
    where: str,
    env: Mapping[str, str],
    master_keys: Iterable[str],
) -> tuple[ClientKey, ...]:
    """server.keys: name -> {key | key_sha256, models, limits}, validated, with ${VAR} expanded
    from `env`; master keys come first, named MASTER."""
    keys = [ClientKey(MASTER, digest(key), admin=True) for key in master_keys]
    if block is None:
        return tuple(keys)
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where}: server.keys must map key names to keys")
    for name, entry in block.items():
        origin = f"{where}: server.keys.{name}"
        keys.append(_client_key(name, entry, origin, env))
    seen: dict[bytes, str] = {}
    for key in keys:
        if key.digest in seen:
            raise ConfigError(
                f"{where}: server.keys: {key.name!r} has the same key as {seen[key.digest]!r}"
            )
        seen[key.digest] = key.name
    return tuple(keys)


def _client_key(name: Any, entry: Any, origin: str, env: Mapping[str, str]) -> ClientKey:
    if not isinstance(name, str) or not KEY_NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise ConfigError(
            f"{origin}: a key's name is 1-64 lowercase letters, digits, '.', '_', '-' (and not "
            f"{MASTER!r}, {ANONYMOUS!r} or {REPLAY!r}: the gateway's own names)"
        )
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{origin} must be a mapping (key or key_sha256, models, limits)")
    reject_unknown(entry, KEY_FIELDS, origin, "field")
    key_digest = _key_digest(entry, origin, env)
    return ClientKey(
        name, key_digest, _key_models(entry.get("models"), origin), _key_limits(entry, origin)
    )


def _key_digest(entry: Mapping[str, Any], origin: str, env: Mapping[str, str]) -> bytes:
    """SHA-256 of `key` (with ${VAR}), or `key_sha256` as given: exactly one of them."""
    if ("key" in entry) == ("key_sha256" in entry):
        raise ConfigError(f"{origin}: give exactly one of key and key_sha256")
    if "key" in entry:
        raw = entry["key"]
        if not isinstance(raw, str):
            raise ConfigError(f"{origin}.key must be a string (use ${{VAR}})")
        key, unset = expand_variables(raw, env)
        if not key.strip():
            missing = f" ({', '.join(unset)} not set)" if unset else ""
            raise ConfigError(f"{origin}.key is empty{missing}")
        return digest(key.strip())
    hexdigest = entry["key_sha256"]
    if not isinstance(hexdigest, str) or not SHA256_HEX.match(hexdigest.strip().lower()):
        raise ConfigError(f"{origin}.key_sha256 must be 64 hexadecimal digits, quoted")
    return bytes.fromhex(hexdigest.strip())


def _key_models(value: Any, origin: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{origin}.models must be a non-empty list of model patterns")
    for pattern in value:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ConfigError(f"{origin}.models: {pattern!r} is not a model pattern")
    return tuple(pattern.strip() for pattern in value)


def _key_limits(entry: Mapping[str, Any], origin: str) -> Limits:
    values: dict[str, int] = {}
    for name in LIMIT_FIELDS:
        if name not in entry:
            continue
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{origin}.{name} must be a whole number of at least 1")
        values[name] = value
    return Limits(**values)


def reject_unknown(
    mapping: Mapping[Any, Any], known: Collection[str], prefix: str, noun: str
) -> None:
    """A name the section does not know is an error naming it and what is known."""
    for name in mapping:
        if name not in known:
            raise ConfigError(
                f"{prefix}.{name}: unknown {noun}; expected one of " + ", ".join(sorted(known))
            )

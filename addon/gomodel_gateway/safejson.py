"""JSON parsing for untrusted input (clients' bodies, Oracle's answers)."""

import json
from typing import Any


class DuplicateKeyError(ValueError):
    """An object names the same key twice; `key` is that key (unclipped: clip it to echo it)."""

    def __init__(self, key: str) -> None:
        super().__init__("an object has the same key twice")
        self.key = key


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str, *, unique_keys: bool = False, standard: bool = False) -> Any:
    """json.loads that fails only with ValueError: bad JSON, bad UTF-8, or nesting so deep that
    the parser would otherwise raise RecursionError.

    With `unique_keys`, a repeated key in any object is a DuplicateKeyError: json keeps the last
    one, while the bytes the gateway forwards let another parser read the first. With
    `standard`, NaN, Infinity and -Infinity (which Python reads, and JSON has not) are refused:
    what the gateway forwards, other parsers read as strictly as the standard.
    """
    pairs_hook = _unique_object if unique_keys else None
    constant = _no_constant if standard else None
    try:
        return json.loads(data, object_pairs_hook=pairs_hook, parse_constant=constant)
    except RecursionError as e:
        raise ValueError("JSON is nested too deeply") from e


def object_or_none(data: bytes | str) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (not JSON, another type): for answers whose
    fields are read where present."""
    try:
        document = loads(data)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None

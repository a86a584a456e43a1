"""Model aliases: names clients send (an app hard-wired to OpenAI sends `gpt-4o-mini`) mapped to
a model the gateway serves (`openai.gpt-oss-120b`, or a pinned `oracle-eu/xai.grok-4`).

YAML `aliases:` (alias -> target, in file order) and `GOMODEL_ALIASES="alias=target,..."` (an
entry overrides the YAML one of the same alias). An alias may be a glob with `*`
(`"gpt-*": openai.gpt-oss-120b`). Resolution: an exact alias first, then the served model ids,
then the globs in order; so an exact alias can redirect a real id (say, pin it to a region),
while a catch-all glob never hides one. Pure: nothing here knows about mitmproxy.
"""

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from .model_ids import is_model_id

ALIASES_ENV = "GOMODEL_ALIASES"
# A model id (see model_ids.is_model_id) in which `*` may stand for any run of characters.
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9._:/@+*-]*$")


@dataclass(frozen=True)
class Alias:
    name: str  # an exact name or a glob
    target: str  # a model id or provider/model
    origin: str  # where it was set, for messages

    @property
    def is_glob(self) -> bool:
        return "*" in self.name

    def matches(self, model: str) -> bool:
        return fnmatchcase(model, self.name) if self.is_glob else model == self.name


class AliasError(ValueError):
    """A malformed alias; the message names where it was set."""


def parse_aliases(block: Any, env: Mapping[str, str], where: str) -> tuple[Alias, ...]:
    """The YAML block and the environment variable, validated; env entries override."""
    entries: dict[str, Alias] = {}
    if block is not None:
        if not isinstance(block, dict):
            raise AliasError(f"{where}: aliases must map alias names to model ids")
        for name, target in block.items():
            entries[str(name)] = _alias(name, target, f"{where}: aliases.{name}")
    for item in env.get(ALIASES_ENV, "").split(","):
        if not item.strip():
            continue
        name, equals, target = item.partition("=")
        origin = f"environment variable {ALIASES_ENV}"
        if not equals:
            raise AliasError(f"{origin}: {item.strip()!r} is not alias=target")
        alias = _alias(name.strip(), target.strip(), origin)
        entries.pop(alias.name, None)  # an override takes the environment's place in order
        entries[alias.name] = alias
    return tuple(entries.values())


def _alias(name: Any, target: Any, origin: str) -> Alias:
    if not isinstance(name, str) or not ALIAS_PATTERN.fullmatch(name) or ".." in name:
        rule = "letters, digits, . _ - : @ +, and * for any run"
        raise AliasError(f"{origin}: {name!r} is not a model name ({rule})")
    if not isinstance(target, str) or not is_model_id(target):  # one model: no * either
        raise AliasError(f"{origin}: the target {target!r} is not a model id")
    return Alias(name, target, origin)


def find_alias(aliases: Iterable[Alias], model: str, served: Callable[[str], bool]) -> Alias | None:
    """The alias a requested name resolves through, if any (see the module docstring).
    `served(model)` says whether the name is a model the gateway serves itself."""
    aliases = tuple(aliases)
    for alias in aliases:
        if not alias.is_glob and alias.name == model:
            return alias
    if served(model):
        return None
    return next((a for a in aliases if a.is_glob and a.matches(model)), None)

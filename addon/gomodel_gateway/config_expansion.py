"""`${VAR}` and `${VAR:-default}` in configuration values, expanded from the environment."""

import re
from collections.abc import Mapping

EXPANSION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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

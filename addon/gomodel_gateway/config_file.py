"""Reading a config file: UTF-8 text, YAML with no key named twice, a mapping at the top."""

from pathlib import Path
from typing import Any

import yaml

from .config_values import ConfigError


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

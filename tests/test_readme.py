"""The README's YAML examples: each parses as the gateway parses config.yaml, and each full
configuration loads, so a copied example never fails at startup."""

import re
from pathlib import Path

import pytest
from gomodel_gateway.config import load_config
from gomodel_gateway.config_expansion import EXPANSION
from gomodel_gateway.config_file import parse_yaml

README = Path(__file__).resolve().parent.parent / "README.md"
CHICAGO = "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com/20231130/actions/v1"
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def yaml_blocks() -> list[tuple[int, str]]:
    """(line of the opening fence, block text) for every ```yaml block."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in YAML_BLOCK.finditer(text)]


BLOCKS = yaml_blocks()


def test_the_readme_has_yaml_examples() -> None:
    assert len(BLOCKS) >= 4
    assert any("master_keys" in block for _, block in BLOCKS)


@pytest.mark.parametrize(("line", "block"), BLOCKS, ids=[f"line-{line}" for line, _ in BLOCKS])
def test_readme_yaml_examples_parse_and_full_configs_load(
    line: int, block: str, tmp_path: Path
) -> None:
    document = parse_yaml(block, f"README.md, block at line {line}")
    if not {"providers", "server"} & set(document):
        return  # a fragment (e.g. timeouts:), shown to be placed in a config
    path = tmp_path / "config.yaml"
    path.write_text(block)
    # Every ${VAR} set, so that nothing is skipped for an unset variable.
    env = {
        name: CHICAGO if name.endswith("_URL") else f"value-of-{name}"
        for name, _ in EXPANSION.findall(block)
    }
    config = load_config(path, env, required=True)
    if "providers" in document:
        assert config.providers, config.warnings
    assert config.warnings == ()
    if "master_keys" in block:
        assert len(config.keys.keys) >= 2

"""The package's one boundary: only the addons and what patches or views mitmproxy import it;
the call service and every module it uses can be read, run and tested without mitmproxy."""

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "addon" / "gomodel_gateway"
FACING_MITMPROXY = {
    "addon",  # the four addons, composed
    "lifecycle",
    "guard",
    "connections",
    "gateway",
    "flows",  # between a flow and a Call
    "modes",  # mitmproxy's mode specs
    "contentview",
    "workarounds",
}
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", sorted(set(MODULES) - FACING_MITMPROXY))
def test_a_module_of_the_call_imports_no_mitmproxy(module: str) -> None:
    probe = (
        f"import sys; import gomodel_gateway.{module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mitmproxy'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == "[]"


def test_the_list_of_modules_facing_mitmproxy_names_only_real_modules() -> None:
    assert set(MODULES) >= FACING_MITMPROXY

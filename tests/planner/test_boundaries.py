"""The planner's layer: it imports nothing from the platform's other packages and reads no environment itself
outside its command-line entry point (issue 7)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLANNER = Path(__file__).resolve().parents[2] / "planner"
FORBIDDEN = ("deploy", "gateway", "autoscale", "replicas")
MODULES = sorted(PLANNER.glob("*.py"))


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_planner_imports_no_other_platform_package(path):
    """No module of planner/ imports deploy, gateway, autoscale or replicas (at any depth of the file)."""
    bad = [m for m in _imports(path) if m.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_only_the_entry_point_reads_the_environment(path):
    """os.environ and os.getenv appear only in planner/commands.py; ray_backend only sets the one flag Ray needs
    before it is imported to stay on loopback."""
    if path.name == "commands.py":
        return
    allowed = 'os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"'
    lines = [ln.strip() for ln in path.read_text().splitlines() if "os.environ" in ln or "getenv" in ln]
    assert all(ln.startswith(allowed) for ln in lines), lines


def test_every_module_declares_all():
    """Each module lists its public names in __all__."""
    missing = [p.name for p in MODULES if p.name != "__main__.py" and "__all__" not in p.read_text()]
    assert not missing

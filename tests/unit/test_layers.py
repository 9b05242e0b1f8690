"""Dependencies point one way: core <- locks <- events <- service / nodes (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "omninode_bridge"

# package -> packages of ours it must never import
FORBIDDEN = {
    "core": {"locks", "events", "service", "nodes", "codegen", "demos"},
    "locks": {"events", "service", "nodes", "codegen", "demos"},
    "events": {"service", "nodes", "codegen", "demos"},
    "service": {"nodes", "codegen"},
    "codegen": {"locks", "events", "service", "nodes", "demos"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_layering(package: str) -> None:
    bad = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        if "templates" in path.parts:
            continue
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] == "omninode_bridge" and len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert bad == []

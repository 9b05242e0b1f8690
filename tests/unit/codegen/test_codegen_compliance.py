"""Unit tests of the compliance rules and the atomic writer (inline file-tree fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from omninode_bridge.codegen.compliance import check_node_dir
from omninode_bridge.codegen.writer import RECORD_NAME, Staging, check_writable, make_record
from omninode_bridge.core import ModelOnexError

CONTRACT = """schema_version: v2.0.0
name: NodeWidgetEffect
version: {major: 1, minor: 0, patch: 0}
node_type: effect
description: Widgets for the compliance tests.
io_operations:
  - name: get_widget
"""


def build_file_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def node_source(base: str = "NodeEffect", extra: str = "", code: str = "INVALID_INPUT") -> str:
    return f"""from omninode_bridge.core import EnumCoreErrorCode, {base}


class NodeWidgetEffect({base}):
    async def execute_effect(self, request: object) -> object:
        raise ValueError(EnumCoreErrorCode.{code})

    async def _handle_get_widget(self, request: object) -> dict[str, object]:
        return {{}}
{extra}"""


def test_compliant_node(tmp_path: Path) -> None:
    root = build_file_tree(tmp_path, {"node.py": node_source(), "contract.yaml": CONTRACT})
    assert check_node_dir(root) == []


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (node_source(base="NodeCompute"), "must subclass NodeEffect"),
        (node_source(code="NOT_A_CODE"), "EnumCoreErrorCode.NOT_A_CODE does not exist"),
        (
            node_source(
                extra="\n    async def _handle_extra(self, request: object) -> None:\n        return None\n"
            ),
            "handler _handle_extra has no contract operation",
        ),
        ("x = 1\n", "defines no Node"),
        ("def broken(:\n", "not valid Python"),
    ],
)
def test_violations(tmp_path: Path, source: str, fragment: str) -> None:
    root = build_file_tree(tmp_path, {"node.py": source, "contract.yaml": CONTRACT})
    problems = check_node_dir(root)
    assert any(fragment in p for p in problems), problems


def test_missing_handler_and_contract(tmp_path: Path) -> None:
    contract = CONTRACT + "  - name: put_widget\n"
    root = build_file_tree(tmp_path, {"node.py": node_source(), "contract.yaml": contract})
    assert any("'put_widget' has no handler" in p for p in check_node_dir(root))
    (root / "contract.yaml").unlink()
    assert "contract: contract.yaml is missing" in check_node_dir(root)


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper")
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(ModelOnexError, match="not a directory"):
        check_writable(blocker / "sub")


def test_staging_commit_is_all_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    staging = Staging(out, "widget_effect", "v1_0_0")
    record = make_record({}, "1.0.0", "sha", {"node.py": "x = 1\n", "models/__init__.py": ""})
    staging.put({"node.py": "x = 1\n", "models/__init__.py": "", RECORD_NAME: record}, '"""pkg"""\n')
    assert not (out / "widget_effect").exists()
    target = staging.commit(force=False)
    staging.discard()
    assert (target / "node.py").read_text(encoding="utf-8") == "x = 1\n"
    assert sorted(p.name for p in out.iterdir()) == ["widget_effect"]
    (target / "mine.py").write_text("MINE = 1\n", encoding="utf-8")  # the user's: in no record
    again = Staging(out, "widget_effect", "v1_0_0")
    again.put({"node.py": "x = 2\n"}, '"""pkg"""\n')
    with pytest.raises(ModelOnexError, match="already exists"):
        again.commit(force=False)
    assert (target / "node.py").read_text(encoding="utf-8") == "x = 1\n"
    again.commit(force=True)
    again.discard()
    assert (target / "node.py").read_text(encoding="utf-8") == "x = 2\n"
    assert not (target / "models").exists()  # generated before, not any more: removed
    assert (target / "mine.py").read_text(encoding="utf-8") == "MINE = 1\n"  # never deleted by --force
    assert sorted(p.name for p in out.iterdir()) == ["widget_effect"]

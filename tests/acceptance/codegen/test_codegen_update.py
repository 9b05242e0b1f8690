"""Acceptance: `omninode-generate update` keeps hand edits, merges template changes, stops on conflicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from codegen_helpers import copy_templates, tree

from omninode_bridge.codegen.cli import main
from omninode_bridge.codegen.pipeline import GenerateOptions, generate
from omninode_bridge.codegen.update import merge3, update_node

DESCRIPTION = "Store shipping labels in PostgreSQL with TTL"
OLD_DOC = '"""Base metrics plus per-operation call counts."""'
NEW_DOC = '"""Base metrics plus per-operation call counts (template 1.2)."""'
HAND_METHOD = '''
    def label_prefix(self) -> str:
        """Hand-written helper that update must keep."""
        return "LBL"
'''


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    result = generate(
        GenerateOptions(
            description=DESCRIPTION, output_dir=tmp_path / "out", run_tests=False, publish_event=False
        )
    )
    assert result.success
    return Path(result.node_dir)


@pytest.fixture
def new_templates(tmp_path: Path) -> Path:
    """The packaged templates plus a change: version 1.4.0, new docstring, README line."""
    templates = copy_templates(tmp_path / "templates-1.2")
    (templates / "meta.json").write_text('{"template_version": "1.4.0"}\n', encoding="utf-8")
    base = templates / "_node_base.py.j2"
    base.write_text(base.read_text(encoding="utf-8").replace(OLD_DOC, NEW_DOC), encoding="utf-8")
    readme = templates / "README.md.j2"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nUpdated by template 1.2.\n", encoding="utf-8")
    return templates


def run_update(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["update", *argv])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_update_without_changes_is_a_no_op(node_dir: Path) -> None:
    before = tree(node_dir)
    result = update_node(node_dir)
    assert not result.conflicts
    assert set(result.actions.values()) == {"unchanged"}
    assert tree(node_dir) == before


def test_update_keeps_hand_edits_and_merges_template_change(
    node_dir: Path, new_templates: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_py = node_dir / "node.py"
    node_py.write_text(node_py.read_text(encoding="utf-8") + HAND_METHOD, encoding="utf-8")
    code, out, _ = run_update([str(node_dir), "--template-dir", str(new_templates), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["applied"] is True
    assert report["actions"]["node.py"] == "merged (hand edits + template)"
    assert report["actions"]["README.md"] == "updated (template)"
    merged = node_py.read_text(encoding="utf-8")
    assert "def label_prefix(self) -> str:" in merged
    assert NEW_DOC in merged and OLD_DOC not in merged
    assert "Updated by template 1.2." in (node_dir / "README.md").read_text(encoding="utf-8")
    record = json.loads((node_dir / ".omninode-generate.json").read_text(encoding="utf-8"))
    assert record["template_version"] == "1.4.0"
    compile(merged, "node.py", "exec")
    again = update_node(node_dir, new_templates)
    assert again.applied and not again.conflicts
    assert again.actions["node.py"] == "kept (hand edits)"


def test_conflicting_edit_is_reported_and_nothing_changes(
    node_dir: Path, new_templates: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_py = node_dir / "node.py"
    node_py.write_text(
        node_py.read_text(encoding="utf-8").replace(OLD_DOC, '"""My own metrics docstring."""'),
        encoding="utf-8",
    )
    before = tree(node_dir)
    code, out, err = run_update([str(node_dir), "--template-dir", str(new_templates)], capsys)
    assert code == 1
    assert "CONFLICT node.py" in out
    assert "<<<<<<< yours" in out
    assert "no file was changed" in err
    assert tree(node_dir) == before


def test_update_of_a_folder_without_record_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_update([str(tmp_path)], capsys)
    assert code == 2
    assert "not made by omninode-generate" in err


def test_merge3_clean_and_conflicting() -> None:
    base = "a\nb\nc\nd\ne\n"
    merged, conflicted = merge3("a\nB\nc\nd\ne\n", base, "a\nb\nc\nd\nE\n")
    assert (merged, conflicted) == ("a\nB\nc\nd\nE\n", False)
    _, conflicted = merge3("a\nX\nc\nd\ne\n", base, "a\nY\nc\nd\ne\n")
    assert conflicted


def test_conflict_report_shows_hunks_not_whole_files(
    node_dir: Path, new_templates: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_py = node_dir / "node.py"
    node_py.write_text(
        node_py.read_text(encoding="utf-8").replace(OLD_DOC, '"""My own metrics docstring."""'),
        encoding="utf-8",
    )
    code, out, _ = run_update([str(node_dir), "--template-dir", str(new_templates)], capsys)
    assert code == 1
    assert "@@ lines " in out
    assert "class Node" not in out  # the rest of node.py is not printed
    assert len(out.splitlines()) < 30


def test_inline_conflicts_then_resolution_is_accepted_by_the_next_update(
    node_dir: Path, new_templates: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_py = node_dir / "node.py"
    mine = '"""My own metrics docstring."""'
    node_py.write_text(node_py.read_text(encoding="utf-8").replace(OLD_DOC, mine), encoding="utf-8")
    args = [str(node_dir), "--template-dir", str(new_templates)]
    code, out, err = run_update([*args, "--conflicts", "inline"], capsys)
    assert code == 0, err
    text = node_py.read_text(encoding="utf-8")
    assert "<<<<<<< yours" in text and ">>>>>>> template" in text and mine in text and NEW_DOC in text
    assert "resolve them, then run update again" in err
    record = json.loads((node_dir / ".omninode-generate.json").read_text(encoding="utf-8"))
    assert record["template_version"] == "1.4.0"  # the new render is the base from now on
    # Unresolved markers stop the next update, and omninode-check reports them.
    code, out, _ = run_update(args, capsys)
    assert code == 1 and "unresolved conflict markers" in out
    from omninode_bridge.codegen.check import check_paths

    assert "update: unresolved conflict markers in node.py" in check_paths([node_dir])[str(node_dir)]
    # The user resolves: keeps their docstring.
    lines, keep = [], True
    for line in text.splitlines(keepends=True):
        if line.startswith("<<<<<<<"):
            continue
        if line.startswith("======="):
            keep = False
            continue
        if line.startswith(">>>>>>>"):
            keep = True
            continue
        if keep:
            lines.append(line)
    node_py.write_text("".join(lines), encoding="utf-8")
    compile(node_py.read_text(encoding="utf-8"), "node.py", "exec")
    code, out, err = run_update(args, capsys)
    assert code == 0, out + err
    assert mine in node_py.read_text(encoding="utf-8")
    assert "kept (hand edits)" in out
    assert check_paths([node_dir]) == {str(node_dir): []}


def test_answers_are_shown_and_changed_then_applied_by_update(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["answers", str(node_dir)])
    out, _ = capsys.readouterr()
    assert "operations" in out and "NodeShippingLabelEffect" in out
    main(["answers", str(node_dir), "description=Store shipping labels in PostgreSQL for carriers"])
    _, err = capsys.readouterr()
    assert "apply them with: omninode-generate update" in err
    result = update_node(node_dir)
    assert result.applied and not result.conflicts
    assert "for carriers" in (node_dir / "README.md").read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["answers", str(node_dir), "node_type=compute"])
    assert info.value.code == 2
    _, err = capsys.readouterr()
    assert "cannot be changed in place" in err and len(err.strip().splitlines()) == 1


def test_help_lists_update_and_answers(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out, _ = capsys.readouterr()
    assert "omninode-generate update NODE_DIR" in out and "omninode-generate answers NODE_DIR" in out


def test_user_module_survives_force_passes_check_and_dry_run_lists_it(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from omninode_bridge.codegen.check import check_paths

    rates = node_dir / "rates.py"
    rates.write_text('"""Shipping rates, hand-written."""\n\nRATES = {"eu": 4.5}\n', encoding="utf-8")
    assert check_paths([node_dir]) == {str(node_dir): []}
    out_dir = node_dir.parent.parent
    dry = generate(
        GenerateOptions(
            description=DESCRIPTION, output_dir=out_dir, dry_run=True, run_tests=False, publish_event=False
        )
    )
    assert dry.kept == ["rates.py"]
    assert "node.py" in dry.replaced and "rates.py" not in dry.replaced
    forced = generate(
        GenerateOptions(
            description=DESCRIPTION, output_dir=out_dir, force=True, run_tests=False, publish_event=False
        )
    )
    assert forced.success
    assert rates.read_text(encoding="utf-8").endswith('RATES = {"eu": 4.5}\n')
    assert check_paths([node_dir]) == {str(node_dir): []}
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(node_dir / "tests" / "test_contract.py"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=out_dir,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_hand_owned_and_deleted_files_are_kept_over_a_template_change(
    node_dir: Path, new_templates: Path
) -> None:
    node_py = node_dir / "node.py"
    mine = node_py.read_text(encoding="utf-8").replace(OLD_DOC, '"""My own metrics docstring."""')
    mine = mine.replace("from __future__", "# omninode-generate: hand-owned\n\nfrom __future__", 1)
    node_py.write_text(mine, encoding="utf-8")  # would conflict with the template's change
    (node_dir / "README.md").unlink()  # changed by the template too
    result = update_node(node_dir, new_templates)
    assert result.applied and not result.conflicts, result.conflicts
    assert result.actions["node.py"] == "kept (hand-owned)"
    assert node_py.read_text(encoding="utf-8") == mine  # byte for byte, no merge
    assert result.actions["README.md"] == "kept removed (yours)"
    assert not (node_dir / "README.md").exists()
    again = update_node(node_dir, new_templates)
    assert again.applied and not again.conflicts and not (node_dir / "README.md").exists()


def test_the_version_stamp_follows_the_template_next_to_a_hand_edit(
    node_dir: Path, new_templates: Path
) -> None:
    dockerfile = node_dir / "Dockerfile"
    lines = dockerfile.read_text(encoding="utf-8").splitlines(keepends=True)
    assert "(template " in lines[1]  # the stamp, right below the line we edit
    lines[0] = "# Our image of the node (edited by hand).\n"
    dockerfile.write_text("".join(lines), encoding="utf-8")
    result = update_node(node_dir, new_templates)
    assert result.applied and not result.conflicts, result.conflicts
    text = dockerfile.read_text(encoding="utf-8").splitlines()
    assert text[0] == "# Our image of the node (edited by hand)."
    assert "(template 1.4.0)" in text[1]


def test_a_moved_node_updates_with_the_style_it_was_generated_with(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "ruff.toml").write_text("line-length = 80\n", encoding="utf-8")
    result = generate(
        GenerateOptions(description=DESCRIPTION, output_dir=host, run_tests=False, publish_event=False)
    )
    assert result.success
    record = json.loads((Path(result.node_dir) / ".omninode-generate.json").read_text(encoding="utf-8"))
    assert record["style"]["line_length"] == 80
    moved = tmp_path / "elsewhere" / Path(result.node_dir).name  # no ruff.toml above it
    shutil.copytree(result.node_dir, moved)
    before = tree(moved)
    update = update_node(moved)
    assert not update.conflicts and set(update.actions.values()) == {"unchanged"}
    assert tree(moved) == before

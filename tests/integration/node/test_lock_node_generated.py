"""The lock node is a generated scaffold plus hand edits: ``omninode-generate update`` keeps
the customisation (byte for byte where it should), merges template changes into the files
edited in place, and the updated copy still imports, passes ``omninode-check`` and locks on
a real PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from omninode_bridge.codegen.check import is_hand_written
from omninode_bridge.codegen.render import MARKER, TEMPLATE_DIR
from omninode_bridge.codegen.update import update_node
from omninode_bridge.codegen.writer import RECORD_NAME, is_hand_owned, read_record

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
NODE_DIR = ROOT / "src/omninode_bridge/nodes/distributed_lock_effect/v1_0_0"
BIN = Path(sys.executable).parent
# files the hand edits rewrote whole (a hand-owned line), removed, and edited in place
HAND_OWNED = {
    "node.py",
    "__init__.py",
    "contract.yaml",
    "Dockerfile",
    "README.md",
    "models/__init__.py",
    "models/model_config.py",
    "models/model_request.py",
    "models/model_response.py",
}
REMOVED = {"adapters.py", "backend.py", "events.py", "tests/test_unit.py", "tests/conftest.py"}
EDITED = {"service_manifest.yaml", "deployment_manifest.yaml"}
USER_MODULES = {"models/enum_lock_operation.py", "models/enum_lock_status.py", "models/model_lock_info.py"}


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The committed node folder, copied to ``tmp/pkg/distributed_lock_effect/v1_0_0``."""
    package = tmp_path / "pkg" / "distributed_lock_effect"
    shutil.copytree(NODE_DIR, package / "v1_0_0", ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__init__.py").write_text('"""Copy of the lock node."""\n', encoding="utf-8")
    return package / "v1_0_0"


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


def test_committed_node_is_a_generated_scaffold_with_hand_edits() -> None:
    record = read_record(NODE_DIR)
    assert record["generator"] == "omninode-generate" and record["answers"]["source"] == "contract"
    assert record["answers"]["name"] == "NodeDistributedLockEffect"
    assert not is_hand_written(NODE_DIR)  # no opt-out of the marker check any more
    on_disk = tree(NODE_DIR)
    assert set(record["files"]) >= HAND_OWNED | EDITED and set(record["files"]) >= REMOVED
    for rel in HAND_OWNED:
        text = on_disk[rel].decode()
        assert MARKER in text and is_hand_owned(text), rel
        assert text != record["pristine"][rel], rel  # customised, not the bare scaffold
    for rel in EDITED:
        assert MARKER in on_disk[rel].decode() and not is_hand_owned(on_disk[rel].decode())
        assert on_disk[rel].decode() != record["pristine"][rel]
    assert not REMOVED & set(on_disk) and set(on_disk) - set(record["files"]) >= USER_MODULES
    # no in-memory backend or second copy of lock logic: the node calls LockClient
    node_py = on_disk["node.py"].decode()
    assert "from omninode_bridge.locks.client import LockClient" in node_py
    assert "backend" not in node_py.lower().replace("in-memory backend", "")
    assert run(str(BIN / "omninode-check"), str(ROOT / "src")).returncode == 0


def test_update_with_the_same_templates_changes_no_byte(copy: Path) -> None:
    before = tree(copy)
    done = run(str(BIN / "omninode-generate"), "update", str(copy))
    assert done.returncode == 0, done.stdout + done.stderr
    assert tree(copy) == before  # the record too: same render, same style (line length 110)
    for rel in HAND_OWNED:
        assert f"kept (hand-owned)                {rel}" in done.stdout
    assert "kept removed (yours)             backend.py" in done.stdout
    assert "CONFLICT" not in done.stdout


def new_templates(folder: Path) -> Path:
    """The packaged templates at 1.4.0, changed in files the hand edits own, removed and edited."""
    templates = folder / "templates-1.4"
    shutil.copytree(TEMPLATE_DIR, templates)
    (templates / "meta.json").write_text('{"template_version": "1.4.0"}\n', encoding="utf-8")
    changes = {
        "_node_base.py.j2": ('"""Base metrics plus per-operation call counts."""', '"""Metrics (1.4)."""'),
        "README.md.j2": ("## ", "Updated by template 1.4.\n\n## "),
        "backend.py.j2": (
            "from __future__ import annotations\n",
            "from __future__ import annotations\n\n# 1.4\n",
        ),
        "service_manifest.yaml.j2": ('"{{ version_text }}"\n', '"{{ version_text }}"\n    template: "1.4"\n'),
    }
    for name, (old, new) in changes.items():
        path = templates / name
        text = path.read_text(encoding="utf-8")
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return templates


def test_update_on_new_templates_keeps_the_customisation_and_merges_the_rest(copy: Path) -> None:
    before = tree(copy)
    result = update_node(copy, new_templates(copy.parents[2]))
    assert result.applied and not result.conflicts, result.conflicts
    after = tree(copy)
    for rel in HAND_OWNED | USER_MODULES:
        assert after[rel] == before[rel], rel  # byte for byte
        assert result.actions.get(rel, "kept (hand-owned)") == "kept (hand-owned)"
    assert not REMOVED & set(after)
    # an in-place hand edit (port 8070, tags) and the template's change (interval) both land
    manifest = after["service_manifest.yaml"].decode()
    assert 'template: "1.4"' in manifest and "port: 8070" in manifest and "- postgresql" in manifest
    assert result.actions["service_manifest.yaml"] == "merged (hand edits + template)"
    # the version stamp moved with the template, the hand-edited line around it stayed
    assert "# Generated by omninode-generate (template 1.4.0), then edited by hand." in manifest
    record = json.loads(after[RECORD_NAME])
    assert record["template_version"] == "1.4.0" and record["style"]["line_length"] == 110
    check = run(str(BIN / "omninode-check"), str(copy))
    assert check.returncode == 0, check.stdout


IMPORT_AND_LOCK = """
import asyncio, sys
from omninode_bridge.core import ModelONEXContainer
from distributed_lock_effect.v1_0_0.node import NodeDistributedLockEffect
import distributed_lock_effect.v1_0_0.models as models

async def main():
    node = NodeDistributedLockEffect(ModelONEXContainer({"dsn": sys.argv[1], "cleanup_interval": 3600}))
    await node.initialize()
    got = await node.process({"operation": "acquire", "lock_name": "gen", "owner_id": "a"})
    busy = await node.process({"operation": "acquire_lock", "lock_name": "gen", "owner_id": "b",
                               "max_acquire_attempts": 1})
    gone = await node.process({"operation": "release", "lock_name": "gen", "owner_id": "a"})
    info = await node.process({"operation": "query", "lock_name": "gen"})
    await node.cleanup()
    print(models.__file__)
    print(got.success, got.token is not None, busy.error_code, gone.success, info.lock_info.status.value)

asyncio.run(main())
"""


def test_updated_copy_imports_and_locks_on_postgresql(copy: Path, dsn: str) -> None:
    update_node(copy, new_templates(copy.parents[2]))
    env = {**os.environ, "PYTHONPATH": str(copy.parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_LOCK, dsn], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    where, outcome = done.stdout.strip().splitlines()
    assert where.startswith(str(copy))  # the copy's own modules, not the installed package
    assert outcome == "True True LOCK_HELD_BY_OTHER True available"

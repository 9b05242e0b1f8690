"""Acceptance: omninode-check flags hand-made nodes, bad error codes and bad contracts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from omninode_bridge.codegen.check import check_command
from omninode_bridge.codegen.pipeline import GenerateOptions, generate

HAND_MADE = """from omninode_bridge.core import NodeEffect


class NodeWidgetEffect(NodeEffect):
    async def execute_effect(self, request):
        return request
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check")
    result = generate(
        GenerateOptions(
            description="Send welcome emails over SMTP with retry",
            output_dir=root,
            run_tests=False,
            publish_event=False,
        )
    )
    assert result.success
    return Path(result.node_dir)


def test_passes_on_generated_nodes(generated: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from omninode_bridge.codegen.check import main; main()",
            str(generated.parent.parent),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    assert f"1 node folder checked below {generated.parent.parent}, 0 with problems" in proc.stdout


def test_fails_on_a_hand_made_node_folder(tmp_path: Path) -> None:
    node = tmp_path / "widget_effect" / "v1_0_0"
    node.mkdir(parents=True)
    (node / "node.py").write_text(HAND_MADE, encoding="utf-8")
    result = CliRunner().invoke(check_command, [str(tmp_path)])
    assert result.exit_code == 1
    assert "hand-made" in result.output
    assert "contract.yaml is missing" in result.output


def test_fails_on_a_non_existent_error_code(generated: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "node"
    shutil.copytree(generated, copy)
    node_py = copy / "node.py"
    node_py.write_text(
        node_py.read_text(encoding="utf-8").replace(
            "EnumCoreErrorCode.INITIALIZATION_FAILED", "EnumCoreErrorCode.LOCK_TIMEOUT_NOPE"
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(check_command, [str(copy)])
    assert result.exit_code == 1
    assert "EnumCoreErrorCode.LOCK_TIMEOUT_NOPE does not exist" in result.output


def test_fails_on_an_invalid_contract_and_missing_handler(generated: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "node"
    shutil.copytree(generated, copy)
    contract = copy / "contract.yaml"
    text = contract.read_text(encoding="utf-8")
    contract.write_text(text + "surprise_key: 1\n", encoding="utf-8")
    result = CliRunner().invoke(check_command, [str(copy)])
    assert result.exit_code == 1
    assert "unknown top-level key" in result.output
    data = yaml.safe_load(text)
    data["io_operations"].append({"name": "resend_email", "description": "resend"})
    contract.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(check_command, [str(copy)])
    assert "contract operation 'resend_email' has no handler" in result.output


LOCK_NODE = "src/omninode_bridge/nodes/distributed_lock_effect/v1_0_0"
LOCK_CONTRACT = {
    "schema_version": "v2.0.0",
    "name": "NodeDistributedLockEffect",
    "version": {"major": 1, "minor": 0, "patch": 0},
    "node_type": "effect",
    "description": "Distributed locks on PostgreSQL with leases and fencing tokens.",
    "subcontracts": {"effect": {"operations": [{"name": "acquire_lock"}, {"name": "release_lock"}]}},
}
LOCK_NODE_PY = '''# omninode-check: hand-written
"""The distributed lock node (hand-written, not generated)."""

from omninode_bridge.core import EnumCoreErrorCode, NodeEffect


class NodeDistributedLockEffect(NodeEffect):
    async def execute_effect(self, request: object) -> object:
        raise ValueError(EnumCoreErrorCode.INVALID_INPUT)

    async def _handle_acquire_lock(self, request: object) -> dict[str, object]:
        return {}

    async def _handle_release_lock(self, request: object) -> dict[str, object]:
        return {}
'''


def lock_tree(root: Path, node_py: str = LOCK_NODE_PY, contract: dict[str, object] | None = None) -> Path:
    """The lock node's future layout: node.py, contract, models/, tests/ (nothing carries the marker)."""
    node = root / LOCK_NODE
    files = {
        "node.py": node_py,
        "contract.yaml": yaml.safe_dump(contract or LOCK_CONTRACT, sort_keys=False),
        "__init__.py": "",
        "models/__init__.py": "",
        "models/model_request.py": "class ModelLockRequest: ...\n",
        "tests/__init__.py": "",
        "tests/test_node.py": "def test_x() -> None: ...\n",
        "README.md": "# Distributed lock node\n",
    }
    for rel, text in files.items():
        (node / rel).parent.mkdir(parents=True, exist_ok=True)
        (node / rel).write_text(text, encoding="utf-8")
    return node


def test_hand_written_lock_node_opts_out_of_the_marker_only(tmp_path: Path) -> None:
    node = lock_tree(tmp_path)
    result = CliRunner().invoke(check_command, [str(tmp_path / "src")])
    assert result.exit_code == 0, result.output
    assert f"ok   {node} (hand-written: marker check skipped)" in result.output
    assert "1 node folder checked below" in result.output


@pytest.mark.parametrize(
    ("contract", "node_py", "expected"),
    [
        pytest.param({**LOCK_CONTRACT, "surprise": 1}, LOCK_NODE_PY, "unknown top-level key", id="contract"),
        pytest.param(
            {**LOCK_CONTRACT, "subcontracts": {"effect": {"operations": [{"name": "acquire_lock"}]}}},
            LOCK_NODE_PY,
            "handler _handle_release_lock has no contract operation",
            id="handler-without-operation",
        ),
        pytest.param(
            LOCK_CONTRACT,
            LOCK_NODE_PY.replace("INVALID_INPUT", "LOCK_NOT_HELD_NOPE"),
            "EnumCoreErrorCode.LOCK_NOT_HELD_NOPE does not exist",
            id="error-code",
        ),
        pytest.param(
            LOCK_CONTRACT,
            LOCK_NODE_PY.replace("(NodeEffect)", "(object)"),
            "must subclass NodeEffect",
            id="base-class",
        ),
    ],
)
def test_hand_written_node_still_gets_compliance_and_contract_checks(
    tmp_path: Path, contract: dict[str, object], node_py: str, expected: str
) -> None:
    lock_tree(tmp_path, node_py, contract)
    result = CliRunner().invoke(check_command, [str(tmp_path / "src")])
    assert result.exit_code == 1
    assert "(hand-written: marker check skipped)" in result.output
    assert expected in result.output, result.output


def test_hand_written_node_manifests_are_validated(tmp_path: Path, generated: Path) -> None:
    node = lock_tree(tmp_path)
    for name in ("deployment_manifest.yaml", "service_manifest.yaml", "Dockerfile"):
        (node / name).write_text((generated / name).read_text(encoding="utf-8"), encoding="utf-8")
    assert CliRunner().invoke(check_command, [str(node)]).exit_code == 0
    service = node / "service_manifest.yaml"
    service.write_text(service.read_text(encoding="utf-8").replace("port: 8080", "port: 0"), encoding="utf-8")
    result = CliRunner().invoke(check_command, [str(node)])
    assert result.exit_code == 1
    assert "manifest: service_manifest.yaml .service.port" in result.output


@pytest.mark.parametrize(
    "opt_out",
    [
        pytest.param('"""omninode-check: hand-written"""\n', id="in-a-docstring"),
        pytest.param("x = 1  # omninode-check: hand-written\n", id="trailing-comment"),
        pytest.param("# omninode-check: hand-written, mostly\n", id="qualified"),
    ],
)
def test_opt_out_must_be_an_explicit_comment_line(tmp_path: Path, opt_out: str) -> None:
    lock_tree(tmp_path, LOCK_NODE_PY.replace("# omninode-check: hand-written\n", opt_out))
    result = CliRunner().invoke(check_command, [str(tmp_path / "src")])
    assert result.exit_code == 1
    assert "this node folder was hand-made" in result.output


def test_repository_src_passes_as_in_ci() -> None:
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", "from omninode_bridge.codegen.check import main; main()", "src"],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout
    assert re.search(r"^\d+ node folders? checked below src, 0 with problems$", proc.stdout, re.MULTILINE)
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.index(".venv/bin/omninode-check src") > ci.index("make test")

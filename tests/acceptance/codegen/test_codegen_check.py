"""Acceptance: omninode-check flags hand-made nodes, bad error codes and bad contracts."""

from __future__ import annotations

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
    assert "1 node folder(s) checked, 0 with problems" in proc.stdout


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


def test_hand_written_opt_out(tmp_path: Path) -> None:
    node = tmp_path / "widget"
    node.mkdir()
    (node / "node.py").write_text("# omninode-check: hand-written\n" + HAND_MADE, encoding="utf-8")
    result = CliRunner().invoke(check_command, [str(node)])
    assert "hand-made" not in result.output

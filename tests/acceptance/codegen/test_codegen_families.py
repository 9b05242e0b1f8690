"""Acceptance: effect backends declare only what their operations use; orchestrator runs are not replaced."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from codegen_helpers import DESCRIPTIONS, Corpus

from omninode_bridge.codegen.operations import kind_of
from omninode_bridge.codegen.pipeline import GenerateOptions, generate
from omninode_bridge.codegen.render import BACKEND_FAMILIES
from omninode_bridge.codegen.writer import RECORD_NAME
from omninode_bridge.core import EnumCoreErrorCode

FAMILY_METHODS = {
    "store": {"put", "get", "update", "delete", "list_keys"},
    "queue": {"send", "receive"},
    "lock": {"acquire", "release", "extend"},
}


def backend_methods(backend_py: str) -> tuple[set[str], set[str]]:
    """Public async methods of the backend Protocol and of the in-memory backend."""
    protocol, _, in_memory = backend_py.partition("\nclass InMemory")
    found = [set(re.findall(r"^    async def (\w+)\(", part, re.MULTILINE)) for part in (protocol, in_memory)]
    return found[0], found[1]


def expected_methods(operations: list[str]) -> set[str]:
    kinds = {kind_of("effect", op) for op in operations}
    families = [f for f, members in BACKEND_FAMILIES.items() if kinds.intersection(members)]
    methods = {"ping", "close"} | {m for f in families for m in FAMILY_METHODS[f]}
    if "store" in families or "lock" in families:
        methods.add("cleanup_expired")
    return methods


def test_corpus_backends_declare_only_the_methods_their_operations_use(corpus: Corpus) -> None:
    effects = [r for r in corpus.results if r.node_type == "effect"]
    assert effects
    for result in effects:
        node_dir = Path(result.node_dir)
        record = json.loads((node_dir / RECORD_NAME).read_text(encoding="utf-8"))
        expected = expected_methods(record["answers"]["operations"])
        assert backend_methods((node_dir / "backend.py").read_text(encoding="utf-8")) == (expected, expected)
    by_name = {r.node_name: Path(r.node_dir) for r in effects}
    crud, _ = backend_methods((by_name["NodeUserProfileEffect"] / "backend.py").read_text(encoding="utf-8"))
    assert not {"send", "receive"} & crud
    kafka, _ = backend_methods((by_name["NodeOrderEffect"] / "backend.py").read_text(encoding="utf-8"))
    assert kafka == {"ping", "close", "send", "receive"}


@pytest.mark.parametrize(
    ("description", "methods"),
    [
        (
            "Store user profiles in PostgreSQL with TTL",
            {"ping", "close", "put", "get", "update", "delete", "list_keys", "cleanup_expired"},
        ),
        (
            "Acquire and release locks in Redis with TTL",
            {"ping", "close", "cleanup_expired", "acquire", "release", "extend"},
        ),
    ],
)
def test_single_family_nodes_pass_their_full_gate(
    description: str, methods: set[str], tmp_path: Path
) -> None:
    """Storage-only and lock-only nodes: no dead send/receive, score 1.0, 100 % coverage."""
    result = generate(GenerateOptions(description=description, output_dir=tmp_path, publish_event=False))
    assert result.success, result.error
    node_dir = Path(result.node_dir)
    assert backend_methods((node_dir / "backend.py").read_text(encoding="utf-8")) == (methods, methods)
    conftest = (node_dir / "tests" / "conftest.py").read_text(encoding="utf-8")
    assert "def send(" not in conftest and "def receive(" not in conftest
    assert result.quality is not None
    assert result.quality.score == 1.0, result.quality.reasons
    assert result.quality.coverage == 100.0
    again = generate(
        GenerateOptions(
            description=description,
            output_dir=tmp_path / "again",
            run_tests=False,
            publish_event=False,
        )
    )
    assert (Path(again.node_dir) / "backend.py").read_bytes() == (node_dir / "backend.py").read_bytes()


RESEND = """
import asyncio, importlib, json, sys
mod = importlib.import_module(sys.argv[1] + ".v1_0_0.node")
from omninode_bridge.core import ModelONEXContainer
steps_for_tests = importlib.import_module(sys.argv[1] + ".v1_0_0.tests.conftest").memory_services()
node = getattr(mod, sys.argv[2])(ModelONEXContainer({}, **steps_for_tests))
op = sys.argv[3]
steps = [{"name": "a"}, {"name": "b", "depends_on": ["a"]}]

async def main():
    await node.initialize()
    out = []
    for body in (
        {"workflow_id": "wf-x", "steps": steps},
        {"workflow_id": "wf-x", "steps": list(reversed(steps))},
        {"workflow_id": "wf-x", "steps": [{"name": "other"}]},
    ):
        response = await node.execute_orchestration(node_request(op, body))
        out.append({"success": response.success, "error_code": response.error_code, "result": response.result})
    print(json.dumps(out))

def node_request(op, body):
    models = importlib.import_module(sys.argv[1] + ".v1_0_0.models")
    request = next(getattr(models, n) for n in dir(models) if n.startswith("Model") and n.endswith("Request"))
    return request(operation=op, **body)

asyncio.run(main())
"""


def test_orchestrator_run_resent_with_a_known_workflow_id(corpus: Corpus) -> None:
    """Same steps: the existing run comes back; different steps: refused, the run kept."""
    orchestrators = [r for r in corpus.results if r.node_type == "orchestrator"]
    assert len(orchestrators) == sum(1 for _, t in DESCRIPTIONS if t == "orchestrator")
    for result in orchestrators:
        node_dir = Path(result.node_dir)
        record = json.loads((node_dir / RECORD_NAME).read_text(encoding="utf-8"))
        run_op = next(op for op in record["answers"]["operations"] if kind_of("orchestrator", op) == "run")
        proc = subprocess.run(
            [sys.executable, "-c", RESEND, node_dir.parent.name, result.node_name, run_op],
            capture_output=True,
            text=True,
            check=False,
            cwd=corpus.root,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        first, same, different = json.loads(proc.stdout)
        assert first["success"] and first["result"]["status"] == "completed"
        assert same == first
        assert not different["success"]
        assert different["error_code"] == EnumCoreErrorCode.INVALID_STATE.value
        unit = (node_dir / "tests" / "test_unit.py").read_text(encoding="utf-8")
        assert f"def test_{run_op}_refuses_other_steps_for_a_known_id(" in unit

"""Acceptance: varied descriptions over all four node types generate working packages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from codegen_helpers import DESCRIPTIONS, FLAGSHIP, Corpus, tree

from omninode_bridge.codegen.check import check_paths
from omninode_bridge.codegen.manifests import KUBERNETES_VERSION, manifest_problems
from omninode_bridge.codegen.pipeline import GenerateOptions, generate
from omninode_bridge.codegen.refine import lint_command
from omninode_bridge.codegen.writer import RECORD_NAME
from omninode_bridge.core.contract import contract_operations

MIN_ACCURACY = 0.85


def test_every_description_generates_a_package(corpus: Corpus) -> None:
    failures = [(r.node_name, r.error) for r in corpus.results if not r.success]
    assert not failures
    assert len(corpus.results) >= 12
    assert set(Counter(r.node_type for r in corpus.results)) == {
        "effect",
        "compute",
        "reducer",
        "orchestrator",
    }
    for result in corpus.results:
        expected = 17 if result.node_type == "effect" else 16
        assert len(result.files) >= expected, (result.node_name, result.files)
        assert Path(result.node_dir, "node.py").exists()


def test_classification_accuracy(corpus: Corpus) -> None:
    hits = [r.node_type == expected for r, (_, expected) in zip(corpus.results, DESCRIPTIONS, strict=True)]
    accuracy = sum(hits) / len(hits)
    for result, (description, expected) in zip(corpus.results, DESCRIPTIONS, strict=True):
        mark = "ok " if result.node_type == expected else "MISS"
        print(
            f"{mark} {expected:<12} -> {result.node_type:<12} {result.confidence:.2f} {result.node_name}: {description}"
        )
    print(f"classification accuracy: {accuracy:.1%} ({sum(hits)}/{len(hits)})")
    assert accuracy >= MIN_ACCURACY


def test_generated_suites_pass_with_coverage(corpus: Corpus) -> None:
    assert corpus.suite.returncode == 0, corpus.suite.stdout[-3000:]
    assert " passed" in corpus.suite.stdout
    print(corpus.suite.stdout.strip().splitlines()[-1])
    for node_dir, percent in sorted(corpus.coverage.items()):
        print(f"coverage {percent:5.1f}%  {Path(node_dir).parent.name}")
    assert len(corpus.coverage) == len(corpus.results)
    assert min(corpus.coverage.values()) >= 80.0
    print(f"corpus generation + suites: {corpus.seconds:.1f} s")


def test_generated_nodes_pass_omninode_check(corpus: Corpus) -> None:
    results = check_paths([corpus.root])
    assert len(results) == len(corpus.results)
    assert all(not problems for problems in results.values()), results


def test_generated_code_is_ruff_clean(corpus: Corpus) -> None:
    cmd = lint_command(corpus.root)
    assert cmd is not None
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout
    for result in corpus.results:
        assert result.quality is not None
        assert result.quality.checks["lint"].score == 1.0, (result.node_name, result.quality.checks["lint"])


def test_flagship_prompt_generates_the_lock_node(corpus: Corpus, tmp_path: Path) -> None:
    """The brief's command, with the full gate: name, folder, operations, score 1.0, passing tests."""
    result = generate(
        GenerateOptions(description=FLAGSHIP, node_type="effect", output_dir=tmp_path, publish_event=False)
    )
    assert result.success, result.error
    assert (result.node_name, result.node_type, result.confidence) == (
        "NodeDistributedLockEffect",
        "effect",
        1.0,
    )
    node_dir = Path(result.node_dir)
    assert node_dir == tmp_path / "distributed_lock_effect" / "v1_0_0"
    contract = yaml.safe_load((node_dir / "contract.yaml").read_text(encoding="utf-8"))
    assert contract_operations(contract) == ["acquire_lock", "release_lock", "extend_lock", "cleanup_expired"]
    assert [s["name"] for s in contract["dependencies"]["services"]] == ["postgres"]
    assert {"lock_ttl_seconds", "pool_max_size", "default_ttl_seconds"} <= set(contract["configuration"])
    record = json.loads((node_dir / RECORD_NAME).read_text(encoding="utf-8"))
    assert record["answers"]["features"] == ["ttl", "cleanup", "pooling", "metrics", "health"]
    assert record["answers"]["entity"] == "lock"
    assert result.quality is not None
    assert result.quality.score == 1.0, result.quality.reasons
    tests = result.quality.checks["tests"]
    assert (tests.score, tests.skipped) == (1.0, False), tests.detail
    assert result.quality.coverage is not None and result.quality.coverage >= 80.0
    unit = (node_dir / "tests" / "test_unit.py").read_text(encoding="utf-8")
    for name in (
        "test_acquire_lock_refuses_a_second_owner_until_released",
        "test_acquire_lock_takes_over_an_expired_lease",
        "test_release_lock_needs_the_live_lease_and_is_idempotent",
        "test_extend_lock_renews_a_held_lease_and_fails_once_expired",
        "test_cleanup_expired_removes_what_expired",
    ):
        assert f"def {name}(" in unit
    # Same prompt without --node-type (the corpus run): byte-identical node.
    in_corpus = next(r for r in corpus.results if r.node_name == "NodeDistributedLockEffect")
    assert tree(Path(in_corpus.node_dir)) == tree(node_dir)
    # Regenerated from its contract: same entity, so the same code.
    again = generate(
        GenerateOptions(
            from_contract=node_dir / "contract.yaml",
            output_dir=tmp_path / "from-contract",
            run_tests=False,
            publish_event=False,
        )
    )
    assert again.success, again.error
    for rel in ("node.py", "backend.py", "models/enum_distributed_lock_operation.py"):
        assert (Path(again.node_dir) / rel).read_bytes() == (node_dir / rel).read_bytes(), rel


@pytest.mark.parametrize("node_type", ["effect", "compute", "reducer", "orchestrator"])
def test_long_names_still_give_ruff_clean_code(node_type: str, tmp_path: Path) -> None:
    name = f"NodeCustomerSubscriptionEntitlementReconciliation{node_type.capitalize()}"
    description = (
        "Store customer subscription entitlement records in PostgreSQL with retries and circuit breaker"
    )
    result = generate(
        GenerateOptions(
            description=description,
            node_type=node_type,
            name=name,
            output_dir=tmp_path,
            run_tests=False,
            publish_event=False,
        )
    )
    assert result.success, result.error
    assert result.quality is not None
    assert result.quality.checks["lint"].score == 1.0, result.quality.checks["lint"].detail


def test_generated_code_is_mypy_strict_clean(corpus: Corpus) -> None:
    picked: dict[str, Path] = {}
    for result in corpus.results:
        picked.setdefault(result.node_type, Path(result.node_dir).parent)
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--follow-imports=silent",
        "--explicit-package-bases",
        "--cache-dir=/dev/null",
        *map(str, picked.values()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=corpus.root)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_generated_manifests_pass_real_validators(corpus: Corpus) -> None:
    """Kubernetes schema (strict), Consul service JSON Schema and hadolint, on every node."""
    for result in corpus.results:
        problems, skipped = manifest_problems(Path(result.node_dir))
        assert (problems, skipped) == ([], []), (result.node_name, problems, skipped)
        assert result.quality is not None
        stage6 = result.quality.checks["manifests"]
        assert (stage6.score, stage6.skipped) == (1.0, False), (result.node_name, stage6)
        assert stage6.detail == "3 validator(s) passed"
    print(
        f"{len(corpus.results)} nodes: deployment_manifest.yaml valid for Kubernetes {KUBERNETES_VERSION}"
        " (strict), service_manifest.yaml valid Consul definitions, Dockerfiles hadolint-clean"
    )

"""Acceptance: varied descriptions over all four node types generate working packages."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from codegen_helpers import DESCRIPTIONS, Corpus

from omninode_bridge.codegen.check import check_paths
from omninode_bridge.codegen.manifests import KUBERNETES_VERSION, manifest_problems
from omninode_bridge.codegen.refine import lint_command

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

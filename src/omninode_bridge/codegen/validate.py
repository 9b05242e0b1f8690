"""Stage 6: validation — compile, import, lint, manifests, ONEX compliance, tests — and the gate.

The checks that need a process (import, ruff, hadolint, pytest with coverage)
start together and run in parallel; the Kubernetes and Consul manifests are
validated in-process meanwhile (see :mod:`omninode_bridge.codegen.manifests`). The weighted score must reach
:data:`QUALITY_GATE`, and compilation/import must succeed, or nothing is written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omninode_bridge.codegen.compliance import check_node_dir
from omninode_bridge.codegen.manifests import (
    DEPLOYMENT_MANIFEST,
    SERVICE_MANIFEST,
    consul_problems,
    hadolint_command,
    hadolint_findings,
    kubernetes_problems,
)
from omninode_bridge.codegen.refine import RuffStyle, lint_command

_SUMMARY_RE = re.compile(r"\b\d+ (passed|failed|errors?)\b")
QUALITY_GATE = 0.8
MIN_COVERAGE = 80.0
WEIGHTS = {
    "compile": 0.2,
    "import": 0.2,
    "lint": 0.1,
    "manifests": 0.15,
    "compliance": 0.25,
    "tests": 0.25,
}
BLOCKING = ("compile", "import")

_IMPORT_PROBE = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
module = importlib.import_module(sys.argv[2])
cls = getattr(module, sys.argv[3])
print(json.dumps({"class": cls.__name__, "bases": [b.__name__ for b in cls.__mro__]}))
"""


@dataclass
class Check:
    """One scored check."""

    score: float
    detail: str = ""
    skipped: bool = False


@dataclass
class ValidationReport:
    """Outcome of stage 6."""

    checks: dict[str, Check]
    score: float
    passed: bool
    reasons: list[str] = field(default_factory=list)
    coverage: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _compile(files: dict[str, str]) -> Check:
    problems = []
    for rel, text in sorted(files.items()):
        try:
            if rel.endswith(".py"):
                compile(text, rel, "exec")
            elif rel.endswith(".yaml"):
                list(yaml.safe_load_all(text))
        except (SyntaxError, yaml.YAMLError) as err:
            problems.append(f"{rel}: {str(err).splitlines()[0]}")
    return Check(0.0 if problems else 1.0, "; ".join(problems[:3]))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def _start(cmd: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
    )


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:] if line.strip())


def validate(
    stage_root: Path,
    package: str,
    vdir: str,
    class_name: str,
    files: dict[str, str],
    *,
    run_tests: bool,
    style: RuffStyle | None = None,
) -> ValidationReport:
    """Validate the node staged at ``stage_root/package/vdir`` (``files`` are its contents)."""
    node_dir = stage_root / package / vdir
    checks: dict[str, Check] = {"compile": _compile(files)}
    env = _env()
    with tempfile.TemporaryDirectory(prefix="omninode-validate-") as tmp:
        procs: dict[str, subprocess.Popen[str]] = {}
        probe = [sys.executable, "-c", _IMPORT_PROBE, str(stage_root), f"{package}.{vdir}.node", class_name]
        procs["import"] = _start(probe, env, tmp)
        lint = lint_command(node_dir, style)
        if lint is not None:
            procs["lint"] = _start(lint, env, tmp)
        coverage_json = Path(tmp) / "coverage.json"
        if run_tests:
            rc = Path(tmp) / "coveragerc"
            # adapters.py talks to real services: its tests (test_adapters.py) measure it where
            # the services run; the gate's coverage must not depend on them being reachable.
            rc.write_text(
                "[run]\nbranch = True\nomit =\n    */tests/*\n    */adapters.py\n", encoding="utf-8"
            )
            env_tests = {**env, "COVERAGE_FILE": str(Path(tmp) / ".coverage")}
            pytest_cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-rfE",
                "-p",
                "no:cacheprovider",
                "-x",
                "-W",
                "ignore::DeprecationWarning",
                f"--cov={node_dir}",
                f"--cov-config={rc}",
                f"--cov-report=json:{coverage_json}",
                "--no-cov-on-fail",
                # the adapters' tests need real services; they run in the node's own suite
                f"--ignore={node_dir / 'tests' / 'test_adapters.py'}",
                str(node_dir / "tests"),
            ]
            procs["tests"] = _start(pytest_cmd, env_tests, tmp)
        hadolint = hadolint_command(node_dir / "Dockerfile")
        if hadolint is not None:
            procs["hadolint"] = _start(hadolint, env, tmp)
        manifest_problems, skipped = _manifests(files)
        violations = check_node_dir(node_dir)  # in-process, while the subprocesses run
        outputs = {name: proc.communicate()[0] for name, proc in procs.items()}
        codes = {name: proc.returncode for name, proc in procs.items()}
        checks["import"] = Check(
            1.0 if codes["import"] == 0 else 0.0, "" if codes["import"] == 0 else _tail(outputs["import"], 3)
        )
        if lint is None:
            checks["lint"] = Check(1.0, "ruff not found", skipped=True)
        else:
            issues = [line for line in outputs["lint"].splitlines() if ".py:" in line]
            checks["lint"] = Check(max(0.0, 1.0 - len(issues) / 20), "; ".join(issues[:3]))
        coverage = None
        if run_tests:
            coverage = _coverage(coverage_json)
            ok = codes["tests"] == 0 and coverage is not None and coverage >= MIN_COVERAGE
            failed = [ln for ln in outputs["tests"].splitlines() if ln.startswith(("FAILED", "ERROR"))]
            detail = ("; ".join(failed[:3]) or _pytest_summary(outputs["tests"])) + (
                f" | coverage {coverage:.1f}%" if coverage is not None else ""
            )
            checks["tests"] = Check(1.0 if ok else 0.0, detail)
        else:
            checks["tests"] = Check(0.0, "test gate disabled (--no-test-gate)", skipped=True)
    if hadolint is None:
        skipped.append("hadolint")
    else:
        manifest_problems.extend(hadolint_findings(outputs["hadolint"], codes["hadolint"]))
    checks["manifests"] = _manifest_check(manifest_problems, skipped, ran=3 - len(skipped))
    checks["compliance"] = Check(0.0 if violations else 1.0, "; ".join(violations[:5]))
    return _score(checks, coverage)


def _manifests(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """Kubernetes and Consul problems of the rendered manifests, and the validators missing."""
    problems = consul_problems(files.get(SERVICE_MANIFEST, ""))
    kubernetes = kubernetes_problems(files.get(DEPLOYMENT_MANIFEST, ""))
    if kubernetes is None:
        return problems, ["kubernetes-validate"]
    return kubernetes + problems, []


def _manifest_check(problems: list[str], skipped: list[str], ran: int) -> Check:
    """Each finding costs a third of the check (three validators); skipped ones are noted."""
    note = f" (not installed, skipped: {', '.join(skipped)})" if skipped else ""
    score = max(0.0, 1.0 - len(problems) / 3)
    detail = "; ".join(problems[:3]) if problems else f"{ran} validator(s) passed"
    return Check(score, detail + note)


def _pytest_summary(output: str) -> str:
    """pytest's closing ``N passed in Xs`` line (or the output's tail when there is none)."""
    lines = [line.strip("= ") for line in output.splitlines()]
    summary = next((ln for ln in reversed(lines) if _SUMMARY_RE.search(ln)), None)
    return summary or _tail(output, 2)


def _coverage(path: Path) -> float | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return float(data["totals"]["percent_covered"])


def _score(checks: dict[str, Check], coverage: float | None) -> ValidationReport:
    active = {name: c for name, c in checks.items() if not c.skipped}
    total_weight = sum(WEIGHTS[name] for name in active)
    score = round(sum(WEIGHTS[name] * c.score for name, c in active.items()) / total_weight, 3)
    reasons = [
        f"{name}: {c.detail or 'failed'}" for name, c in checks.items() if c.score < 1.0 and not c.skipped
    ]
    blocked = [name for name in BLOCKING if checks[name].score < 1.0]
    passed = score >= QUALITY_GATE and not blocked
    if score < QUALITY_GATE:
        reasons.insert(0, f"quality score {score:.2f} is below the gate {QUALITY_GATE}")
    return ValidationReport(checks, score, passed, reasons if not passed or reasons else [], coverage)

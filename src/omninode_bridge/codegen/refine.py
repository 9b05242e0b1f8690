"""Stage 7: refinement — ``ruff check --fix`` and ``ruff format`` on the generated code.

Ruff runs with a fixed, location-independent configuration so the same input
gives byte-identical output wherever the node is generated.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RUFF_SETTINGS = [
    "--isolated",
    "--line-length",
    "100",
    "--target-version",
    "py311",
]
RUFF_ISORT = ["--config", "lint.isort.known-first-party = ['omninode_bridge']"]
RUFF_RULES = ["--select", "E,F,W,I,B,UP,C90,SIM,RUF,ASYNC", "--ignore", "RUF012"]


def ruff_executable() -> str | None:
    """The ruff binary next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "ruff"
    if beside.exists():
        return str(beside)
    return shutil.which("ruff")


@dataclass
class RefineReport:
    """What refinement did."""

    ran: bool
    changed_files: list[str]
    detail: str = ""


def refine(root: Path) -> RefineReport:
    """Auto-fix and format every Python file below ``root`` in place."""
    ruff = ruff_executable()
    if ruff is None:
        return RefineReport(False, [], "ruff not found; code left as rendered")
    before = {p: p.read_bytes() for p in sorted(root.rglob("*.py"))}
    fix = [ruff, "check", *RUFF_SETTINGS, *RUFF_ISORT, *RUFF_RULES, "--fix-only", "-q", str(root)]
    fmt = [ruff, "format", *RUFF_SETTINGS, "-q", str(root)]
    for cmd in (fix, fmt):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode not in (0, 1):
            return RefineReport(True, [], f"ruff failed: {proc.stderr.strip()[:300]}")
    changed = [str(p.relative_to(root)) for p, data in before.items() if p.read_bytes() != data]
    return RefineReport(True, changed)


def lint_command(root: Path) -> list[str] | None:
    """The ``ruff check`` command of the validation stage (None without ruff)."""
    ruff = ruff_executable()
    if ruff is None:
        return None
    return [ruff, "check", *RUFF_SETTINGS, *RUFF_ISORT, *RUFF_RULES, "--output-format", "concise", str(root)]

"""Before/after of the engine benchmark: ``python -m bench.compare --base REF [--repeat N]``.

Runs ``bench.engine`` on the git revision ``REF`` (its own source and bench, from
``git archive`` into a temporary folder) and on the working tree, alternately, ``N``
times each, on the same embedded PostgreSQL. Each run already measures the floor and
ours side by side, so the comparison is of self-normalised figures (pairs ÷ floor/2),
medians over the runs; raw rates are shown too. Writes ``bench/results/compare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ("1", "8", "32")


def engine_run(source: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``bench.engine`` run of the code under ``source`` (``src/`` and ``bench/``)."""
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    command = [
        sys.executable,
        "-m",
        "bench.engine",
        "--seconds",
        str(args.seconds),
        "--rounds",
        str(args.rounds),
        "--out",
        str(out),
    ]
    subprocess.run(command, cwd=source, env=env, check=True, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads((out / "engine.json").read_text())
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over runs: pairs/s, pairs ÷ (floor/2) per level, hand-off p50/p99."""
    out: dict[str, float] = {}
    for level in LEVELS:
        rows = [r["concurrency"][level] for r in runs]
        out[f"c{level}_pairs_s"] = statistics.median(r["pairs_s"] for r in rows)
        out[f"c{level}_ratio"] = statistics.median(r["pairs_s"] / (r["floor_ops_s"] / 2) for r in rows)
        out[f"c{level}_acquire_p95_ms"] = statistics.median(r["acquire_p95_ms"] for r in rows)
    out["handoff_p50_ms"] = statistics.median(r["handoff_p50_ms"] for r in runs)
    out["handoff_p99_ms"] = statistics.median(r["handoff_p99_ms"] for r in runs)
    out["jain"] = statistics.median(r["fairness_jain"] for r in runs)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, alternating")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    console = Console()
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="omninode-bench-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.base, "src", "bench"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        (base / ".omninode").symlink_to(ROOT / ".omninode")  # the same embedded server
        for i in range(args.repeat):
            for label, source in (("before", base), ("after", ROOT)):
                console.print(f"run {i + 1}/{args.repeat}: {label}")
                runs[label].append(engine_run(source, Path(tmp) / f"{label}-{i}", args))
    before, after = summary(runs["before"]), summary(runs["after"])
    table = Table(title=f"engine: {args.base} (before) vs working tree (after), medians of {args.repeat}")
    for column in ("figure", "before", "after", "after ÷ before"):
        table.add_column(column, justify="right")
    for key in before:
        table.add_row(key, f"{before[key]:.3f}", f"{after[key]:.3f}", f"{after[key] / before[key]:.2f}")
    console.print(table)
    result = {"base": args.base, "before": before, "after": after, "runs": runs}
    (ROOT / "bench" / "results" / "compare.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

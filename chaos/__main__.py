"""``python -m chaos`` (``make chaos``): the full run; writes bench/results/chaos.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

from chaos.run import ALL_FAULTS, FULL, Budget, run_once

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "chaos.json"


def table(result: dict[str, Any]) -> str:
    lines = [f"{'fault kind':<22} {'count':>7}"]
    lines += [f"{kind:<22} {count:>7}" for kind, count in result["faults"].items()]
    lines += [f"{kind:<22} {'skipped':>7}  ({why})" for kind, why in result["skipped"].items()]
    lines += ["", f"{'check':<22} {'violations':>10}"]
    lines += [f"{check:<22} {n:>10}" for check, n in result["checks"].items()]
    lines += ["", f"runs {result['runs']}, operations {result['operations']}, "
              f"violations {result['violations']}, {result['seconds']} s"]  # fmt: skip
    for check, examples in result.get("examples", {}).items():
        lines += [f"  {check}: {e}" for e in examples]
    return "\n".join(lines)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs as one result: counts summed, each run's summary kept under ``per_run``."""
    out: dict[str, Any] = {"runs": 0, "operations": 0, "faults": {}, "violations": 0, "checks": {}}
    for r in runs:
        out["runs"] += r.get("runs", 1)
        out["operations"] += r["operations"]
        out["violations"] += r["violations"]
        out["lazy_releases_lost"] = out.get("lazy_releases_lost", 0) + r.get("lazy_releases_lost", 0)
        for key in ("faults", "checks"):
            for k, v in r[key].items():
                out[key][k] = out[key].get(k, 0) + v
    out["seconds"] = round(sum(r["seconds"] for r in runs), 1)
    out["skipped"] = {k: v for r in runs for k, v in r.get("skipped", {}).items()}
    out["examples"] = {k: v for r in runs for k, v in r.get("examples", {}).items()}
    per_run = [p for r in runs for p in r.get("per_run", [r])]
    keep = ("seed", "seconds", "operations", "violations", "examples", "outcomes", "kafka_events",
            "outbox_events", "lazy_releases_lost", "network_faults", "engine")  # fmt: skip
    out["per_run"] = [{k: p[k] for k in keep if k in p} for p in per_run]
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--seconds", type=float, default=FULL.seconds)
    p.add_argument("--min-operations", type=int, default=FULL.min_operations)
    p.add_argument("--faults", default=",".join(sorted(ALL_FAULTS)), help="comma-separated fault kinds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--runs", type=int, default=1, help="repeat the run; the results are summed")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", type=Path, default=None, help="copy the run's histories and logs here")
    p.add_argument(
        "--pgbouncer",
        action="store_true",
        help="clients, service and relay through PgBouncer in transaction mode (writes chaos_pgbouncer.json)",
    )
    args = p.parse_args()
    budget = Budget(seconds=args.seconds, min_operations=args.min_operations,
                    lib_clients=FULL.lib_clients, http_clients=FULL.http_clients,
                    faults=frozenset(args.faults.split(",")), pgbouncer=args.pgbouncer)  # fmt: skip
    if args.pgbouncer and args.out == RESULTS:
        args.out = RESULTS.with_name("chaos_pgbouncer.json")
    results = []
    for i in range(args.runs):
        if args.seed is not None:
            budget.seed = args.seed + i
        elif i:
            budget.seed = random.randrange(1 << 30)
        keep = None if args.keep is None else args.keep / f"run{i + 1}" if args.runs > 1 else args.keep
        results.append({"runs": 1, **asyncio.run(run_once(budget, keep))})
    result = aggregate(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m chaos`` (``make chaos``): the full run; writes bench/results/chaos.json."""

from __future__ import annotations

import argparse
import asyncio
import json
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


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--seconds", type=float, default=FULL.seconds)
    p.add_argument("--min-operations", type=int, default=FULL.min_operations)
    p.add_argument("--faults", default=",".join(sorted(ALL_FAULTS)), help="comma-separated fault kinds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", type=Path, default=None, help="copy the run's histories and logs here")
    args = p.parse_args()
    budget = Budget(seconds=args.seconds, min_operations=args.min_operations,
                    lib_clients=FULL.lib_clients, http_clients=FULL.http_clients,
                    faults=frozenset(args.faults.split(",")))  # fmt: skip
    if args.seed is not None:
        budget.seed = args.seed
    result = {"runs": 1, **asyncio.run(run_once(budget, args.keep))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

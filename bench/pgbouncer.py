"""The cost of PgBouncer: ``python -m bench.pgbouncer [--dsn DSN]`` (``make bench-pgbouncer``).

acquire + release pairs/s (wait=0, one lock name per concurrent caller, no contention)
against one PostgreSQL (default: embedded under ``.omninode/bench-pgdata``), in one
process, side by side in interleaved rounds:

* **direct** — the engine's defaults (asyncpg's named prepared-statement cache);
* **direct, no cache** — ``statement_cache_size=0`` on a direct pool: the cost of
  unnamed statements alone (every call parses its statement);
* **pgbouncer** — through Debian's PgBouncer in ``pool_mode = transaction``
  (``statement_cache_size=0``, LISTEN on ``listen_dsn``, direct).

Medians of the rounds; the ratio is pgbouncer / direct. Writes
``bench/results/pgbouncer.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.topology import PgBouncer, find_pgbouncer
from omninode_bridge.core.dsn import parse_dsn
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCHEMA = "omninode_bench_pgb"
VARIANTS = ("direct", "direct_no_cache", "pgbouncer")


async def pairs_rate(locks: LockClient, clients: int, seconds: float, tag: str) -> float:
    """acquire+release pairs per second by ``clients`` concurrent callers for ``seconds``."""
    stop = time.perf_counter() + seconds
    done = 0

    async def loop(n: int) -> None:
        nonlocal done
        name = f"pgb:{tag}:{n}"
        while time.perf_counter() < stop:
            lease = await locks.acquire(name, ttl=30, wait=0)
            await locks.release(lease)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(n) for n in range(clients)))
    return done / (time.perf_counter() - started)


def variant_settings(variant: str, direct: str, bounced: str, clients: int) -> LockSettings:
    common: dict[str, Any] = {
        "schema": SCHEMA,
        "pool_min": clients,
        "pool_max": clients,
        "cleanup_interval": 3600,
    }
    if variant == "direct":
        return LockSettings(dsn=direct, **common)
    if variant == "direct_no_cache":
        return LockSettings(dsn=direct, statement_cache_size=0, **common)
    return LockSettings(dsn=bounced, listen_dsn=direct, statement_cache_size=0, **common)


async def measure(direct: str, bounced: str, clients: int, seconds: float, rounds: int) -> dict[str, Any]:
    """The three variants at one concurrency, interleaved round by round."""
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    opened = {
        v: await LockClient.connect(settings=variant_settings(v, direct, bounced, clients), cleanup=False)
        for v in VARIANTS
    }
    try:
        tag = f"{time.time_ns():x}:{clients}"
        for v in VARIANTS:  # warm-up: pools filled, statements cached
            await pairs_rate(opened[v], clients, 0.5, f"{tag}:{v}")
        for r in range(rounds):
            for v in VARIANTS:
                rates[v].append(await pairs_rate(opened[v], clients, seconds, f"{tag}:{v}:{r}"))
    finally:
        for client in opened.values():
            await client.close()
    medians = {v: round(statistics.median(rates[v]), 1) for v in VARIANTS}
    return {
        "pairs_s": medians,
        "rounds_pairs_s": {v: [round(x, 1) for x in rates[v]] for v in VARIANTS},
        "ratio_pgbouncer_to_direct": round(medians["pgbouncer"] / medians["direct"], 3),
        "ratio_no_cache_to_direct": round(medians["direct_no_cache"] / medians["direct"], 3),
    }


async def prepare(direct: str) -> str:
    conn = await asyncpg.connect(direct)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        version: str = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    async with LockClient.connect(settings=LockSettings(dsn=direct, schema=SCHEMA, pool_min=1, pool_max=1)):
        pass  # applies migrations
    return version


def pgbouncer_version() -> str:
    binary = find_pgbouncer()
    if binary is None:
        return "absent"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    direct = args.dsn or start_embedded(ROOT / ".omninode" / "bench-pgdata")
    version = await prepare(direct)
    results: dict[str, Any] = {
        "postgres": version,
        "pgbouncer": pgbouncer_version(),
        "pool_mode": "transaction",
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_average_before": round(os.getloadavg()[0], 2),
        "concurrency": {},
    }
    with PgBouncer(direct, pool_size=args.pool_size) as bouncer:
        bounced = bouncer.dsn_for(_database(direct))
        for clients in args.concurrency:
            level = await measure(direct, bounced, clients, args.seconds, args.rounds)
            results["concurrency"][str(clients)] = level
            p = level["pairs_s"]
            print(
                f"{clients:>3} clients: direct {p['direct']:>7.0f}  direct no cache {p['direct_no_cache']:>7.0f}  "
                f"pgbouncer {p['pgbouncer']:>7.0f} pairs/s  (pgbouncer/direct {level['ratio_pgbouncer_to_direct']:.2f})"
            )
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    return results


def _database(dsn: str) -> str:
    return parse_dsn(dsn).get("dbname") or "postgres"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pgbouncer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: embedded under .omninode/bench-pgdata)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32], help="e.g. 1,8,32"
    )
    parser.add_argument("--pool-size", type=int, default=20, help="PgBouncer's server connections")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if find_pgbouncer() is None:
        raise SystemExit("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    results = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pgbouncer.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'pgbouncer.json'}")


if __name__ == "__main__":
    main()

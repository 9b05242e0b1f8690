"""Lock engine benchmark: ``python -m bench.engine [--dsn DSN] [--seconds S]``.

Against one PostgreSQL (default: embedded under ``.omninode/bench-pgdata``), in one
process, it measures side by side:

* **floor** — the cheapest possible lease: one raw asyncpg upsert on a primary key
  through an asyncpg pool (each op takes a fresh name, so every op really writes);
* **pairs** — our ``acquire`` + ``release`` (wait=0, one lock name per client, so no
  contention) through :class:`LockClient`;

at 1, 8 and 32 concurrent clients, floor and ours interleaved in rounds; then the
contended hand-off latency (release -> next waiter granted, 8 waiters each with its
own :class:`LockClient`) and Jain's fairness index of 8 contenders holding 5 ms each.

Writes ``bench/results/engine.json`` and ``bench/results/engine.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCHEMA = "omninode_bench"

FLOOR_SETUP = [
    # the bench owns both schemas: start from a fresh install of the current migrations
    f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
    "CREATE SCHEMA IF NOT EXISTS bench_floor",
    "CREATE TABLE IF NOT EXISTS bench_floor.floor "
    "(name text PRIMARY KEY, owner text NOT NULL, expires_at timestamptz NOT NULL)",
    "TRUNCATE bench_floor.floor",
]
FLOOR_SQL = (
    "INSERT INTO bench_floor.floor AS floor (name, owner, expires_at) "
    "VALUES ($1, $2, now() + interval '30 s') "
    "ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
    "WHERE floor.expires_at < now() RETURNING name, owner, expires_at"
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no samples."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def jain(counts: list[int]) -> float:
    """Jain's fairness index: 1.0 when every contender got the same share."""
    total, squares = sum(counts), sum(c * c for c in counts)
    return total * total / (len(counts) * squares) if squares else 0.0


@dataclass
class Sample:
    """Ops done and per-op latencies (seconds) over some wall time."""

    ops: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Sample) -> None:
        self.ops += other.ops
        self.elapsed += other.elapsed
        self.latencies.extend(other.latencies)

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed if self.elapsed else 0.0

    def p95_ms(self) -> float:
        return percentile(self.latencies, 95) * 1000


async def drive(clients: int, seconds: float, op: Callable[[int, int], Awaitable[float]]) -> Sample:
    """Run ``op(client, i)`` in ``clients`` concurrent loops for ``seconds``.

    ``op`` returns the latency to record (seconds)."""
    stop = time.perf_counter() + seconds
    sample = Sample()

    async def loop(client: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            sample.latencies.append(await op(client, i))
            sample.ops += 1
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in range(clients)))
    sample.elapsed = time.perf_counter() - started
    return sample


async def _no_reset(conn: asyncpg.Connection) -> None:
    """The floor skips asyncpg's reset query too, as the engine's pool does."""


async def measure_level(
    dsn: str, clients: int, seconds: float, rounds: int, run_tag: str
) -> tuple[Sample, Sample]:
    """Floor and pairs at one concurrency, interleaved: floor, ours, floor, ours..."""
    # same pool options as the engine's: no per-release reset query
    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients, reset=_no_reset)
    settings = LockSettings(dsn=dsn, schema=SCHEMA, pool_min=clients, pool_max=clients)
    floor, pairs = Sample(), Sample()
    async with LockClient.connect(settings=settings, cleanup=False, owner_id="bench") as locks:

        async def floor_op(client: int, i: int) -> float:
            t0 = time.perf_counter()
            await pool.fetchrow(FLOOR_SQL, f"{run_tag}:{clients}:{client}:{i}", "bench")
            return time.perf_counter() - t0

        async def pair_op(client: int, _i: int) -> float:
            t0 = time.perf_counter()
            lease = await locks.acquire(f"bench:{run_tag}:{clients}:{client}", ttl=30, wait=0)
            acquired = time.perf_counter() - t0
            await locks.release(lease)
            return acquired

        slice_s = seconds / rounds
        await drive(clients, min(0.5, slice_s), floor_op)  # warm-up: prepared statements, pools
        await drive(clients, min(0.5, slice_s), pair_op)
        for _ in range(rounds):
            floor.add(await drive(clients, slice_s, floor_op))
            pairs.add(await drive(clients, slice_s, pair_op))
    await pool.close()
    return floor, pairs


async def measure_handoff(dsn: str, seconds: float, waiters: int, minimum: int) -> list[float]:
    """Release -> next waiter granted, one lock, ``waiters`` clients always queued.

    Both instants are ``time.perf_counter()`` in this process: the releaser stamps
    just before calling release; the waiter stamps when its acquire returns."""
    name = f"bench:handoff:{time.time_ns()}"
    settings = LockSettings(dsn=dsn, schema=SCHEMA, pool_min=1, pool_max=2, recheck_interval=2.0)
    clients = [
        await LockClient.connect(settings=settings, cleanup=False, owner_id=f"handoff-{i}")
        for i in range(waiters)
    ]
    handoffs: list[float] = []
    last_release = [0.0]
    stop = time.perf_counter() + seconds

    async def worker(locks: LockClient) -> None:
        while time.perf_counter() < stop or len(handoffs) < minimum:
            asked = time.perf_counter()
            lease = await locks.acquire(name, wait=30, ttl=30)
            granted = time.perf_counter()
            if asked < last_release[0] < granted:  # we were queued when the release began
                handoffs.append(granted - last_release[0])
            await asyncio.sleep(0.001)
            last_release[0] = time.perf_counter()
            await locks.release(lease)

    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.close()
    return handoffs


async def measure_fairness(dsn: str, seconds: float, contenders: int, hold: float) -> list[int]:
    """Grants per contender repeatedly acquiring one lock with wait, holding ``hold`` s."""
    name = f"bench:fair:{time.time_ns()}"
    settings = LockSettings(dsn=dsn, schema=SCHEMA, pool_min=1, pool_max=2, recheck_interval=2.0)
    clients = [
        await LockClient.connect(settings=settings, cleanup=False, owner_id=f"fair-{i}")
        for i in range(contenders)
    ]
    counts = [0] * contenders
    stop = time.perf_counter() + seconds

    async def worker(i: int, locks: LockClient) -> None:
        while time.perf_counter() < stop:
            lease = await locks.acquire(name, wait=30, ttl=30)
            if time.perf_counter() < stop:
                counts[i] += 1
            await asyncio.sleep(hold)
            await locks.release(lease)

    try:
        await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
    finally:
        for c in clients:
            await c.close()
    return counts


async def prepare(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in FLOOR_SETUP:
            await conn.execute(statement)
        version: str = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    async with LockClient.connect(settings=LockSettings(dsn=dsn, schema=SCHEMA, pool_min=1, pool_max=1)):
        pass  # applies migrations
    return version


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    dsn = args.dsn or start_embedded(ROOT / ".omninode" / "bench-pgdata")
    where = LockSettings(dsn=args.dsn).safe_dsn() if args.dsn else "embedded (.omninode/bench-pgdata)"
    version = await prepare(dsn)
    load_before = os.getloadavg()[0]
    console.print(
        f"PostgreSQL {version} at {where}; {args.seconds:g} s per measurement; "
        f"load average {load_before:.2f} on {os.cpu_count()} CPUs (other work skews results)"
    )
    tag = f"{time.time_ns():x}"
    results: dict[str, Any] = {"concurrency": {}}
    for clients in args.concurrency:
        floor, pairs = await measure_level(dsn, clients, args.seconds, args.rounds, tag)
        results["concurrency"][str(clients)] = {
            "floor_ops_s": round(floor.rate, 1),
            "floor_p95_ms": round(floor.p95_ms(), 3),
            "pairs_s": round(pairs.rate, 1),
            "acquire_p95_ms": round(pairs.p95_ms(), 3),
            "floor_p50_ms": round(percentile(floor.latencies, 50) * 1000, 3),
            "acquire_p50_ms": round(percentile(pairs.latencies, 50) * 1000, 3),
        }
        console.print(f"  {clients:>2} clients: {results['concurrency'][str(clients)]}")
    handoffs = await measure_handoff(dsn, args.handoff_seconds, 8, args.min_handoffs)
    results["handoff_p50_ms"] = round(percentile(handoffs, 50) * 1000, 3)
    results["handoff_p99_ms"] = round(percentile(handoffs, 99) * 1000, 3)
    results["handoff_samples"] = len(handoffs)
    console.print(f"  hand-off: {len(handoffs)} samples")
    counts = await measure_fairness(dsn, args.fairness_seconds, 8, 0.005)
    results["fairness_jain"] = round(jain(counts), 4)
    results["fairness_grants"] = counts
    results["environment"] = {
        "postgres": version,
        "database": where,
        "python": platform.python_version(),
        "seconds_per_measurement": args.seconds,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    return results


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(metric, measured, target, met) rows."""
    rows: list[tuple[str, str, str, bool]] = []
    for clients, r in results["concurrency"].items():
        need = 0.9 * r["floor_ops_s"] / 2
        rows.append(
            (
                f"pairs/s @ {clients} clients",
                f"{r['pairs_s']:.0f} (floor {r['floor_ops_s']:.0f} ops/s)",
                f">= {need:.0f} (0.9 x floor / 2)",
                r["pairs_s"] >= need,
            )
        )
    one = results["concurrency"].get("1")
    if one:
        need = 1.25 * one["floor_p95_ms"]
        rows.append(
            (
                "acquire p95 @ 1 client",
                f"{one['acquire_p95_ms']:.3f} ms (floor {one['floor_p95_ms']:.3f} ms)",
                f"<= {need:.3f} ms (1.25 x floor)",
                one["acquire_p95_ms"] <= need,
            )
        )
    rows.append(
        (
            "hand-off p50 / p99",
            f"{results['handoff_p50_ms']:.3f} / {results['handoff_p99_ms']:.3f} ms",
            "p99 <= 2 ms",
            results["handoff_p99_ms"] <= 2.0,
        )
    )
    rows.append(
        (
            "fairness (Jain, 8 x 5 ms holds)",
            f"{results['fairness_jain']:.4f} {results['fairness_grants']}",
            ">= 0.99",
            results["fairness_jain"] >= 0.99,
        )
    )
    return rows


def report(console: Console, results: dict[str, Any]) -> None:
    table = Table(title="lock engine vs raw upsert floor", title_justify="left")
    for column in ("clients", "floor ops/s", "floor p50/p95 ms", "pairs/s", "acquire p50/p95 ms"):
        table.add_column(column, justify="right")
    for clients, r in results["concurrency"].items():
        table.add_row(
            clients,
            f"{r['floor_ops_s']:.0f}",
            f"{r['floor_p50_ms']:.3f} / {r['floor_p95_ms']:.3f}",
            f"{r['pairs_s']:.0f}",
            f"{r['acquire_p50_ms']:.3f} / {r['acquire_p95_ms']:.3f}",
        )
    console.print(table)
    checks = Table(title="targets", title_justify="left")
    for column in ("metric", "measured", "target", "result"):
        checks.add_column(column)
    for metric, measured, target, met in targets(results):
        checks.add_row(metric, measured, target, "[green]PASS[/]" if met else "[red]MISS[/]")
    console.print(checks)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(results["concurrency"])
    floor = [results["concurrency"][c]["floor_ops_s"] for c in levels]
    pairs = [results["concurrency"][c]["pairs_s"] for c in levels]
    x = range(len(levels))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    ax.bar([i - width / 2 for i in x], floor, width, label="floor: raw upsert ops/s")
    ax.bar([i + width / 2 for i in x], pairs, width, label="ours: acquire+release pairs/s")
    ax.plot(x, [0.9 * f / 2 for f in floor], "k--", marker="_", label="target: 0.9 x floor / 2")
    ax.set_xticks(list(x), [f"{c} clients" for c in levels])
    ax.set_ylabel("operations per second")
    ax.set_title(f"Lock engine throughput (PostgreSQL {results['environment']['postgres']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: embedded under .omninode/bench-pgdata)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement (floor or pairs)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved floor/ours rounds per level")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32], help="e.g. 1,8,32"
    )
    parser.add_argument("--handoff-seconds", type=float, default=3.0)
    parser.add_argument("--min-handoffs", type=int, default=300)
    parser.add_argument("--fairness-seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for engine.json / engine.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(highlight=False)
    results = asyncio.run(run(args, console))
    report(console, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(results, args.out / "engine.png")
    console.print(f"wrote {args.out / 'engine.json'} and {args.out / 'engine.png'}")


if __name__ == "__main__":
    main()

"""Where the microseconds go: ``python -m bench.cost [--dsn DSN] [--ops N]``.

Throughput on a shared 2-core machine is noise; CPU time and WAL bytes per operation
are not (much). For one client doing N operations back to back this measures, per
operation:

* client CPU (this process's user+system time),
* server CPU (the sum over every process of the PostgreSQL server: backends, WAL
  writer, checkpointer...; read from /proc, so Linux only and a local server only),
* WAL bytes written (``pg_current_wal_insert_lsn()`` before and after),
* statements sent (asyncpg's query logger),
* wall time.

Systems: the floor (one durable upsert), our try-lock acquire + release, and
PostgreSQL transaction-level advisory locks (BEGIN; try-lock; COMMIT). Writes
``bench/results/cost.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.engine import FLOOR_SQL, ROOT, SCHEMA, prepare
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded

RESULTS = ROOT / "bench" / "results"
_TICK = os.sysconf("SC_CLK_TCK")


def _server_cpu(postmaster: int) -> float:
    """CPU seconds used so far by the postmaster and all its children."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def measure(
    admin: asyncpg.Connection, postmaster: int, ops: int, op: Callable[[int], Awaitable[Any]]
) -> dict[str, float]:
    for i in range(min(200, ops)):  # warm-up: prepared statements, caches
        await op(-1 - i)
    lsn0 = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
    server0, client0, wall0 = _server_cpu(postmaster), time.process_time(), time.perf_counter()
    for i in range(ops):
        await op(i)
    wall = time.perf_counter() - wall0
    client, server = time.process_time() - client0, _server_cpu(postmaster) - server0
    wal = await admin.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", lsn0)
    return {
        "wall_us": wall / ops * 1e6,
        "client_cpu_us": client / ops * 1e6,
        "server_cpu_us": server / ops * 1e6,
        "wal_bytes": float(wal) / ops,
    }


async def run(dsn: str, ops: int) -> dict[str, dict[str, float]]:
    await prepare(dsn)
    admin = await asyncpg.connect(dsn)
    postmaster = _parent(int(await admin.fetchval("SELECT pg_backend_pid()")))
    statements = 0

    def count(_record: Any) -> None:
        nonlocal statements
        statements += 1

    results: dict[str, dict[str, float]] = {}
    tag = f"{time.time_ns():x}"
    floor_conn = await asyncpg.connect(dsn)
    floor_conn.add_query_logger(count)
    xact_conn = await asyncpg.connect(dsn)
    xact_conn.add_query_logger(count)

    async def floor_op(i: int) -> None:
        await floor_conn.fetchrow(FLOOR_SQL, f"cost:{tag}:{i}", "bench")

    async def xact_op(i: int) -> None:
        async with xact_conn.transaction():
            await xact_conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", f"cost:{tag}")

    settings = LockSettings(dsn=dsn, schema=SCHEMA, pool_min=2, pool_max=2)  # the default pool is 10
    async with LockClient.connect(settings=settings, cleanup=False, owner_id="bench") as locks:
        async with locks.pool.acquire() as conn:  # count what the engine sends
            conn.add_query_logger(count)

        async def pair_op(i: int) -> None:
            lease = await locks.acquire(f"cost:{tag}", ttl=30, wait=0)
            await locks.release(lease)

        for name, op in (
            ("floor (1 upsert)", floor_op),
            ("omninode pair", pair_op),
            ("advisory xact pair", xact_op),
        ):
            statements = 0
            row = await measure(admin, postmaster, ops, op)
            row["statements"] = statements / (ops + min(200, ops))
            results[name] = row
    await floor_conn.close()
    await xact_conn.close()
    await admin.close()
    return results


def report(console: Console, results: dict[str, dict[str, float]]) -> None:
    table = Table(title="Cost per operation, one client (medians are not needed: CPU time, not rate)")
    for column in ("system", "wall µs", "client CPU µs", "server CPU µs", "WAL bytes", "statements"):
        table.add_column(column, justify="right" if column != "system" else "left")
    for name, row in results.items():
        table.add_row(
            name,
            f"{row['wall_us']:.0f}",
            f"{row['client_cpu_us']:.0f}",
            f"{row['server_cpu_us']:.0f}",
            f"{row['wal_bytes']:.0f}",
            f"{row['statements']:.2f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL DSN of a local server (default: embedded)")
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS / "cost.json")
    args = parser.parse_args(argv)
    dsn = args.dsn or start_embedded(ROOT / ".omninode" / "bench-pgdata")
    results = asyncio.run(run(dsn, args.ops))
    report(Console(), results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Who waits for whom at N clients: ``python -m bench.waits [--dsn DSN] [--clients 32]``.

Throughput says how much; this says where the time goes when many clients share one
Python process. While N coroutines run try-lock pairs (our client) or durable upserts
(the floor) back to back, a separate connection samples ``pg_stat_activity`` every
10 ms and counts, per sample, the benchmark's server backends by state:

* ``waiting for the client`` - idle, or active but reading from the client: the server
  has answered and waits for the next statement (the client process is the bottleneck);
* ``on CPU`` - active, no wait event;
* ``WAL flush`` - waiting to write or fsync the write-ahead log (durable commits);
* ``row/buffer locks`` and ``other``;

and how busy the client process and the whole machine's CPUs were meanwhile: backends
"waiting for the client" while every CPU is busy mean the client process is waiting for
a CPU, not that the server has room to spare.

Each system runs in the same process, one after the other, interleaved over rounds.
Writes ``bench/results/waits.json`` and prints the averages as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.engine import FLOOR_SQL, ROOT, SCHEMA, prepare
from bench.peerlib.base import with_query
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded

RESULTS = ROOT / "bench" / "results"
APP = "omninode-bench-waits"
SAMPLE = (
    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
    "WHERE application_name = $1 AND backend_type = 'client backend'"
)
STATES = ("waiting for the client", "on CPU", "WAL flush", "row/buffer locks", "other")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def classify(state: str | None, wait_type: str | None, wait_event: str | None) -> str:
    """One backend's sample as one of :data:`STATES`."""
    if state in ("idle", "idle in transaction") or (wait_type == "Client" and wait_event == "ClientRead"):
        return STATES[0]
    if wait_type is None:
        return STATES[1]
    if wait_event in ("WALWrite", "WALSync", "WALInsert", "SyncRep") or (wait_event or "").startswith("WAL"):
        return STATES[2]
    if wait_type in ("Lock", "LWLock") or wait_event in ("BufferPin", "BufferIO"):
        return STATES[3]
    return STATES[4]


async def sampled(
    dsn: str, app: str, clients: int, seconds: float, work: Callable[[int], Awaitable[None]]
) -> dict[str, float]:
    """Run ``clients`` loops of ``work`` for ``seconds`` while sampling; per-state average
    number of backends, and operations per second."""
    monitor = await asyncpg.connect(dsn)
    stop = time.monotonic() + seconds
    done, counts, samples = [0], Counter[str](), [0]

    async def loop(i: int) -> None:
        while time.monotonic() < stop:
            await work(i)
            done[0] += 1

    async def sample() -> None:
        while time.monotonic() < stop:
            for r in await monitor.fetch(SAMPLE, app):
                counts[classify(r["state"], r["wait_event_type"], r["wait_event"])] += 1
            samples[0] += 1
            await asyncio.sleep(0.01)

    started, cpu0, (busy0, total0) = time.monotonic(), time.process_time(), _cpu_ticks()
    try:
        await asyncio.gather(*(loop(i) for i in range(clients)), sample())
    finally:
        await monitor.close()
    wall, (busy1, total1) = time.monotonic() - started, _cpu_ticks()
    out = {state: counts[state] / max(samples[0], 1) for state in STATES}
    out["ops_s"] = done[0] / wall
    out["client_cores"] = (time.process_time() - cpu0) / wall  # this process (the clients)
    out["machine_busy_pct"] = 100.0 * (busy1 - busy0) / max(total1 - total0, 1)
    return out


async def run(dsn: str, clients: int, seconds: float, rounds: int) -> dict[str, Any]:
    await prepare(dsn)
    tag = f"{time.time_ns():x}"
    floor_app, our_app = f"{APP}-floor", f"{APP}-omninode"  # each system's backends apart
    floor_pool = await asyncpg.create_pool(
        with_query(dsn, application_name=floor_app), min_size=clients, max_size=clients
    )
    settings = LockSettings(
        dsn=with_query(dsn, application_name=our_app), schema=SCHEMA, pool_min=clients, pool_max=clients,
        recheck_interval=2.0,
    )  # fmt: skip
    per: dict[str, list[dict[str, float]]] = {"floor (1 upsert)": [], "omninode pair": []}
    counter = [0]
    async with LockClient.connect(settings=settings, cleanup=False, run_migrations=False) as locks:

        async def floor_op(_i: int) -> None:
            counter[0] += 1
            await floor_pool.fetchrow(FLOOR_SQL, f"waits:{tag}:{counter[0]}", "bench")

        async def pair_op(i: int) -> None:
            lease = await locks.acquire(f"waits:{tag}:{i}", ttl=30, wait=0)
            await locks.release(lease)

        for _ in range(rounds):
            per["floor (1 upsert)"].append(await sampled(dsn, floor_app, clients, seconds, floor_op))
            per["omninode pair"].append(await sampled(dsn, our_app, clients, seconds, pair_op))
    await floor_pool.close()
    medians = {
        name: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for name, rows in per.items()
    }
    return {"clients": clients, "seconds": seconds, "rounds": rounds, "load": os.getloadavg()[0],
            "systems": medians}  # fmt: skip


def report(console: Console, result: dict[str, Any]) -> None:
    table = Table(
        title=f"Server backends by state at {result['clients']} clients in one process (median of rounds)"
    )
    table.add_column("system")
    table.add_column("ops/s", justify="right")
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_column("client process, cores", justify="right")
    table.add_column("all CPUs busy %", justify="right")
    for name, row in result["systems"].items():
        table.add_row(
            name, f"{row['ops_s']:,.0f}", *(f"{row[s]:.1f}" for s in STATES), f"{row['client_cores']:.2f}",
            f"{row['machine_busy_pct']:.0f}",
        )  # fmt: skip
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.waits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: embedded)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "waits.json")
    args = parser.parse_args(argv)
    dsn = args.dsn or start_embedded(ROOT / ".omninode" / "bench-pgdata")
    result = asyncio.run(run(dsn, args.clients, args.seconds, args.rounds))
    report(Console(width=160), result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

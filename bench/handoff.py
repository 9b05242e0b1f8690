"""Where a hand-off's time goes: ``python -m bench.handoff [--dsn DSN] [--clients 8]``.

The contended scenario of ``make bench`` (N clients block for one lock, hold it 5 ms,
release), with each hand-off cut in two at the moment the holder's release returns:

* ``release round trip``: the holder's release call, which in the database deletes the
  lease, grants the next waiter, announces it by NOTIFY and commits durably;
* ``release returned -> next holder``: the NOTIFY on its way to the waiter's listener
  and the waiter's coroutine waking with its lease (no further round trip);

next to what the same machine needs, measured in the same run, interleaved by round:

* ``floor: durable upsert``: one ``INSERT .. ON CONFLICT`` committed durably, the least a
  durable grant can cost (bench/engine.py's floor);
* ``floor: NOTIFY``: a ``pg_notify`` sent on one connection until a LISTEN callback on
  another runs (no durable commit).

Where the server role may set ``track_functions`` it also prints the engine's functions
per hand-off (calls and self time, ``pg_stat_user_functions``) and writes everything to
``bench/results/handoff.json``. Older code can be measured in the same way from a
checkout: ``PYTHONPATH=<checkout>/src python -m bench.handoff --schema bench_handoff_old``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.engine import FLOOR_SQL, ROOT, percentile, prepare
from bench.peerlib.base import with_query
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.embedded import start_embedded

RESULTS = ROOT / "bench" / "results"
PARTS = (
    "hand-off (release starts -> next holder)",
    "release round trip",
    "release returned -> next holder",
    "floor: durable upsert",
    "floor: NOTIFY",
)
PROFILE = (
    "SELECT funcname, calls, self_time FROM pg_stat_user_functions WHERE schemaname = $1"
)  # fmt: skip


async def contended(dsn: str, schema: str, clients: int, hold: float, seconds: float) -> dict[str, Any]:
    """Hand-offs of one lock among ``clients`` LockClients (pool 2 each, as ``make bench``)."""
    settings = LockSettings(dsn=dsn, schema=schema, pool_min=1, pool_max=2, recheck_interval=2.0)
    locks = [await LockClient.connect(settings=settings, cleanup=False) for _ in range(clients)]
    released: list[tuple[float, float]] = []  # (release started, release returned)
    total: list[float] = []
    rtt: list[float] = []
    after: list[float] = []
    grants = [0]
    stop = time.perf_counter() + seconds

    async def worker(i: int, client: LockClient) -> None:
        while time.perf_counter() < stop:
            asked = time.perf_counter()
            lease = await client.acquire("handoff", f"h{i}", ttl=30, wait=30)
            got = time.perf_counter()
            grants[0] += 1
            if released and asked < released[-1][0] < got:
                started, returned = released[-1]
                total.append(got - started)
                if returned > started:  # the release call had returned before this grant
                    rtt.append(returned - started)
                    after.append(max(got - returned, 0.0))
            await asyncio.sleep(hold)
            started = time.perf_counter()
            released.append((started, started))
            await client.release(lease)
            released[-1] = (started, time.perf_counter())

    began = time.perf_counter()
    try:
        await asyncio.gather(*(worker(i, c) for i, c in enumerate(locks)))
    finally:
        for c in locks:
            await c.close()
    return {"grants_s": grants[0] / (time.perf_counter() - began), "parts": [total, rtt, after]}


async def floors(dsn: str, n: int, idle: float) -> tuple[list[float], list[float]]:
    """``n`` durable upserts and ``n`` NOTIFY deliveries, one at a time, each after
    ``idle`` seconds of sleep as a release comes after a hold (an idle machine wakes
    slower: on this VM, 5 ms of sleep made a hand-off's release 0.5 ms slower than in a
    tight loop)."""
    upserts: list[float] = []
    notifies: list[float] = []
    conn, listener = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    arrived: asyncio.Queue[float] = asyncio.Queue()
    await listener.add_listener("bench_handoff", lambda *_: arrived.put_nowait(time.perf_counter()))
    tag = f"{time.time_ns():x}"
    try:
        for i in range(n):
            await asyncio.sleep(idle)
            t0 = time.perf_counter()
            await conn.fetchrow(FLOOR_SQL, f"handoff:{tag}:{i}", "bench")
            upserts.append(time.perf_counter() - t0)
            await asyncio.sleep(idle)
            t0 = time.perf_counter()
            await conn.execute("SELECT pg_notify('bench_handoff', '')")
            notifies.append(await asyncio.wait_for(arrived.get(), 5) - t0)
    finally:
        await conn.close()
        await listener.close()
    return upserts, notifies


async def profile(dsn: str, schema: str) -> dict[str, tuple[int, float]] | None:
    """Function calls and self time (ms) of ``schema`` so far (``track_functions`` on)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(PROFILE, schema)
    finally:
        await conn.close()
    return {r["funcname"]: (int(r["calls"]), float(r["self_time"])) for r in rows}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    dsn = args.dsn or start_embedded(ROOT / ".omninode" / "bench-pgdata")
    await prepare(dsn)
    tracked = dsn
    probe = await asyncpg.connect(dsn)
    try:
        await probe.execute("SET track_functions = 'pl'")
        tracked = with_query(dsn, options="-c%20track_functions%3Dpl")  # the clients' backends count
    except asyncpg.PostgresError:
        tracked = ""  # not allowed for this role: no profile
    finally:
        await probe.close()
    samples: list[list[float]] = [[] for _ in PARTS]
    rates: list[float] = []
    before = await profile(dsn, args.schema) if tracked else None
    for _ in range(args.rounds):
        got = await contended(tracked or dsn, args.schema, args.clients, args.hold_ms / 1000, args.seconds)
        rates.append(got["grants_s"])
        for k, values in enumerate(got["parts"]):
            samples[k].extend(values)
        upserts, notifies = await floors(dsn, 300, args.hold_ms / 1000)
        samples[3].extend(upserts)
        samples[4].extend(notifies)
    await asyncio.sleep(1.0)  # backends publish their function statistics as they exit
    after = await profile(dsn, args.schema) if tracked else None
    handoffs = len(samples[0])
    functions = None
    if before is not None and after is not None and handoffs:
        functions = {
            name: {
                "calls_per_handoff": round((calls - before.get(name, (0, 0.0))[0]) / handoffs, 2),
                "self_us_per_handoff": round((ms - before.get(name, (0, 0.0))[1]) * 1000 / handoffs, 1),
            }
            for name, (calls, ms) in after.items()
        }
    return {
        "clients": args.clients, "hold_ms": args.hold_ms, "rounds": args.rounds,
        "seconds": args.seconds, "load": os.getloadavg()[0], "schema": args.schema,
        "grants_s": round(statistics.median(rates), 1),
        "parts_ms": {
            name: {q: round(percentile(values, p) * 1000, 3) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}
            for name, values in zip(PARTS, samples, strict=True)
        },
        "samples": {name: len(values) for name, values in zip(PARTS, samples, strict=True)},
        "functions": functions,
    }  # fmt: skip


def report(console: Console, result: dict[str, Any]) -> None:
    table = Table(
        title=f"Hand-offs of one lock, {result['clients']} clients holding {result['hold_ms']} ms: "
        f"{result['grants_s']:.0f} grants/s (median of {result['rounds']} rounds)"
    )
    for column in ("part", "p50 ms", "p90 ms", "p99 ms", "samples"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for name, q in result["parts_ms"].items():
        table.add_row(
            name, f"{q['p50']:.2f}", f"{q['p90']:.2f}", f"{q['p99']:.2f}", str(result["samples"][name])
        )
    console.print(table)
    if result["functions"]:
        funcs = Table(title="Server functions per hand-off (track_functions: self time, all rounds)")
        for column in ("function", "calls", "self us"):
            funcs.add_column(column, justify="left" if column == "function" else "right")
        ranked = sorted(result["functions"].items(), key=lambda kv: -kv[1]["self_us_per_handoff"])
        for name, row in ranked:
            if row["calls_per_handoff"] > 0:
                funcs.add_row(name, f"{row['calls_per_handoff']:.2f}", f"{row['self_us_per_handoff']:.0f}")
        console.print(funcs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handoff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: embedded)")
    parser.add_argument("--schema", default="omninode_bench_handoff")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--hold-ms", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "handoff.json"))
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    report(Console(width=140), result)
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Lock systems side by side: ``make bench`` (``python -m bench.peers [--quick] [--readme]``).

Systems: our async, sync and HTTP clients, the raw durable-upsert floor, redis-py's
``Lock`` (async and sync, default and 1 ms polling), python-redis-lock, PostgreSQL
advisory locks (session and transaction level), ``pals`` and tooz's PostgreSQL driver;
each behind one adapter (``bench/peerlib/``). Scenarios, interleaved in rounds: the
uncontended try-lock at 1, 8 and 32 clients, and 8 contenders on one lock holding 5 ms.
Then our engine's scale curves (acquire p95 with 1k/100k/1M held locks, cleanup of
10k/100k expired leases, 10,000 waiters in one process).

PostgreSQL: ``--dsn``, else ``OMNINODE_BENCH_DSN``, else the system server at
postgresql://postgres@127.0.0.1:5432/test when it answers, else the embedded one.
Redis: 127.0.0.1:6379 (``OMNINODE_BENCH_REDIS``), else a redis-server started here.

Writes bench/results/peers.{json,csv,md} and peers_*.png; ``--readme`` then rewrites the
README's section between ``<!-- peers:begin -->`` and ``<!-- peers:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.peerlib.base import System
from bench.peerlib.redis_locks import RedisServer
from bench.peerlib.report import update_readme, write_all
from bench.peerlib.runner import Plan, run_rounds, start_all, summarize
from bench.peerlib.scale import Sizes, run_scale

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SYSTEM_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ALL = (
    "omninode", "omninode_sync", "omninode_http", "raw_upsert", "redis_py", "redis_py_1ms",
    "redis_py_sync", "redis_py_sync_1ms", "python_redis_lock", "pg_advisory", "pg_advisory_xact",
    "pals", "tooz_pg",
)  # fmt: skip


@dataclass
class Options:
    dsn: str | None = None
    systems: tuple[str, ...] = ALL
    plan: Plan = field(default_factory=Plan)
    sizes: Sizes = field(default_factory=Sizes)
    scale: bool = True
    quick: bool = False
    out: Path = RESULTS


def log(line: str) -> None:
    print(line, flush=True)


async def _answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def resolve_dsn(explicit: str | None) -> tuple[str, str]:
    """(dsn, description shown in the results: never a password)."""
    if explicit:
        return explicit, "given DSN"
    if env := os.environ.get("OMNINODE_BENCH_DSN"):
        return env, "OMNINODE_BENCH_DSN"
    if await _answers(SYSTEM_DSN):
        return SYSTEM_DSN, "system server 127.0.0.1:5432"
    from omninode_bridge.locks.embedded import start_embedded

    dsn = await asyncio.to_thread(start_embedded, ROOT / ".omninode" / "bench-pgdata")
    return dsn, "embedded (.omninode/bench-pgdata)"


def build_systems(names: tuple[str, ...], dsn: str, tag: str) -> tuple[list[System], RedisServer]:
    from bench.peerlib import http, omninode, others, pg, redis_locks

    server = redis_locks.RedisServer()
    made: dict[str, System] = {
        "omninode": omninode.OmninodeAsync(dsn),
        "omninode_sync": omninode.OmninodeSync(dsn),
        "omninode_http": http.OmninodeHttp(dsn),
        "raw_upsert": pg.RawUpsert(dsn, tag),
        "redis_py": redis_locks.RedisPyAsync(server),
        "redis_py_1ms": redis_locks.RedisPyAsync1ms(server),
        "redis_py_sync": redis_locks.RedisPySync(server),
        "redis_py_sync_1ms": redis_locks.RedisPySync1ms(server),
        "python_redis_lock": redis_locks.PythonRedisLock(server),
        "pg_advisory": pg.PgAdvisory(dsn),
        "pg_advisory_xact": pg.PgAdvisoryXact(dsn),
        "pals": others.Pals(dsn),
        "tooz_pg": others.ToozPg(dsn),
    }
    unknown = set(names) - set(made)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))} (known: {', '.join(ALL)})")
    return [made[n] for n in ALL if n in names], server


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine(
    opts: Options, server: str, version: str, redis: str, load_before: float, seconds: float
) -> dict[str, Any]:
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no", "src"):
        commit += " (src modified)"
    return {
        "mode": "quick" if opts.quick else "full",
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "postgres": version,
        "server": server,
        "redis": redis,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "rounds": opts.plan.rounds,
        "slice_s": opts.plan.slice_s,
        "contended_s": opts.plan.contended_s,
        "levels": list(opts.plan.levels),
        "duration_s": round(seconds, 1),
    }


async def prepare(dsn: str) -> str:
    from bench.peerlib.omninode import SCHEMA, settings
    from omninode_bridge.locks import LockClient

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")  # a fresh install of the migrations
        version: str = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    async with LockClient.connect(settings=settings(dsn, 1), cleanup=False):
        pass
    return version


async def run(opts: Options) -> dict[str, Any]:
    """The whole bench; returns the peers.json document (also written under ``opts.out``)."""
    began, load_before = time.perf_counter(), os.getloadavg()[0]
    dsn, server = await resolve_dsn(opts.dsn)
    version = await prepare(dsn)
    log(f"PostgreSQL {version} ({server}); load average {load_before:.2f} on {os.cpu_count()} CPUs "
        "(a shared machine: other work skews results, read ratios)")  # fmt: skip
    tag = f"{time.time_ns():x}"
    systems, redis_server = build_systems(opts.systems, dsn, tag)
    outcomes = await start_all(systems, log)
    try:
        await run_rounds(outcomes, opts.plan, tag, log)
    finally:
        for s in systems:
            await s.stop()
        redis_server.stop()
    redis = redis_server.version
    rows: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        s = o.system
        rows[s.key] = {"json_key": s.json_key, "label": s.label, "reason": o.reason, "note": s.note,
                       **{k: getattr(s.facts, k) for k in ("durable", "fencing", "server_expiry")},
                       **summarize(o, opts.plan.levels)}  # fmt: skip
    scale: dict[str, Any] = {"reason": "not run (--no-scale)"}
    if opts.scale:
        log("scale curves of our engine:")
        try:
            scale = await run_scale(dsn, opts.sizes, log)
        except Exception as err:
            scale = {"reason": f"failed: {type(err).__name__}: {err}"}
            log(f"  {scale['reason']}")
    from bench.peerlib.report import build

    doc = build(rows, scale, machine(opts, server, version, redis, load_before, time.perf_counter() - began))
    for path in write_all(doc, opts.out):
        log(f"wrote {path}")
    return doc


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", help="PostgreSQL DSN (default: OMNINODE_BENCH_DSN, the system server, embedded)")
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: short cells, small scale sizes (~1-2 min)"
    )
    p.add_argument("--systems", default=",".join(ALL), help=f"comma-separated subset of: {','.join(ALL)}")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    p.add_argument("--seconds", type=float, help="seconds per uncontended cell (default 1.5; quick 0.3)")
    p.add_argument(
        "--contended-seconds", type=float, help="seconds per contended cell (default 3; quick 0.8)"
    )
    p.add_argument("--levels", help="client counts, e.g. 1,8,32 (the default)")
    p.add_argument("--held", help="held-lock sizes, e.g. 1000,100000,1000000 (the default)")
    p.add_argument("--cleanup", help="expired-lease sizes, e.g. 10000,100000 (the default)")
    p.add_argument("--waiters", type=int, help="simultaneous waiters (default 10000; quick 500)")
    p.add_argument(
        "--waiters-pool",
        type=int,
        default=1,
        help="pool size of the waiters' client (default 1: with LISTEN, 2 connections)",
    )
    p.add_argument("--no-scale", action="store_true", help="skip the scale curves")
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder (default bench/results)")
    p.add_argument("--readme", action="store_true", help="after the run, regenerate the README section")
    p.add_argument(
        "--readme-only", action="store_true", help="only regenerate the README section from peers.md"
    )
    a = p.parse_args(argv)
    plan = Plan(rounds=3, slice_s=0.3, warmup_s=0.1, contended_s=0.8) if a.quick else Plan()
    sizes = Sizes((1_000, 10_000, 50_000), (1_000, 10_000), 500, p95_seconds=0.5) if a.quick else Sizes()
    plan.rounds = a.rounds or plan.rounds
    plan.slice_s = a.seconds or plan.slice_s
    plan.contended_s = a.contended_seconds or plan.contended_s
    plan.levels = ints(a.levels) if a.levels else plan.levels
    sizes.held = ints(a.held) if a.held else sizes.held
    sizes.cleanup = ints(a.cleanup) if a.cleanup else sizes.cleanup
    sizes.waiters = a.waiters or sizes.waiters
    sizes.waiters_pool = a.waiters_pool
    systems = tuple(s.strip() for s in a.systems.split(",") if s.strip())
    opts = Options(a.dsn, systems, plan, sizes, not a.no_scale, a.quick, a.out)
    return opts, a


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> None:
    opts, a = parse_args(argv)
    if not a.readme_only:
        asyncio.run(run(opts))
    if a.readme or a.readme_only:
        update_readme(ROOT / "README.md", opts.out / "peers.md")
        log("README.md: performance section regenerated from peers.md")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Scale curves of our engine: acquire p95 under many held locks, cleanup rate, 10k waiters.

Held and expired leases are bulk-loaded by SQL (``generate_series``) straight into a
bench schema, matching the engine's tables (locks row with its counters + lease row),
then checked through the client: a loaded name must read as held and refuse a try-lock.
If the engine's schema changes, the check fails loudly instead of measuring nonsense;
update ``LOAD_LOCKS`` / ``LOAD_LEASES`` below with it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.engine import percentile
from bench.peerlib.base import with_query
from bench.peerlib.scenarios import BenchError
from omninode_bridge.locks import LockClient, LockSettings

SCHEMA = "omninode_peers_scale"
APP = "omninode-peers-waiters"
LOAD_LOCKS = (
    f"INSERT INTO {SCHEMA}.locks (name, fence, n_exclusive) "
    "SELECT $1::text || g, g, 1 FROM generate_series($2::bigint, $3::bigint) g"
)
LOAD_LEASES = (
    f"INSERT INTO {SCHEMA}.leases (lease_id, name, owner_id, mode, token, ttl_ms, acquired_at, expires_at) "
    "SELECT gen_random_uuid(), $1::text || g, 'bulk', 'exclusive', g, $4::integer, "
    "now() + $5::integer * interval '1 ms', now() + ($5::integer + $4::integer) * interval '1 ms' "
    "FROM generate_series($2::bigint, $3::bigint) g"
)
TABLES = ("locks", "leases", "waiters", "events")


@dataclass
class Sizes:
    held: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    cleanup: tuple[int, ...] = (10_000, 100_000)
    waiters: int = 10_000
    waiters_pool: int = 1
    p95_seconds: float = 3.0


def _settings(dsn: str, pool: int) -> LockSettings:
    return LockSettings(dsn=dsn, schema=SCHEMA, pool_min=1, pool_max=pool, recheck_interval=2.0)


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute(f"TRUNCATE {', '.join(f'{SCHEMA}.{t}' for t in TABLES)}")


async def _load(
    conn: asyncpg.Connection, prefix: str, first: int, last: int, ttl_ms: int, start_ms: int
) -> None:
    """Rows first..last of ``prefix``: held (start_ms 0) or already expired (negative start)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")  # loading, not measuring
        await conn.execute(LOAD_LOCKS, prefix, first, last)
        await conn.execute(LOAD_LEASES, prefix, first, last, ttl_ms, start_ms)
        await conn.execute(f"SELECT setval('{SCHEMA}.fence_seq', greatest($1::bigint, last_value)) "
                           f"FROM {SCHEMA}.fence_seq", last)  # fmt: skip


async def _check_held(client: LockClient, name: str) -> None:
    if (
        not await client.locked(name)
        or await client.acquire(name, "probe", blocking=False, ttl=30) is not None
    ):
        raise BenchError(
            f"bulk-loaded {name!r} does not read as held: the loader no longer matches the schema"
        )


async def held_curve(
    client: LockClient, conn: asyncpg.Connection, sizes: Sizes, log: Callable[[str], None]
) -> dict[int, float]:
    """Acquire p95 (ms) of try-locks on fresh names with N locks held, N growing."""
    await _reset(conn)
    out: dict[int, float] = {}
    loaded = 0
    for n in sorted(sizes.held):
        started = time.perf_counter()
        await _load(conn, "held:", loaded + 1, n, 3_600_000, 0)
        loaded = n
        # what autovacuum would do to a freshly loaded table, done before measuring, not during
        await conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.locks, {SCHEMA}.leases")
        await _check_held(client, f"held:{n}")
        load_s = time.perf_counter() - started
        latencies: list[float] = []
        stop = time.perf_counter() + sizes.p95_seconds
        tag = uuid.uuid4().hex[:8]
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            lease = await client.acquire(f"free:{tag}:{i}", "scale", blocking=False, ttl=30)
            latencies.append(time.perf_counter() - t0)
            if lease is None:
                raise BenchError("a try-lock of a free name was refused")
            await client.release(lease)
            i += 1
        out[n] = percentile(latencies, 95) * 1000
        log(f"  {n:>9,} held: acquire p95 {out[n]:.3f} ms ({len(latencies)} pairs; loaded in {load_s:.1f} s)")
    return out


async def cleanup_rates(
    client: LockClient, conn: asyncpg.Connection, sizes: Sizes, log: Callable[[str], None]
) -> dict[int, float]:
    """Expired leases reaped per second by the engine's cleanup, for each size."""
    out: dict[int, float] = {}
    for n in sizes.cleanup:
        await _reset(conn)
        await _load(conn, "expired:", 1, n, 60_000, -120_000)
        await conn.execute(f"ANALYZE {SCHEMA}.locks; ANALYZE {SCHEMA}.leases")
        reaped, started = 0, time.perf_counter()
        while (got := await client.cleanup_expired()) > 0:
            reaped += got
        elapsed = time.perf_counter() - started
        if reaped != n:
            raise BenchError(f"cleanup reaped {reaped} of {n} expired leases")
        out[n] = n / elapsed
        log(f"  cleanup of {n:,} expired leases: {elapsed:.2f} s, {out[n]:,.0f} leases/s")
    return out


async def _backends(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APP)
    return count


async def waiters(
    dsn: str, conn: asyncpg.Connection, sizes: Sizes, log: Callable[[str], None]
) -> dict[str, Any]:
    """``sizes.waiters`` tasks of one client queue on one lock, then drain (each releases at once).

    A waiter that fails (e.g. no pool connection within the engine's deadline while all
    of them enqueue at once) is counted by error type, not fatal: that is a finding."""
    await _reset(conn)
    n, peak, name = sizes.waiters, [0], f"queue:{uuid.uuid4().hex[:8]}"
    client = await LockClient.connect(
        settings=_settings(with_query(dsn, application_name=APP), sizes.waiters_pool),
        cleanup=False, run_migrations=False,
    )  # fmt: skip
    done, granted, errors = asyncio.Event(), [0], Counter[str]()

    async def sample() -> None:  # its own connection: `conn` is busy with queued()
        monitor = await asyncpg.connect(dsn)
        try:
            while not done.is_set():
                peak[0] = max(peak[0], await _backends(monitor))
                await asyncio.sleep(0.2)
        finally:
            await monitor.close()

    async def waiter(i: int) -> None:
        try:
            lease = await client.acquire(name, f"w{i}", ttl=60, wait=max(120.0, n / 20))
            granted[0] += 1
            await client.release(lease)
        except Exception as err:
            errors[type(err).__name__] += 1

    async def queued() -> int:  # the engine's own count, on the monitor connection (not the pool)
        row = await conn.fetchrow(client.queries["counts"])
        assert row is not None
        return int(row["waiters"])

    sampler = asyncio.create_task(sample())
    tasks: list[asyncio.Task[None]] = []
    try:
        holder = await client.acquire(name, "holder", ttl=600)
        started = time.perf_counter()
        tasks = [asyncio.create_task(waiter(i)) for i in range(n)]
        give_up = started + max(60.0, n / 50)
        while await queued() < n - errors.total() and time.perf_counter() < give_up:
            if granted[0]:
                raise BenchError("a waiter was granted before the holder released")
            await asyncio.sleep(0.2)
        enqueue_s, in_queue = time.perf_counter() - started, await queued()
        started = time.perf_counter()
        await client.release(holder)
        await asyncio.gather(*tasks)
        drain_s = time.perf_counter() - started
    finally:
        done.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        await sampler  # a failed sampler fails the measurement: never a silent 0
    result = {"waiters": n, "pool": sizes.waiters_pool, "connections": peak[0], "queued": in_queue,
              "granted": granted[0], "errors": dict(errors), "enqueue_s": round(enqueue_s, 2),
              "drain_s": round(drain_s, 2), "handoffs_s": round(granted[0] / drain_s, 1)}  # fmt: skip
    failed = f", {errors.total()} failed {dict(errors)}" if errors else ""
    log(f"  {n:,} waiters: {peak[0]} connections, {in_queue:,} queued in {enqueue_s:.1f} s{failed}, "
        f"drained in {drain_s:.1f} s ({result['handoffs_s']:,.0f} hand-offs/s)")  # fmt: skip
    return result


async def run_scale(dsn: str, sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    """Each curve on its own: one that fails leaves its error, the others still measured."""
    out: dict[str, Any] = {"held_p95_ms": None, "cleanup_per_s": None, "waiters": None, "errors": {}}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        client = await LockClient.connect(settings=_settings(dsn, 2), cleanup=False)  # migrates
        try:
            out["held_p95_ms"] = await _part(out, "held", held_curve(client, conn, sizes, log), log)
            out["cleanup_per_s"] = await _part(out, "cleanup", cleanup_rates(client, conn, sizes, log), log)
        finally:
            await client.close()
        out["waiters"] = await _part(out, "waiters", waiters(dsn, conn, sizes, log), log)
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")  # 1M rows: do not leave them
    finally:
        await conn.close()
    return out


async def _part(out: dict[str, Any], what: str, measuring: Any, log: Callable[[str], None]) -> Any:
    try:
        return await measuring
    except Exception as err:
        out["errors"][what] = f"{type(err).__name__}: {err}"
        log(f"  {what}: failed: {out['errors'][what]}")
        return None

"""Failover under load: ``python -m bench.failover`` (``make failover``).

A primary and a synchronous streaming standby (:class:`bench.topology.ReplicaPair`);
clients reach them through one multi-host DSN (``target_session_attrs=read-write``).
Workers run exclusive acquire / fenced write / release cycles on a few locks, while a
few long leases are held throughout. Mid-run the primary is stopped (immediate) and
the standby promoted; the clients follow on their own (the engine's retries, circuit
breaker and listener reconnect). Afterwards, on the new primary:

* ``lost_writes`` — a fenced write the client saw commit is missing;
* ``stale_accepted`` — per resource, a write accepted with a token not above the one
  accepted before it (the fences' order did not survive);
* ``token_regressed`` — a lease granted after the failover with a token not above every
  token granted before it;
* ``held_lost`` — a lease held across the failover is gone or has another token;
* ``overlaps`` — two clients inside the protected section of one lock at once;
* ``fence_behind`` — a lock's last token on the new primary is below one already granted.

Writes ``bench/results/failover.json``: operations, time to recover, violations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.topology import ReplicaPair
from omninode_bridge.locks import Lease, LockClient, LockSettings, StaleTokenError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCHEMA = "omninode_locks"
DATABASE = "failover"
GUARDED = "CREATE TABLE guarded (seq bigserial PRIMARY KEY, resource text, token bigint, op uuid UNIQUE)"


@dataclass
class History:
    """What the clients were told, with monotonic times."""

    grants: list[tuple[float, float, str, int]] = field(default_factory=list)  # sent, acked, lock, token
    writes: list[tuple[float, float, str, int, uuid.UUID]] = field(
        default_factory=list
    )  # in, out, lock, token, op
    releases: int = 0
    unowned_at_end: int = 0  # worker leases still live after every worker released its own
    stale: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, err: BaseException) -> None:
        name = getattr(err, "code", None) or type(err).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


async def _fenced_write(locks: LockClient, lease: Lease, history: History) -> None:
    """The protected write: fence guard and insert in one transaction (a few tries)."""
    op = uuid.uuid4()
    for attempt in range(3):
        started = time.monotonic()
        try:
            async with locks.pool.acquire() as conn, conn.transaction():
                await locks.fence_guard(conn, lease.lock_name, lease.token)
                await conn.execute(
                    "INSERT INTO guarded (resource, token, op) VALUES ($1, $2, $3) ON CONFLICT (op) DO NOTHING",
                    lease.lock_name,
                    lease.token,
                    op,
                )
        except StaleTokenError:
            history.stale += 1
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            history.error(err)
            if attempt == 2:
                return
            await asyncio.sleep(0.1)
            continue
        history.writes.append((started, time.monotonic(), lease.lock_name, lease.token, op))
        return


async def _release(locks: LockClient, lease: Lease, history: History, until: float) -> None:
    """Give the lease back, retrying through the failover (else it blocks others for its TTL)."""
    while time.monotonic() < until:
        try:
            await locks.release(lease)
            history.releases += 1
            return
        except Exception as err:  # a failover in progress, or the lease is gone: try again / stop
            history.error(err)
            if getattr(err, "code", "") in ("LOCK_EXPIRED", "LOCK_NOT_HELD"):
                return
            await asyncio.sleep(0.1)


async def _worker(n: int, locks: LockClient, names: list[str], history: History, stop: asyncio.Event) -> None:
    for i in itertools.count():
        if stop.is_set():
            return
        name = names[(n + i) % len(names)]
        sent = time.monotonic()
        try:
            lease = await locks.acquire(name, f"w{n}", ttl=10, wait=5)
        except Exception as err:  # failing over: count it and go on
            history.error(err)
            await asyncio.sleep(0.05)
            continue
        history.grants.append((sent, time.monotonic(), name, lease.token))
        await _fenced_write(locks, lease, history)
        await _release(locks, lease, history, time.monotonic() + 20)


def _settings(dsn: str) -> LockSettings:
    return LockSettings(
        dsn=dsn,
        schema=SCHEMA,
        pool_min=1,
        pool_max=4,
        recheck_interval=1.0,
        cleanup_interval=3600,
        connect_timeout=5,
    )


async def run_failover(
    pair: ReplicaPair,
    *,
    workers: int = 6,
    lock_count: int = 3,
    before: float = 2.0,
    after: float = 3.0,
    held_count: int = 2,
    limit: float = 40.0,
    promote_delay: float = 0.0,
) -> dict[str, Any]:
    """The workload across one failover; returns the figures and the checks' violations."""
    admin = await asyncpg.connect(pair.primary_dsn())
    await admin.execute(f"CREATE DATABASE {DATABASE}")
    await admin.close()
    conn = await asyncpg.connect(pair.primary_dsn(DATABASE))
    await conn.execute(GUARDED)
    await conn.close()

    dsn = pair.dsn(DATABASE)
    clients = [await LockClient.connect(settings=_settings(dsn), cleanup=False) for _ in range(workers)]
    names = [f"fo-{i}" for i in range(lock_count)]
    history = History()
    held = [await clients[0].acquire(f"held-{i}", "holder", ttl=120) for i in range(held_count)]
    # a waiter queued before the failover, granted only when the holder releases after it
    holder = await clients[0].acquire("handoff", "holder", ttl=120)
    waiter = asyncio.create_task(clients[-1].acquire("handoff", "waiter", ttl=30, wait=limit + 20))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_worker(n, c, names, history, stop)) for n, c in enumerate(clients)]
    failover: dict[str, float] = {}
    t_stop = t_promoted = time.monotonic()
    try:
        await asyncio.sleep(before)
        t_stop = time.monotonic()
        failover = await asyncio.to_thread(pair.fail_over, promote_delay)
        t_promoted = t_stop + failover["stop_s"] + failover["no_primary_s"]
        # run until the clients have written again for `after` seconds (or the limit)
        while time.monotonic() < t_stop + limit:
            recovered = [w for w in history.writes if w[0] > t_stop + failover["stop_s"]]
            if recovered and time.monotonic() > min(w[1] for w in recovered) + after:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        handoff = await _handoff(clients[0], holder, waiter, history)
        checks = await _check(pair, clients[0], history, held, t_stop)
        checks["handoff_lost"] = int(handoff is None)
    finally:
        waiter.cancel()
        stop.set()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()

    after_writes = [w for w in history.writes if w[0] > t_stop]
    # recovery: from the primary's death (its immediate stop returned) to the first fenced
    # write begun after it that committed (necessarily on the promoted standby)
    t_down = t_stop + failover.get("stop_s", 0.0)
    first = min((w[1] for w in history.writes if w[0] > t_down), default=None)
    return {
        "workers": workers,
        "locks": lock_count,
        "operations": len(history.grants) + len(history.writes) + history.releases,
        "grants": len(history.grants),
        "writes": len(history.writes),
        "writes_after_failover": len(after_writes),
        "stale_rejected": history.stale,
        "errors_during_failover": history.errors,
        "primary_stop_s": round(failover.get("stop_s", 0.0), 3),
        "promote_delay_s": promote_delay,
        "no_primary_s": round(failover.get("no_primary_s", 0.0), 3),
        "promote_s": round(failover.get("promote_s", 0.0), 3),
        "recovery_s": None if first is None else round(first - t_down, 3),
        "recovery_after_promotion_s": None if first is None else round(first - t_promoted, 3),
        "held_across_failover": len(held),
        "unowned_leases_at_end": history.unowned_at_end,
        "queued_waiter_granted_after_release_s": None if handoff is None else round(handoff, 3),
        "checks": checks,
        "violations": sum(checks.values()),
    }


async def _handoff(
    locks: LockClient, holder: Lease, waiter: asyncio.Task[Lease], history: History
) -> float | None:
    """Release the lease the waiter queued behind before the failover; seconds until the
    waiter holds it (None: it never did, or with a token not above the holder's)."""
    if waiter.done():  # granted before the release, or failed: either is a loss
        return None
    await _release(locks, holder, history, time.monotonic() + 20)
    released = time.monotonic()
    try:
        lease = await asyncio.wait_for(asyncio.shield(waiter), 15)
    except Exception:
        return None
    await _release(locks, lease, history, time.monotonic() + 20)
    return time.monotonic() - released if lease.token > holder.token else None


async def _check(
    pair: ReplicaPair, locks: LockClient, history: History, held: list[Lease], t_stop: float
) -> dict[str, int]:
    conn = await asyncpg.connect(pair.primary_dsn(DATABASE))
    try:
        assert not await conn.fetchval("SELECT pg_is_in_recovery()"), "checking on the new primary"
        rows = await conn.fetch("SELECT resource, token, op FROM guarded ORDER BY seq")
        fences = {r["name"]: r["fence"] for r in await conn.fetch(f"SELECT name, fence FROM {SCHEMA}.locks")}
        # every worker released what it was told it holds before stopping: a live worker
        # lease now is one nobody holds (granted to a call that failed), until its TTL
        unowned = await conn.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.leases WHERE owner_id LIKE 'w%' AND expires_at > now()"
        )
    finally:
        await conn.close()
    stored = {r["op"] for r in rows}
    last: dict[str, int] = {}
    stale_accepted = 0
    for r in rows:
        if r["token"] <= last.get(r["resource"], -1):
            stale_accepted += 1
        last[r["resource"]] = r["token"]
    before = [g for g in history.grants if g[1] < t_stop]
    after = [g for g in history.grants if g[0] > t_stop]
    top = max((g[3] for g in before), default=0)
    held_lost = 0
    for lease in held:
        info = await locks.get_lock_info(lease.lock_name)
        if [h.token for h in info.holders] != [lease.token] or not await locks.owned(lease):
            held_lost += 1
    granted_top: dict[str, int] = {}
    for _s, _a, name, token in history.grants:
        granted_top[name] = max(granted_top.get(name, 0), token)
    for lease in held:
        granted_top[lease.lock_name] = lease.token
    by_lock: dict[str, list[tuple[float, float]]] = {}
    for started, ended, name, _t, _op in history.writes:
        by_lock.setdefault(name, []).append((started, ended))
    overlaps = sum(
        1 for spans in by_lock.values() for a, b in itertools.pairwise(sorted(spans)) if b[0] < a[1]
    )
    history.unowned_at_end = int(unowned)
    return {
        "lost_writes": sum(1 for w in history.writes if w[4] not in stored),
        "stale_accepted": stale_accepted,
        "token_regressed": sum(1 for g in after if g[3] <= top),
        "held_lost": held_lost,
        "overlaps": overlaps,
        "fence_behind": sum(1 for name, token in granted_top.items() if fences.get(name, 0) < token),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--locks", type=int, default=3)
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load before the failover")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of load after the clients recover")
    parser.add_argument(
        "--promote-delays",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.0, 5.0],
        help="seconds with no primary before the promotion, one run each (e.g. 0,5)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = []
    for delay in args.promote_delays:
        with ReplicaPair() as pair:
            runs.append(
                asyncio.run(
                    run_failover(
                        pair,
                        workers=args.workers,
                        lock_count=args.locks,
                        before=args.before,
                        after=args.after,
                        promote_delay=delay,
                    )
                )
            )
    results = {
        "runs": len(runs),
        "operations": sum(r["operations"] for r in runs),
        "violations": sum(r["violations"] for r in runs),
        "failovers": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "failover.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'failover.json'}")


if __name__ == "__main__":
    main()

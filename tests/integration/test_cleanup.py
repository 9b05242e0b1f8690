"""Cleanup in bulk (migration 0004): thousands of expired leases in one statement, the
names with waiters still promoted, rows in use skipped, counters exact (the ``locks``
fixture checks them after every test)."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import pytest

from omninode_bridge.locks import LockClient

pytestmark = pytest.mark.integration

EXPIRE = "UPDATE omninode_locks.leases SET expires_at = now() - interval '1 s' WHERE name LIKE $1"


async def test_thousands_of_expired_leases_go_at_once(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    for i in range(300):
        await locks.acquire(f"bulk:x:{i}", ttl=60)
    for i in range(100):  # semaphores and shared holders: several leases per name
        await locks.acquire(f"bulk:s:{i}", ttl=60, permits=3, owner_id="a")
        await locks.acquire(f"bulk:s:{i}", ttl=60, permits=3, owner_id="b")
        await locks.acquire(f"bulk:r:{i}", ttl=60, mode="shared", owner_id="a")
        await locks.acquire(f"bulk:r:{i}", ttl=60, mode="shared", owner_id="b")
    kept = await locks.acquire("keep:live", ttl=60)
    await admin_conn.execute(EXPIRE, "bulk:%")

    assert await locks.cleanup_expired() == 300 + 400
    assert await locks.owned(kept)
    expired = await admin_conn.fetch(
        "SELECT lock_name, token FROM omninode_locks.events WHERE event_type = 'lock_expired'"
    )
    assert len(expired) == 700 and len({r["token"] for r in expired}) == 700
    assert await admin_conn.fetchval("SELECT count(*) FROM omninode_locks.leases") == 1
    assert await locks.cleanup_expired() == 0  # nothing left, nothing counted twice
    again = await locks.acquire("bulk:x:7", ttl=5)  # the counters let the fast path in again
    assert again.token > max(r["token"] for r in expired)
    await locks.release(again)
    await locks.release(kept)


async def test_an_expired_holder_with_a_waiter_is_promoted(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    await locks.acquire("bulk:q", ttl=60, owner_id="old")
    await locks.acquire("bulk:plain", ttl=60, owner_id="old")
    waiting = asyncio.create_task(locks.acquire("bulk:q", ttl=30, wait=20, owner_id="next"))
    await asyncio.sleep(0.3)
    await admin_conn.execute(EXPIRE, "bulk:%")
    started = time.monotonic()
    assert await locks.cleanup_expired() == 2
    lease = await asyncio.wait_for(waiting, 10)
    assert lease.owner_id == "next" and time.monotonic() - started < 5
    await locks.release(lease)


async def test_a_lock_row_in_use_is_skipped_not_waited_for(
    locks: LockClient, dsn: str, admin_conn: asyncpg.Connection
) -> None:
    await locks.acquire("bulk:busy", ttl=60, owner_id="old")
    await locks.acquire("bulk:free", ttl=60, owner_id="old")
    await admin_conn.execute(EXPIRE, "bulk:%")
    holder = await asyncpg.connect(dsn)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM omninode_locks.locks WHERE name = 'bulk:busy' FOR UPDATE")
        assert await asyncio.wait_for(locks.cleanup_expired(), 5) == 1  # bulk:free only
        await tx.rollback()
    finally:
        await holder.close()
    assert await locks.cleanup_expired() == 1  # bulk:busy, once its row is free


async def test_bulk_cleanup_counts_rows_that_others_update_meanwhile(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    """Migration 0006 finds each locked row again by the ctid its row lock returned. A row
    another transaction updated and committed after the statement's snapshot is locked in
    its newest version (EvalPlanQual); the counters must still land on that version. Here
    other clients churn permits of the same names while the bulk statement runs, round
    after round; the ``locks`` fixture then checks every counter against the rows."""
    names = [f"bulk:churn:{i}" for i in range(1500)]
    stop = asyncio.Event()

    async def churn(seed: int) -> int:
        done, rng = 0, random.Random(seed)
        while not stop.is_set():
            lease = await locks.acquire(rng.choice(names), ttl=60, permits=3, blocking=False)
            if lease is not None:
                await locks.release(lease)
                done += 1
        return done

    reaped = 0
    for round_ in range(4):
        for name in names:
            await locks.acquire(name, ttl=60, permits=3, owner_id=f"old-{round_}")
        await admin_conn.execute(EXPIRE, "bulk:churn:%")
        stop.clear()
        churners = [asyncio.create_task(churn(round_ * 10 + i)) for i in range(4)]
        await asyncio.sleep(0.05)
        while (got := await locks.cleanup_expired()) > 0:
            reaped += got
        stop.set()
        assert sum(await asyncio.gather(*churners)) > 0
    assert reaped == 4 * len(names)
    assert await admin_conn.fetchval("SELECT count(*) FROM omninode_locks.leases") == 0

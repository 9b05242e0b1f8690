"""Correlation ids: every event a call causes carries the caller's id, a grant to a waiter
carries the waiter's (not that of the release that promoted it), and bad ids change nothing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from omninode_bridge.locks import LockClient, LockSettings, LockValidationError, SyncLockClient

pytestmark = pytest.mark.integration


async def events_of(conn: asyncpg.Connection, name: str) -> list[tuple[str, str | None]]:
    rows = await conn.fetch(
        "SELECT event_type, correlation_id FROM omninode_locks.events WHERE lock_name = $1 ORDER BY id", name
    )
    return [(r["event_type"], r["correlation_id"]) for r in rows]


async def test_each_call_marks_its_own_events(locks: LockClient, admin_conn: asyncpg.Connection) -> None:
    lease = await locks.acquire("corr:a", ttl=30, correlation_id="req-acquire")
    await locks.extend(lease, 20, correlation_id="req-extend")
    await locks.release(lease, correlation_id="req-release")
    plain = await locks.acquire("corr:a", ttl=30)  # no id: NULL, not the previous call's
    await locks.force_release("corr:a", "ops", correlation_id="req-admin")
    assert await events_of(admin_conn, "corr:a") == [
        ("lock_acquired", "req-acquire"),
        ("lock_extended", "req-extend"),
        ("lock_released", "req-release"),
        ("lock_acquired", None),
        ("lock_force_released", "req-admin"),
    ]
    assert plain.token > lease.token


async def test_a_waiters_grant_carries_the_waiters_id(
    locks: LockClient, admin_conn: asyncpg.Connection
) -> None:
    holder = await locks.acquire("corr:q", ttl=30, owner_id="holder", correlation_id="req-holder")
    waiting = asyncio.create_task(
        locks.acquire("corr:q", owner_id="waiter", ttl=30, wait=10, correlation_id="req-waiter")
    )
    await asyncio.sleep(0.3)  # queued
    await locks.release(holder, correlation_id="req-release")
    granted = await asyncio.wait_for(waiting, 10)
    assert granted.owner_id == "waiter"
    assert await events_of(admin_conn, "corr:q") == [
        ("lock_acquired", "req-holder"),
        ("lock_released", "req-release"),
        ("lock_acquired", "req-waiter"),
    ]
    await locks.release(granted)


async def test_inside_the_callers_transaction(
    locks: LockClient, dsn: str, admin_conn: asyncpg.Connection
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            lease = await locks.acquire("corr:txn", ttl=30, conn=conn, correlation_id="req-txn")
            await locks.release(lease, conn=conn, correlation_id="req-txn-release")
    finally:
        await conn.close()
    assert await events_of(admin_conn, "corr:txn") == [
        ("lock_acquired", "req-txn"),
        ("lock_released", "req-txn-release"),
    ]


@pytest.mark.parametrize("bad", ["", "x" * 256, "a\x00b", "\ud800", 42])
async def test_a_bad_correlation_id_is_refused_and_changes_nothing(
    locks: LockClient, admin_conn: asyncpg.Connection, bad: object
) -> None:
    lease = await locks.acquire("corr:bad:held", ttl=30)
    before = await admin_conn.fetchval("SELECT count(*) FROM omninode_locks.events")
    with pytest.raises(LockValidationError, match="correlation_id"):
        await locks.acquire("corr:bad", ttl=30, correlation_id=bad)  # type: ignore[arg-type]
    with pytest.raises(LockValidationError, match="correlation_id"):
        await locks.release(lease, correlation_id=bad)  # type: ignore[arg-type]
    with pytest.raises(LockValidationError, match="correlation_id"):
        await locks.extend(lease, 10, correlation_id=bad)  # type: ignore[arg-type]
    assert await admin_conn.fetchval("SELECT count(*) FROM omninode_locks.events") == before
    assert not await locks.locked("corr:bad")
    assert await locks.owned(lease)


def test_the_sync_client_forwards_correlation_ids(dsn: str, settings: LockSettings) -> None:
    locks = SyncLockClient.connect(dsn, settings=settings, cleanup=False)
    try:
        lease = locks.acquire("corr:sync", ttl=30, correlation_id="sync-1")
        locks.release(lease, correlation_id="sync-2")
    finally:
        locks.close()

    async def read() -> list[tuple[str, str | None]]:
        conn = await asyncpg.connect(dsn)
        try:
            return await events_of(conn, "corr:sync")
        finally:
            await conn.close()

    assert asyncio.run(read()) == [("lock_acquired", "sync-1"), ("lock_released", "sync-2")]


async def test_every_event_gets_its_own_id(locks: LockClient, admin_conn: asyncpg.Connection) -> None:
    """The cheap per-row id of 0004 (hashed session random, clock and pid) is still unique."""
    leases = await asyncio.gather(
        *(locks.acquire(f"corr:ids:{i}", ttl=30, owner_id=f"o{i}") for i in range(50))
    )
    for lease in leases:
        await locks.release(lease)
    ids = await admin_conn.fetch(
        "SELECT event_id FROM omninode_locks.events WHERE lock_name LIKE 'corr:ids:%'"
    )
    assert len(ids) == 100 and None not in {r["event_id"] for r in ids}
    assert len({r["event_id"] for r in ids}) == 100

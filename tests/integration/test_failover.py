"""Failover to a synchronous streaming replica under a fenced lock workload.

A primary and a synchronous standby on this machine (system ``initdb`` /
``pg_basebackup`` / ``pg_ctl``; see :mod:`bench.topology`); clients use one multi-host
DSN with ``target_session_attrs=read-write``. Mid-run the primary is stopped
(immediate) and the standby promoted. The clients must follow on their own, and on
the new primary nothing they were told is lost: fenced writes, leases held across the
failover (same tokens), a waiter queued before it, and the fencing order.
``make failover`` runs the same workload longer and writes bench/results/failover.json.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from bench.failover import run_failover
from bench.topology import ReplicaPair, missing_for_failover

from omninode_bridge.locks import LockClient, LockSettings, SyncLockClient
from omninode_bridge.locks.errors import LockDatabaseError


@pytest.fixture
def pair() -> Iterator[ReplicaPair]:
    reason = missing_for_failover()
    if reason:
        pytest.skip(reason)
    with ReplicaPair() as running:
        yield running


NO_VIOLATIONS = {
    "lost_writes": 0,
    "stale_accepted": 0,
    "token_regressed": 0,
    "held_lost": 0,
    "overlaps": 0,
    "fence_behind": 0,
    "handoff_lost": 0,
}


async def test_clients_follow_a_failover_and_lose_nothing(pair: ReplicaPair) -> None:
    figures = await run_failover(pair, workers=4, lock_count=2, before=1.5, after=1.5, limit=30)
    assert figures["checks"] == NO_VIOLATIONS, figures
    assert figures["violations"] == 0
    assert figures["writes"] - figures["writes_after_failover"] > 20, "too little load before the failover"
    assert figures["writes_after_failover"] > 20, f"the clients did not follow the failover: {figures}"
    assert figures["recovery_s"] is not None and figures["recovery_s"] < 15, figures

    def sync_side() -> tuple[int, bool, int]:
        """psycopg reads the same multi-host DSN, and the sync client works through it."""
        with psycopg.connect(pair.dsn("failover")) as conn:
            row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
        assert row is not None
        settings = LockSettings(schema="omninode_locks", pool_min=1, pool_max=2, cleanup_interval=3600)
        with SyncLockClient.connect(pair.dsn("failover"), settings=settings, cleanup=False) as locks:
            lease = locks.acquire("fo-0", "sync", ttl=30, wait=10)
            assert locks.release(lease)
        return row[0], row[1], lease.token

    port, in_recovery, token = await asyncio.to_thread(sync_side)
    assert (port, in_recovery) == (pair.standby_port, False)
    assert token > 0


async def test_clients_ride_out_seconds_with_no_primary_at_all(pair: ReplicaPair) -> None:
    """Three seconds between the primary's death and the promotion: calls fail (the
    circuit breaker opens), the listener's reconnects are refused or land on a read-only
    standby; after the promotion everything resumes, with nothing lost. Meanwhile a new
    client is refused with a message naming both hosts."""
    standby = f"postgresql://postgres@127.0.0.1:{pair.standby_port}/postgres"
    conn = await asyncpg.connect(standby)
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()")  # the standby is up, read-only
    finally:
        await conn.close()
    settings = LockSettings(
        dsn=pair.dsn(),
        schema="omninode_locks",
        pool_min=1,
        pool_max=2,
        cleanup_interval=3600,
        connect_timeout=2,
    )
    async with LockClient.connect(settings=settings, cleanup=False) as locks:
        lease = await locks.acquire("where", "a", ttl=30)
        async with locks.pool.acquire() as c:  # the multi-host DSN skipped the standby
            assert await c.fetchval("SELECT inet_server_port()") == pair.primary_port
        assert await locks.release(lease)
    with psycopg.connect(pair.dsn()) as conn:  # so does psycopg (libpq)
        assert conn.execute("SELECT inet_server_port()").fetchone() == (pair.primary_port,)

    async def while_no_primary() -> str:
        assert await asyncio.to_thread(pair.primary_down.wait, 30)
        with pytest.raises(LockDatabaseError) as failed:
            await LockClient.connect(settings=settings, cleanup=False)
        assert not pair.promoted, "probe too late: the standby was already promoted"
        return str(failed.value)

    probe = asyncio.create_task(while_no_primary())
    figures = await run_failover(
        pair, workers=4, lock_count=2, before=1.0, after=2.5, limit=30, promote_delay=3
    )
    assert figures["checks"] == NO_VIOLATIONS, figures
    assert figures["writes_after_failover"] > 10, f"the clients did not follow the failover: {figures}"
    # back within the breaker's reset (5 s) and a retry's backoff after the promotion
    assert figures["recovery_after_promotion_s"] < 10, figures
    message = await probe
    assert f"127.0.0.1:{pair.primary_port}, 127.0.0.1:{pair.standby_port}" in message, message
    assert "target_session_attrs=read-write skips" in message, message

"""Cancelling many acquires and closing the client at once: nothing is left held, and no
statement's failure surfaces as "Task exception was never retrieved"."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import asyncpg
import pytest

from omninode_bridge.locks import LockClient, LockSettings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.02, 0.05, 0.1])
async def test_cancel_everything_then_close(dsn: str, admin_conn: asyncpg.Connection, delay: float) -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        settings = LockSettings(schema="omninode_locks", pool_min=1, pool_max=3, cleanup_interval=3600)
        holder = await LockClient.connect(dsn, settings=settings, cleanup=False, owner_id="holder")
        held = await holder.acquire("cc", ttl=30)
        locks = await LockClient.connect(dsn, settings=settings, cleanup=False)
        tries = [asyncio.create_task(locks.acquire("cc", ttl=30, wait=10)) for _ in range(30)]
        tries += [asyncio.create_task(locks.acquire(f"cc:{i}", ttl=30)) for i in range(30)]
        await asyncio.sleep(delay)  # some in flight, some queued, some granted
        granted = [t.result() for t in tries if t.done() and not t.cancelled() and t.exception() is None]
        for t in tries:
            t.cancel()
        await locks.close()
        await asyncio.gather(*tries, return_exceptions=True)
        for lease in granted:  # finished before the cancel: theirs, handed back by hand
            await holder.release(lease)
        await holder.release(held)
        await holder.close()
        await asyncio.sleep(0.5)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    never = [c for c in unretrieved if "never retrieved" in str(c.get("message", ""))]
    assert never == [], never[:3]
    live = await admin_conn.fetchval(
        "SELECT count(*) FROM omninode_locks.leases WHERE expires_at > now() AND name LIKE 'cc%'"
    )
    queued = await admin_conn.fetchval("SELECT count(*) FROM omninode_locks.waiters WHERE name LIKE 'cc%'")
    assert (live, queued) == (0, 0), "a cancelled acquire left a lease or a queue entry behind"

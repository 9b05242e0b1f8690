"""Engine bugs the chaos run (``make chaos``) found, each reduced to a minimal test.

Each was an ``xfail(strict=True)`` until the engine was fixed; now they guard the fixes
(the listener backs off after a failed re-check; a cancelled or failed try-lock whose
grant may have committed is given back in the background once the database answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
from proxy import CuttableProxy

from omninode_bridge.locks import LockClient, LockSettings

HERE = Path(__file__).resolve().parent

# Run in a child process: with the bug its event loop never gets control back, so the
# test can only watch it from outside (and kill it).
SPIN = """
import asyncio, contextlib, faulthandler, sys
faulthandler.dump_traceback_later(10, exit=True)  # a starved loop: show where, then exit
sys.path.insert(0, sys.argv[2])
from proxy import CuttableProxy
from omninode_bridge.locks import LockClient, LockSettings

async def main(dsn):
    settings = LockSettings(pool_min=1, pool_max=4, recheck_interval=1.0, cleanup_interval=3600)
    proxy = await CuttableProxy(dsn).start()
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as holder, \\
            LockClient.connect(proxy.dsn, settings=settings, cleanup=False) as locks:
        await holder.acquire("spin", "holder", ttl=1)
        waiting = asyncio.create_task(locks.acquire("spin", "waiter", ttl=5, wait=8))
        await asyncio.sleep(0.3)  # queued; its re-check is due when the holder expires (~1 s)
        proxy.cut()  # the listener's connection drops and cannot come back for a while
        before = locks.listener.sweeps
        await asyncio.sleep(2.0)
        print("sweeps", locks.listener.sweeps - before, flush=True)
        proxy.heal()
        waiting.cancel()
        with contextlib.suppress(BaseException):
            await waiting
    await proxy.close()

asyncio.run(main(sys.argv[1]))
"""


def test_a_waiter_does_not_starve_the_event_loop_while_the_listener_is_down(dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SPIN, dsn, str(HERE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"2 s of sleep did not end within 10 s: {done.stderr[-3000:]}"
    sweeps = int(done.stdout.split("sweeps")[1].split()[0])
    assert sweeps < 50, f"{sweeps} re-checks in 2 s while the listener was down"


async def test_a_cancelled_grant_is_given_back_once_the_database_is_back(
    dsn: str, settings: LockSettings
) -> None:
    proxy = await CuttableProxy(dsn).start()
    lease_id = str(uuid.uuid4())
    blocker = await asyncpg.connect(dsn)
    try:
        async with (
            LockClient.connect(dsn, settings=settings, cleanup=False) as direct,
            LockClient.connect(proxy.dsn, settings=settings, cleanup=False) as locks,
        ):
            await direct.release(await direct.acquire("undo", "setup", ttl=5))  # the lock row exists
            txn = blocker.transaction()
            await txn.start()
            await blocker.execute(f"SELECT 1 FROM {settings.schema}.locks WHERE name = 'undo' FOR UPDATE")
            trying = asyncio.create_task(locks.acquire("undo", "w", ttl=30, lease_id=lease_id))
            for _ in range(100):  # until the statement waits for the row lock on the server
                waiting = await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
            trying.cancel()
            proxy.cut()  # the client loses its connection; the server still runs the statement
            await asyncio.sleep(0.2)
            await txn.commit()  # ...which now grants the lease (and commits)
            with contextlib.suppress(BaseException):
                await trying  # the undo could not reach the database: cancelled all the same
            for _ in range(100):  # the blocked statement runs on once the row is free
                if await direct.owned(lease_id):
                    break
                await asyncio.sleep(0.05)
            assert await direct.owned(lease_id), "the grant committed (the scenario under test)"
            proxy.heal()
            await asyncio.sleep(3.0)  # the database is reachable again
            still_held = await direct.owned(lease_id)
    finally:
        await blocker.close()
        await proxy.close()
    assert not still_held, "a cancelled acquire's lease is still held by nobody 3 s after the outage"

"""A worker process for the mutual-exclusion test: hammer one lock, prove exclusion.

Usage: python hammer.py DSN WORKER_ID SECONDS. Prints one JSON line with its grants.
Inside each critical section it (1) passes the fencing guard with its token and
(2) claims a single-row table with ``holder IS NULL``: a second holder at the same
time would find the row taken, which is counted as an overlap.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg

from omninode_bridge.locks import LockClient, LockSettings, StaleTokenError


async def main(dsn: str, worker: str, seconds: float) -> dict[str, object]:
    settings = LockSettings(schema="omninode_locks", pool_min=1, pool_max=2, recheck_interval=1.0)
    tokens: list[int] = []
    overlaps = 0
    stale_accepted = 0
    conn = await asyncpg.connect(dsn)
    async with LockClient.connect(dsn, settings=settings, cleanup=False) as locks:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            lease = await locks.acquire("hammer", f"worker-{worker}", ttl=10, wait=10)
            tokens.append(lease.token)
            async with conn.transaction():
                await locks.fence_guard(conn, "hammer-resource", lease.token)
                claimed = await conn.fetchval(
                    "UPDATE critical SET holder = $1, token = $2 WHERE id = 1 AND holder IS NULL RETURNING 1",
                    worker,
                    lease.token,
                )
            if claimed is None:
                overlaps += 1
            await asyncio.sleep(0.001)
            freed = await conn.fetchval(
                "UPDATE critical SET holder = NULL WHERE id = 1 AND holder = $1 RETURNING 1", worker
            )
            if freed is None:
                overlaps += 1
            await locks.release(lease)
            # A write with a token older than the newest one seen must be refused.
            if len(tokens) >= 2:
                try:
                    async with conn.transaction():
                        await locks.fence_guard(conn, "hammer-resource", tokens[-2])
                        stale_accepted += 1
                except StaleTokenError:
                    pass
    await conn.close()
    return {"worker": worker, "tokens": tokens, "overlaps": overlaps, "stale_accepted": stale_accepted}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))))

"""A random lock workload that produces every kind of event, for the relay tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from omninode_bridge.locks import Lease, LockClient, LockError

NAMES = ("ev:a", "ev:b", "ev:c", "ev:d")
EXPIRE = "UPDATE omninode_locks.leases SET expires_at = now() - interval '1 s' WHERE name = $1"
LOCK_ROW = "SELECT 1 FROM omninode_locks.locks WHERE name = $1 FOR UPDATE"  # the engine's lock order


async def actor(locks: LockClient, seed: int, until: float) -> None:
    rng = random.Random(seed)
    held: list[Lease] = []
    while time.monotonic() < until:
        name = rng.choice(NAMES)
        roll = rng.random()
        with contextlib.suppress(LockError):
            if roll < 0.45:
                held.append(await locks.acquire(name, f"actor{seed}", mode=rng.choice(("exclusive", "shared")),
                                                ttl=30, wait=rng.choice((0, 0.05))))  # fmt: skip
            elif roll < 0.8 and held:
                await locks.release(held.pop(rng.randrange(len(held))))
            elif roll < 0.9 and held:
                await locks.extend(rng.choice(held), ttl=30)
            elif roll < 0.94:
                async with locks.pool.acquire() as conn, conn.transaction():
                    await conn.execute(LOCK_ROW, name)
                    await conn.execute(EXPIRE, name)
                await locks.cleanup_expired()
            elif roll < 0.97:
                await locks.force_release(name, "relay test")
        await asyncio.sleep(0)
    for lease in held:
        with contextlib.suppress(LockError):
            await locks.release(lease)


async def deadlock(locks: LockClient, tag: str) -> None:
    """Two owners each hold one lock and wait for the other's: one is told DEADLOCK_DETECTED."""
    a = await locks.acquire(f"dl:{tag}:1", f"dl-{tag}-a", ttl=30)
    b = await locks.acquire(f"dl:{tag}:2", f"dl-{tag}-b", ttl=30)
    first = asyncio.create_task(locks.acquire(f"dl:{tag}:2", f"dl-{tag}-a", ttl=30, wait=5))
    await asyncio.sleep(0.1)
    with contextlib.suppress(LockError):
        await locks.acquire(f"dl:{tag}:1", f"dl-{tag}-b", ttl=30, wait=5)
    await locks.release(b)
    with contextlib.suppress(LockError):
        await locks.release(await first)
    await locks.release(a)


async def run_workload(locks: LockClient, seconds: float, actors: int = 6, seed: int = 7) -> None:
    until = time.monotonic() + seconds
    await asyncio.gather(*(actor(locks, seed * 100 + i, until) for i in range(actors)),
                         deadlock(locks, str(seed)))  # fmt: skip

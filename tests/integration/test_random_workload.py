"""A seeded random mix of every operation, concurrently; afterwards the invariants hold.

The ``locks`` fixture checks that the lock rows' counters equal the rows they count,
which is what the one-statement fast acquire relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from omninode_bridge.locks import Lease, LockClient, LockError

NAMES = ("r:a", "r:b", "r:c")
EXPIRE = "UPDATE omninode_locks.leases SET expires_at = now() - interval '1 s' WHERE name LIKE $1"


class Actor:
    """One concurrent user doing random operations with a fixed seed."""

    def __init__(self, locks: LockClient, seed: int, tokens: dict[str, set[tuple[int, str]]]) -> None:
        self.locks, self.seed, self.rng = locks, seed, random.Random(seed)
        self.held: list[Lease] = []
        self.tokens = tokens

    async def acquire(self, name: str) -> None:
        lease = await self.locks.acquire(
            name, f"actor{self.seed}", mode=self.rng.choice(("exclusive", "shared")),
            ttl=self.rng.choice((1, 30)), wait=self.rng.choice((0, 0.05, 0.3)),
            reentrant=self.rng.random() < 0.2,
        )  # fmt: skip
        self.tokens[name].add((lease.token, lease.lease_id))  # a reentry repeats its pair
        self.held.append(lease)

    async def release(self, _name: str) -> None:
        if self.held:
            await self.locks.release(self.held.pop(self.rng.randrange(len(self.held))))

    async def extend(self, _name: str) -> None:
        if self.held:
            await self.locks.extend(self.rng.choice(self.held), ttl=self.rng.choice((1, 30)))

    async def expire(self, name: str) -> None:
        await self.locks.pool.execute(EXPIRE, name)

    async def force(self, name: str) -> None:
        await self.locks.force_release(name, "random workload")

    async def give_up(self, name: str) -> None:
        task = asyncio.create_task(self.locks.acquire(name, f"quitter{self.seed}", wait=5))
        await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, LockError):
            await task

    async def cleanup(self, _name: str) -> None:
        await self.locks.cleanup_expired()

    async def run(self, until: float, outcomes: Counter[str]) -> None:
        ops: list[Callable[[str], Awaitable[None]]] = [self.acquire, self.release, self.extend, self.expire]
        ops += [self.force, self.give_up, self.cleanup]
        weights = [45, 35, 8, 4, 3, 2, 3]
        while time.monotonic() < until:
            op = self.rng.choices(ops, weights)[0]
            try:
                await op(self.rng.choice(NAMES))
                outcomes["ok"] += 1
            except LockError as err:
                outcomes[err.code] += 1
        for lease in self.held:
            with contextlib.suppress(LockError):
                await self.locks.release(lease)


async def test_random_operations_keep_every_invariant(locks: LockClient) -> None:
    await locks.acquire("r:c", "setup", permits=2, ttl=1)  # r:c is a two-permit semaphore
    tokens: dict[str, set[tuple[int, str]]] = {n: set() for n in NAMES}
    outcomes: Counter[str] = Counter()
    until = time.monotonic() + 3.0
    await asyncio.gather(*(Actor(locks, seed, tokens).run(until, outcomes) for seed in range(6)))

    assert outcomes["ok"] > 100, outcomes
    assert outcomes["LOCK_HELD_BY_OTHER"] + outcomes["LOCK_TIMEOUT"] > 0, outcomes
    for name, issued in tokens.items():
        assert len({token for token, _ in issued}) == len(issued), f"{name}: a token went to two leases"
    # nothing is left blocked: every lock is free for a newcomer once the actors are gone
    await locks.pool.execute(EXPIRE, "%")
    for name in NAMES:
        await locks.release(await locks.acquire(name, "newcomer", ttl=30, wait=2))

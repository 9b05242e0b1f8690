"""Our engine as users call it: the async client and the sync client."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bench.peerlib.base import Facts, System, close_quietly, to_thread_all
from omninode_bridge.locks import Lease, LockClient, LockSettings, SyncLockClient

SCHEMA = "omninode_peers"
OURS = Facts(
    durable="yes: grant committed durably (lease row + event)",
    fencing="yes: monotonic token per grant",
    server_expiry="yes: TTL by the database clock",
)
TTL = 30.0
WAIT = 30.0


def settings(dsn: str, pool: int) -> LockSettings:
    # recheck_interval as in bench/engine.py: hand-offs come by NOTIFY, not by polling
    return LockSettings(dsn=dsn, schema=SCHEMA, pool_min=1, pool_max=pool, recheck_interval=2.0)


class _AsyncSession:
    def __init__(self, client: LockClient, owner: str) -> None:
        self.client, self.owner = client, owner

    async def try_acquire(self, name: str) -> Lease | None:
        return await self.client.acquire(name, self.owner, blocking=False, ttl=TTL, wait=0)

    async def release(self, handle: Lease) -> None:
        await self.client.release(handle)

    async def acquire_wait(self, name: str) -> Lease:
        return await self.client.acquire(name, self.owner, ttl=TTL, wait=WAIT)


class OmninodeAsync(System):
    key = json_key = "omninode"
    label = "omninode async client (LockClient)"
    facts = OURS
    note = "LockClient, one pool sized to the clients; contended: one client (pool 2) per contender"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.clients: list[LockClient] = []

    async def open(self, clients: int, contended: bool) -> Sequence[_AsyncSession]:
        if contended:
            self.clients = [
                await LockClient.connect(settings=settings(self.dsn, 2), cleanup=False, run_migrations=False)
                for _ in range(clients)
            ]
            return [_AsyncSession(c, f"peer-{i}") for i, c in enumerate(self.clients)]
        one = await LockClient.connect(
            settings=settings(self.dsn, clients), cleanup=False, run_migrations=False
        )
        self.clients = [one]
        return [_AsyncSession(one, f"peer-{i}") for i in range(clients)]

    async def close(self) -> None:
        await close_quietly(*(c.close() for c in self.clients))
        self.clients = []


class _SyncSession:
    def __init__(self, client: SyncLockClient, owner: str) -> None:
        self.client, self.owner = client, owner

    def try_acquire(self, name: str) -> Lease | None:
        return self.client.acquire(name, self.owner, blocking=False, ttl=TTL, wait=0)

    def release(self, handle: Lease) -> None:
        self.client.release(handle)

    def acquire_wait(self, name: str) -> Lease:
        return self.client.acquire(name, self.owner, ttl=TTL, wait=WAIT)


class OmninodeSync(System):
    key = json_key = "omninode_sync"
    label = "omninode sync client (SyncLockClient)"
    facts = OURS
    is_sync = True
    note = "SyncLockClient shared by the client threads; contended: one client per contender"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.clients: list[SyncLockClient] = []

    def _connect(self, pool: int) -> Any:
        return lambda: SyncLockClient.connect(
            settings=settings(self.dsn, pool), cleanup=False, run_migrations=False
        )

    async def open(self, clients: int, contended: bool) -> Sequence[_SyncSession]:
        if contended:
            self.clients = await to_thread_all([self._connect(2) for _ in range(clients)])
            return [_SyncSession(c, f"peer-{i}") for i, c in enumerate(self.clients)]
        self.clients = await to_thread_all([self._connect(clients)])
        return [_SyncSession(self.clients[0], f"peer-{i}") for i in range(clients)]

    async def close(self) -> None:
        for c in self.clients:
            await asyncio.to_thread(c.close)
        self.clients = []

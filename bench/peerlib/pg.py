"""Raw asyncpg systems: the durable upsert floor and PostgreSQL advisory locks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import asyncpg

from bench.engine import FLOOR_SETUP, FLOOR_SQL
from bench.peerlib.base import Facts, System, advisory_key, close_quietly

ADVISORY = Facts(
    durable="no: held in server memory",
    fencing="no",
    server_expiry="no: held until the session (or transaction) ends",
)


class _FloorSession:
    """A "pair" is two floor upserts, each on a fresh name: pairs/s = floor ops/s / 2."""

    def __init__(self, pool: asyncpg.Pool, tag: str) -> None:
        self.pool, self.tag, self.n = pool, tag, itertools.count()

    async def try_acquire(self, name: str) -> str | None:
        key = f"{self.tag}:{name}:{next(self.n)}"
        row = await self.pool.fetchrow(FLOOR_SQL, key, "peers")
        return key if row is not None else None

    async def release(self, handle: str) -> None:
        await self.pool.fetchrow(FLOOR_SQL, f"{handle}:r", "peers")

    async def acquire_wait(self, name: str) -> Any:
        raise NotImplementedError("the floor has no wait queue")


async def _no_reset(conn: asyncpg.Connection) -> None:
    """No reset query per release, as the engine's pool."""


class RawUpsert(System):
    key = json_key = "raw_upsert"
    label = "floor: one durable upsert per op (pair = 2 upserts)"
    facts = Facts(durable="yes: one committed row", fencing="no", server_expiry="yes: expires_at vs now()")
    contended = False
    note = "bench/engine.py's floor statement through an asyncpg pool; acquire p95 is one upsert"

    def __init__(self, dsn: str, tag: str) -> None:
        self.dsn, self.tag = dsn, tag
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            for statement in FLOOR_SETUP[1:]:  # [0] drops the engine bench's schema: not ours
                await conn.execute(statement)
        finally:
            await conn.close()

    async def open(self, clients: int, contended: bool) -> Sequence[_FloorSession]:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=clients, max_size=clients, reset=_no_reset)
        return [_FloorSession(self.pool, self.tag) for _ in range(clients)]

    async def close(self) -> None:
        if self.pool is not None:
            await close_quietly(self.pool.close())
            self.pool = None


class _SessionLevel:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def try_acquire(self, name: str) -> int | None:
        key = advisory_key(name)
        return key if await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", key) else None

    async def release(self, handle: int) -> None:
        await self.conn.fetchval("SELECT pg_advisory_unlock($1)", handle)

    async def acquire_wait(self, name: str) -> int:
        key = advisory_key(name)
        await self.conn.fetchval("SELECT pg_advisory_lock($1)", key)
        return key


class _XactLevel:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def try_acquire(self, name: str) -> bool | None:
        await self.conn.execute("BEGIN")
        if await self.conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", advisory_key(name)):
            return True
        await self.conn.execute("ROLLBACK")
        return None

    async def release(self, handle: bool) -> None:
        await self.conn.execute("COMMIT")

    async def acquire_wait(self, name: str) -> bool:
        await self.conn.execute("BEGIN")
        await self.conn.fetchval("SELECT pg_advisory_xact_lock($1)", advisory_key(name))
        return True


class PgAdvisory(System):
    key = json_key = "pg_advisory"
    label = "PostgreSQL advisory lock, session-level (asyncpg)"
    facts = ADVISORY
    note = "one connection per client: pg_try_advisory_lock / pg_advisory_unlock; contended: pg_advisory_lock"
    session = _SessionLevel

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[asyncpg.Connection] = []

    async def open(self, clients: int, contended: bool) -> Sequence[Any]:
        self.conns = [await asyncpg.connect(self.dsn) for _ in range(clients)]
        return [self.session(c) for c in self.conns]

    async def close(self) -> None:
        await close_quietly(*(c.close() for c in self.conns))
        self.conns = []


class PgAdvisoryXact(PgAdvisory):
    key = json_key = "pg_advisory_xact"
    label = "PostgreSQL advisory lock, transaction-level (asyncpg)"
    note = "BEGIN; pg_try_advisory_xact_lock; ... COMMIT (release); contended: pg_advisory_xact_lock"
    session = _XactLevel  # type: ignore[assignment]

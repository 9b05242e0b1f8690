"""Python libraries on PostgreSQL advisory locks: ``pals`` and tooz's PostgreSQL driver (sync)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Sequence
from typing import Any

from bench.peerlib.base import Facts, System, require
from bench.peerlib.pg import ADVISORY

WAIT_MS = 30_000


class _PalsSession:
    def __init__(self, locker: Any) -> None:
        self.locker = locker

    def try_acquire(self, name: str) -> Any | None:
        lock = self.locker.lock(name, blocking=False)
        return lock if lock.acquire() else None

    def release(self, handle: Any) -> None:
        handle.release()

    def acquire_wait(self, name: str) -> Any:
        lock = self.locker.lock(name, blocking=True, acquire_timeout=WAIT_MS)
        if not lock.acquire():
            raise TimeoutError(name)
        return lock


class Pals(System):
    key = json_key = "pals"
    label = "pals (session advisory locks via SQLAlchemy + psycopg2)"
    facts = ADVISORY
    is_sync = True
    note = "pals.Locker(app, engine with a pool sized to the clients).lock(name) from threads"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.engines: list[Any] = []

    async def start(self) -> None:
        require("pals", "psycopg2", "sqlalchemy")

    async def open(self, clients: int, contended: bool) -> Sequence[_PalsSession]:
        import pals  # type: ignore[import-untyped]
        import sqlalchemy

        def make(pool: int) -> Any:
            url = self.dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
            engine = sqlalchemy.create_engine(url, pool_size=pool, max_overflow=0)
            self.engines.append(engine)
            return pals.Locker("peers", create_engine_callable=lambda: engine)

        if contended:
            return [_PalsSession(make(1)) for _ in range(clients)]
        locker = make(clients)
        return [_PalsSession(locker) for _ in range(clients)]

    async def close(self) -> None:
        for engine in self.engines:
            await asyncio.to_thread(engine.dispose)
        self.engines = []


class _ToozSession:
    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator
        self.locks: dict[str, Any] = {}

    def _lock(self, name: str) -> Any:
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = self.coordinator.get_lock(name.encode())
        return lock

    def try_acquire(self, name: str) -> Any | None:
        lock = self._lock(name)
        return lock if lock.acquire(blocking=False) else None

    def release(self, handle: Any) -> None:
        handle.release()

    def acquire_wait(self, name: str) -> Any:
        lock = self._lock(name)
        lock.acquire(blocking=True)
        return lock


class ToozPg(System):
    key = json_key = "tooz_pg"
    label = "tooz PostgreSQL driver (deprecated upstream; a connection per acquire)"
    facts = Facts(
        durable=ADVISORY.durable,
        fencing="no",
        server_expiry="no: held until the session ends (key: 2 bytes of MD5 of the name)",
    )
    is_sync = True
    note = "tooz.coordination.get_coordinator('postgresql://...').get_lock(name) from threads"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.coordinators: list[Any] = []

    async def start(self) -> None:
        require("psycopg2", "tooz.coordination", "tooz.drivers.pgsql")

    async def open(self, clients: int, contended: bool) -> Sequence[_ToozSession]:
        from tooz import coordination

        def make(i: int) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                coordinator = coordination.get_coordinator(self.dsn, f"peer-{i}".encode())
            coordinator.start()
            return coordinator

        self.coordinators = [await asyncio.to_thread(make, i) for i in range(clients)]
        return [_ToozSession(c) for c in self.coordinators]

    async def close(self) -> None:
        for c in self.coordinators:
            await asyncio.to_thread(c.stop)
        self.coordinators = []

"""One workload client process: random acquire / hold / extend / release cycles.

``python -m chaos.client --via lib|http --name c1 --dsn ... [--url ...] --out c1.jsonl``
runs until SIGTERM or ``--seconds``. Through the library (``LockClient``) or the HTTP
service; either way each protected write goes through the engine's fencing guard, in
one transaction with the write, on a direct connection to the database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from chaos.history import LOCKS, WRITE_SQL, Held, Recorder
from chaos.http_driver import HttpDriver
from omninode_bridge.locks import LockClient, LockSettings
from omninode_bridge.locks.errors import (
    LockError,
    LockExpiredError,
    LockHeldByOtherError,
    LockNotHeldError,
    LockTimeoutError,
    StaleTokenError,
)
from omninode_bridge.locks.queries import load_queries

T = TypeVar("T")
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, LockError, asyncio.TimeoutError)


class LibDriver:
    """The workload's three operations through the async library."""

    def __init__(self, locks: LockClient) -> None:
        self.locks = locks

    async def acquire(self, lock: str, owner: str, lease_id: str, **opts: Any) -> Held:
        lease = await self.locks.acquire(lock, owner, lease_id=lease_id, **opts)
        return Held(lock, lease.mode.value, lease.lease_id, lease.token, lease.ttl, lease.local_deadline,
                    lease.acquired_at.isoformat(), lease.expires_at.isoformat(), lease)  # fmt: skip

    async def extend(self, held: Held, ttl: float) -> str:
        lease = await self.locks.extend(held.lease, ttl)
        held.deadline, held.ttl = lease.local_deadline, ttl
        return lease.expires_at.isoformat()

    async def release(self, lock: str, lease_id: str) -> bool:
        return await self.locks.release(lease_id)


class Workload:
    def __init__(
        self, driver: Any, rec: Recorder, pool: asyncpg.Pool, rng: random.Random, cancels: bool
    ) -> None:
        self.driver, self.rec, self.pool, self.rng, self.cancels = driver, rec, pool, rng, cancels
        self.guard_sql = load_queries("omninode_locks")["fence_guard"]
        self.cycles = 0

    async def cycle(self) -> None:
        rng, rec = self.rng, self.rec
        lock, modes, permits = rng.choice(LOCKS)
        mode, ttl = rng.choice(modes), rng.choice((1.0, 1.5, 2.0, 3.0))
        wait = rng.choice((0.0, 0.0, 0.3, 1.0, 2.0))
        lease_id, owner = str(uuid.uuid4()), f"{rec.client}:{self.cycles}"
        self.cycles += 1
        base = {"lock": lock, "mode": mode, "lease_id": lease_id, "ttl": ttl, "wait": wait}
        t0 = time.monotonic()
        task = asyncio.ensure_future(
            self.driver.acquire(lock, owner, lease_id, mode=mode, ttl=ttl, wait=wait, permits=permits)
        )
        if self.cancels and rng.random() < 0.12:
            await asyncio.wait({task}, timeout=rng.uniform(0, wait + 0.02))
            task.cancel()
        try:
            held: Held = await task
        except asyncio.CancelledError:
            rec.write("acquire", **base, t0=t0, t1=time.monotonic(), outcome="cancelled")
            return
        except LockHeldByOtherError:
            rec.write("acquire", **base, t0=t0, t1=time.monotonic(), outcome="busy")
            return
        except LockTimeoutError as err:  # the context says what ended the wait, if anything did
            why = None if err.__context__ is None else _why(err.__context__)
            rec.write("acquire", **base, t0=t0, t1=time.monotonic(), outcome="timeout", context=why)
            return
        except DB_ERRORS as err:
            rec.write("acquire", **base, t0=t0, t1=time.monotonic(), outcome="unknown", error=_why(err))
            await asyncio.sleep(self.rng.uniform(0.1, 0.4))  # back off while the fault lasts
            await self.release(lock, lease_id, mode)  # it may have been granted: give it back
            return
        rec.write("acquire", **base, t0=t0, t1=time.monotonic(), outcome="granted", token=held.token,
                  acquired_at=held.acquired_at, expires_at=held.expires_at)  # fmt: skip
        await self.hold(held, permits)

    async def hold(self, held: Held, permits: int | None) -> None:
        rng = self.rng
        fenced = held.mode == "exclusive" and permits is None
        if fenced and self.rec.belief(held.lease_id, held.lock, held.deadline):
            await self.write(held, believed=True)
        await asyncio.sleep(rng.uniform(0, 0.6 * held.ttl))
        extended = rng.random() < 0.4 and await self.extend(held)
        if extended and fenced and self.rec.belief(held.lease_id, held.lock, held.deadline):
            await self.write(held, believed=True)
        if rng.random() < 0.08:  # outlive the lease, then write anyway: the guard must decide
            await asyncio.sleep(held.ttl * 1.3)
            if fenced:
                await self.write(held, believed=False)
        self.rec.belief(held.lease_id, held.lock, held.deadline)
        await self.release(held.lock, held.lease_id, held.mode)

    async def extend(self, held: Held) -> bool:
        ttl = self.rng.choice((1.0, 2.0, 3.0))
        t0 = time.monotonic()
        base = {
            "lock": held.lock,
            "mode": held.mode,
            "lease_id": held.lease_id,
            "token": held.token,
            "ttl": ttl,
        }
        try:
            expires_at = await self.driver.extend(held, ttl)
        except (LockExpiredError, LockNotHeldError):
            self.rec.write("extend", **base, t0=t0, t1=time.monotonic(), outcome="lost")
            return False
        except DB_ERRORS as err:
            self.rec.write("extend", **base, t0=t0, t1=time.monotonic(), outcome="unknown", error=_why(err))
            held.deadline = min(held.deadline, t0)  # in doubt: no longer believed
            return False
        self.rec.write("extend", **base, t0=t0, t1=time.monotonic(), outcome="ok", expires_at=expires_at)
        return True

    async def release(self, lock: str, lease_id: str, mode: str) -> None:
        t0 = time.monotonic()
        base = {"lock": lock, "mode": mode, "lease_id": lease_id}
        try:
            released_now = await self.driver.release(lock, lease_id)
        except (LockExpiredError, LockNotHeldError):
            self.rec.write("release", **base, t0=t0, t1=time.monotonic(), outcome="lost")
            return
        except DB_ERRORS as err:
            self.rec.write("release", **base, t0=t0, t1=time.monotonic(), outcome="unknown", error=_why(err))
            return
        outcome = "released" if released_now else "already"
        self.rec.write("release", **base, t0=t0, t1=time.monotonic(), outcome=outcome)

    async def write(self, held: Held, believed: bool) -> None:
        """The protected write: the fencing guard and the row in one transaction."""
        t0 = time.monotonic()
        base = {"lock": held.lock, "lease_id": held.lease_id, "token": held.token, "believed": believed}
        try:
            async with asyncio.timeout(5), self.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval(self.guard_sql, held.lock, held.token):
                    raise StaleTokenError("stale", resource=held.lock, token=held.token)
                await conn.execute(WRITE_SQL, held.lock, held.token, held.lease_id, self.rec.client)
        except StaleTokenError:
            self.rec.write("write", **base, t0=t0, t1=time.monotonic(), outcome="rejected")
            return
        except DB_ERRORS as err:
            self.rec.write("write", **base, t0=t0, t1=time.monotonic(), outcome="unknown", error=_why(err))
            return
        self.rec.write("write", **base, t0=t0, t1=time.monotonic(), outcome="accepted")


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    rec = Recorder(Path(args.out), args.name, args.via)
    rng = random.Random(args.seed)
    settings = LockSettings.load(env_file=None).replace(pool_min=1, pool_max=4, connect_timeout=5)
    async with contextlib.AsyncExitStack() as stack:
        pool = await connected(
            lambda: asyncpg.create_pool(
                args.dsn,
                min_size=1,
                max_size=3,
                timeout=5,
                statement_cache_size=settings.statement_cache_size,
            ),
            stop,
        )
        stack.push_async_callback(lambda: asyncio.wait_for(pool.close(), 5))
        if args.via == "lib":
            opener = lambda: LockClient.connect(args.dsn, settings=settings, run_migrations=False)  # noqa: E731
            locks = await connected(opener, stop)
            stack.push_async_callback(locks.close)
            driver: Any = LibDriver(locks)
        else:
            driver = await stack.enter_async_context(HttpDriver(args.url))
        work = Workload(driver, rec, pool, rng, cancels=args.via == "lib")
        rec.write("ready")
        deadline = time.monotonic() + args.seconds
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                await asyncio.sleep(rng.uniform(0, 0.03))  # think time
                await work.cycle()
            except DB_ERRORS as err:  # anything unforeseen: note it and go on
                rec.write("error", error=f"{type(err).__name__}: {err}"[:300])
                await asyncio.sleep(0.2)
    rec.close()


async def connected(open_: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    """Open a connection (pool, client), retrying while a fault keeps the database away."""
    while True:
        try:
            return await open_()
        except DB_ERRORS:
            if stop.is_set():
                raise
            await asyncio.sleep(0.3)


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:160]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="chaos.client")
    p.add_argument("--via", choices=("lib", "http"), required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--url", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=3600.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))

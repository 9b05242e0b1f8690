"""The async lock client: the one implementation of every operation.

All lock state lives in PostgreSQL; this object holds a connection pool, one LISTEN
connection shared by its waiters, and a cleanup task. Any number of clients in any
number of processes may use the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager
from typing import Any, Unpack

import asyncpg

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import (
    LockError,
    LockTimeoutError,
    LockValidationError,
)
from omninode_bridge.locks.listener import GrantListener, WaitSlot
from omninode_bridge.locks.migrate import migrate
from omninode_bridge.locks.models import (
    Lease,
    LockMode,
    check_metadata,
    check_mode,
    check_name,
    check_permits,
    check_ttl,
    check_wait,
)
from omninode_bridge.locks.pool import open_pool
from omninode_bridge.locks.queries import channel_for
from omninode_bridge.locks.renew import LeaseKeeper
from omninode_bridge.locks.request import AcquireOptions, AcquireRequest
from omninode_bridge.locks.results import (
    acquire_error,
    acquire_outcome,
    lease_outcome,
    parse_lease_id,
)
from omninode_bridge.locks.retry import CircuitBreaker, RetryPolicy
from omninode_bridge.locks.store import LockStore

GRANT_DELIVERY_MARGIN = 0.05
PRUNE_INTERVAL = 60.0


class _Connecting:
    """``await LockClient.connect(...)`` or ``async with LockClient.connect(...) as c``."""

    def __init__(self, opener: Callable[[], Awaitable[LockClient]]) -> None:
        self._opener = opener
        self._client: LockClient | None = None

    def __await__(self) -> Generator[Any, None, LockClient]:
        return self._opener().__await__()

    async def __aenter__(self) -> LockClient:
        self._client = await self._opener()
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()


class LockClient(LockStore):
    """Distributed locks on PostgreSQL: exclusive, shared and semaphore; see SPEC §1.

    Acquire, release, extend and the ``lock()`` context manager live here; queries,
    admin operations and the retrying statement runner come from :class:`LockStore`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: LockSettings,
        *,
        dsn: str,
        owner_id: str | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(pool, settings, retry=retry, breaker=breaker)
        self.owner_id = owner_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._dsn = dsn
        self._listener = GrantListener.shared(dsn, channel_for(self.schema), self._q["refresh_listener"])
        self._cleanup_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- life cycle ---------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        dsn: str | None = None,
        *,
        settings: LockSettings | None = None,
        run_migrations: bool = True,
        cleanup: bool = True,
        owner_id: str | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> _Connecting:
        """Open a client. With no DSN configured anywhere, an embedded PostgreSQL starts."""

        async def opener() -> LockClient:
            cfg = settings or LockSettings.load()
            if dsn is not None:
                cfg = cfg.with_dsn(dsn)
            pool, real_dsn = await open_pool(cfg)
            client = cls(pool, cfg, dsn=real_dsn, owner_id=owner_id, retry=retry, breaker=breaker)
            try:
                if run_migrations:
                    async with pool.acquire() as conn:
                        await migrate(conn, cfg.schema)  # type: ignore[arg-type]
                if cleanup:
                    client.start_cleanup()
            except BaseException:
                await client.close()
                raise
            return client

        return _Connecting(opener)

    def start_cleanup(self) -> None:
        """Run :meth:`cleanup_expired` every ``cleanup_interval`` seconds in the background."""
        if self._cleanup_task is None:
            self._cleanup_task = asyncio.get_running_loop().create_task(self._cleanup_loop())

    async def _cleanup_loop(self) -> None:
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.cleanup_interval)
            try:
                await self.cleanup_expired()
                if time.monotonic() - last_prune >= PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    await self.prune()
            except Exception as err:  # the next round tries again; correctness never needs it
                emit_log_event(LogLevel.WARNING, "lock cleanup failed", {"error": type(err).__name__})

    async def close(self) -> None:
        """Stop background work and close connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
        await self._listener.release()
        await self.pool.close()

    async def __aenter__(self) -> LockClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- acquire ------------------------------------------------------------------

    def request(
        self, name: str, owner_id: str | None = None, **options: Unpack[AcquireOptions]
    ) -> AcquireRequest:
        """Validate an acquire request (raises ``VALIDATION_ERROR`` before any I/O)."""
        ttl = options.get("ttl")
        lease_id = options.get("lease_id")
        return AcquireRequest(
            name=check_name(name),
            owner_id=check_name(owner_id or self.owner_id, "owner_id"),
            mode=check_mode(options.get("mode", LockMode.EXCLUSIVE)),
            ttl=check_ttl(self.settings.default_ttl if ttl is None else ttl),
            wait=check_wait(options.get("wait", 0.0)),
            permits=check_permits(options.get("permits")),
            reentrant=bool(options.get("reentrant", False)),
            metadata=check_metadata(options.get("metadata")),
            # a caller's own id makes its retried request find its earlier effect
            lease_id=uuid.uuid4() if lease_id is None else parse_lease_id(lease_id),
        )

    async def acquire(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        conn: asyncpg.Connection | None = None,
        **options: Unpack[AcquireOptions],
    ) -> Lease:
        """Acquire ``name``. Options: ``mode`` ("exclusive" | "shared"), ``ttl`` (s),
        ``wait`` (0 tries once; T queues FIFO for up to T s), ``permits`` (semaphore
        size), ``reentrant``, ``metadata`` (JSON object, <= 4 KiB), ``lease_id`` (the
        caller's own UUID, so a retried request finds its own earlier grant or queue entry).

        With ``conn`` the lease is taken inside the caller's transaction and commits or
        rolls back with it (try-lock only: a queue entry would be invisible until commit).
        """
        req = self.request(name, owner_id, **options)
        try:
            if conn is not None:
                if req.wait > 0:
                    raise LockValidationError("wait must be 0 inside the caller's transaction", field="wait")
                lease = await self._try_now(req, lambda q, *a: conn.fetchrow(self._q[q], *a))
            elif req.wait == 0:
                lease = await self._try_now(req, self._call)
            else:
                lease = await self._acquire_waiting(req)
        except Exception as err:
            self.stats.count_acquire(getattr(err, "code", "error").lower())
            if getattr(err, "code", "") == "DEADLOCK_DETECTED":
                self.stats.deadlocks += 1
            raise
        self.stats.count_acquire("granted")
        return lease

    async def _try_now(self, req: AcquireRequest, fetch: Callable[..., Awaitable[Any]]) -> Lease:
        """Try-lock: the one-statement fast path, then the full state machine."""
        sent = time.monotonic()
        lease = await self._fast(req, fetch, sent)
        if lease is not None:
            return lease
        return acquire_outcome(await fetch("acquire", *req.args(None)), req.name, sent)

    async def _fast(
        self, req: AcquireRequest, fetch: Callable[..., Awaitable[Any]], sent: float
    ) -> Lease | None:
        """The uncontended grant, or None when the lock is busy, queued or in doubt."""
        if req.reentrant:
            return None
        try:
            row = await fetch("acquire_fast", *req.fast_args())
        except asyncpg.UniqueViolationError:  # a retry racing its own first attempt
            return None
        return None if row is None else Lease.from_record(row, sent)

    async def _acquire_waiting(self, req: AcquireRequest) -> Lease:
        lease_id = str(req.lease_id)
        deadline = time.monotonic() + req.wait
        lease = await self._fast(req, self._call, time.monotonic())
        if lease is not None:
            return lease
        pid = await self._listener.ensure_started()
        slot = self._listener.register(lease_id)
        self.stats.waiting += 1
        try:
            sent = time.monotonic()
            row = await self._call("acquire", *req.args(pid), deadline=deadline)
            while True:
                if row["status"] == "granted":
                    return Lease.from_record(row, sent)
                if row["status"] == "gone":  # dropped from the queue: enqueue again
                    row = await self._call("acquire", *req.args(pid), deadline=deadline)
                    continue
                if row["status"] != "queued":
                    raise acquire_error(row, req.name)
                lease = await self._sleep_in_queue(slot, row, deadline)
                if lease is not None:
                    return lease
                if time.monotonic() >= deadline:
                    return await self._give_up(req)
                sent = time.monotonic()
                row = await self._call("poll_wait", req.lease_id)
        except LockError:
            raise  # refused or timed out: the database already dropped our queue entry
        except BaseException:  # cancelled or failed mid-wait: leave the queue explicitly
            await asyncio.shield(self._abandon(req.lease_id))
            raise
        finally:
            self._listener.unregister(lease_id)
            self.stats.waiting -= 1

    async def _sleep_in_queue(self, slot: WaitSlot, row: Any, deadline: float) -> Lease | None:
        """Sleep until our grant is announced, a re-check is due, or the deadline."""
        pause = min(deadline - time.monotonic(), self.settings.recheck_interval)
        if row["retry_ms"] is not None:  # a blocking lease expires then: re-check right after
            pause = min(pause, row["retry_ms"] / 1000 + 0.002)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.event.wait(), max(pause, 0))
        if slot.grant is not None:
            # The grant's TTL started in the database a delivery delay ago: count the
            # local estimate from a little earlier than now so it errs on the early side.
            return Lease.from_record(slot.grant, time.monotonic() - GRANT_DELIVERY_MARGIN)
        slot.event.clear()
        return None

    async def _give_up(self, req: AcquireRequest) -> Lease:
        row = await self._call("cancel_wait", req.lease_id)
        if row["status"] == "granted":  # the grant raced the deadline: keep it
            return Lease.from_record(row, time.monotonic())
        raise LockTimeoutError(
            f"timed out after {req.wait:g}s waiting for {req.name!r}",
            lock_name=req.name,
            wait=req.wait,
        )

    async def _abandon(self, lease_id: uuid.UUID) -> None:
        """Leave the queue after cancellation or an error; release a grant that raced in."""
        with contextlib.suppress(Exception):
            row = await self._call("cancel_wait", lease_id, deadline=time.monotonic() + 2)
            if row["status"] == "granted":
                await self._call("release", lease_id, deadline=time.monotonic() + 2)

    # -- release / extend ---------------------------------------------------------

    async def release(
        self, lease: Lease | str | uuid.UUID, *, conn: asyncpg.Connection | None = None
    ) -> bool:
        """Release a lease. Idempotent: releasing twice is fine. Returns False when it was
        already released earlier; raises LOCK_EXPIRED / LOCK_NOT_HELD when it was lost."""
        lease_id = parse_lease_id(lease)
        started = time.perf_counter()
        if conn is not None:
            row: Any = await conn.fetchrow(self._q["release"], lease_id)
        else:
            row = await self._call("release", lease_id)
        if isinstance(lease, Lease) and row["status"] in ("expired", "not_held"):
            lease.lost = row["status"]
        lease_outcome(row, "release")
        self.stats.releases += 1
        self.stats.last_db_ms = (time.perf_counter() - started) * 1000
        return bool(row["detail"] != "already released")

    async def extend(self, lease: Lease, ttl: float | None = None) -> Lease:
        """Renew ``lease`` for ``ttl`` seconds (default: its TTL) from now, by the DB clock."""
        seconds = check_ttl(lease.ttl if ttl is None else ttl)
        sent = time.monotonic()
        row = await self._call("extend", parse_lease_id(lease), int(seconds * 1000))
        try:
            lease_outcome(row, "extend")
        except Exception as err:
            lease.lost = getattr(err, "code", "lost")
            raise
        lease.expires_at, lease.ttl, lease.local_deadline = (
            row["expires_at"],
            seconds,
            sent + seconds,
        )
        self.stats.extends += 1
        return lease

    async def extend_lease_id(self, lease_id: str | uuid.UUID, ttl: float | None = None) -> Lease:
        """Renew a lease known only by its id (the HTTP API's and CLI's form) for ``ttl``
        seconds (default ``default_ttl``); returns the lease as the database now has it."""
        seconds = check_ttl(self.settings.default_ttl if ttl is None else ttl)
        sent = time.monotonic()
        row = await self._call("extend", parse_lease_id(lease_id), int(seconds * 1000))
        lease_outcome(row, "extend")
        self.stats.extends += 1
        return Lease.from_record(row, sent)

    @asynccontextmanager
    async def lock(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        auto_renew: bool = False,
        on_lost: Callable[[Lease, str], None] | None = None,
        **options: Any,
    ) -> AsyncIterator[Lease]:
        """``async with locks.lock(name, ttl=30, wait=10) as lease:`` — released on exit.

        With ``auto_renew`` the lease is extended about every TTL/3; if that fails the
        body is cancelled at once and ``LockExpiredError`` is raised from this block.
        """
        lease = await self.acquire(name, owner_id, **options)
        keeper = LeaseKeeper(self.extend, lease, on_lost=on_lost, cancel=asyncio.current_task())
        if auto_renew:
            keeper.start()
        body_failed = False
        try:
            yield lease
        except asyncio.CancelledError:
            body_failed = True
            keeper.convert_cancellation()
            raise
        except BaseException:
            body_failed = True
            raise
        finally:
            await keeper.stop()
            if lease.lost is None:
                try:
                    await self.release(lease)
                except Exception:
                    if not body_failed:
                        raise

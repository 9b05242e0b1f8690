"""The async lock client: the one implementation of every operation.

All lock state lives in PostgreSQL; this object holds a connection pool, one LISTEN
connection shared by its waiters, and a cleanup task. Any number of clients in any
number of processes may use the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.embedded import start_embedded
from omninode_bridge.locks.errors import (
    LockDatabaseError,
    LockError,
    LockNotFoundError,
    LockTimeoutError,
    LockValidationError,
    StaleTokenError,
)
from omninode_bridge.locks.listener import GrantListener, WaitSlot
from omninode_bridge.locks.migrate import migrate
from omninode_bridge.locks.models import (
    Lease,
    LockInfo,
    LockMode,
    LockSummary,
    Waiter,
    check_metadata,
    check_mode,
    check_name,
    check_permits,
    check_ttl,
    check_wait,
)
from omninode_bridge.locks.queries import channel_for, load_queries
from omninode_bridge.locks.renew import LeaseKeeper
from omninode_bridge.locks.results import (
    acquire_error,
    acquire_outcome,
    lease_outcome,
    parse_lease_id,
)
from omninode_bridge.locks.retry import CircuitBreaker, RetryPolicy, is_transient

OPERATION_TIMEOUT = 10.0
GRANT_DELIVERY_MARGIN = 0.05
PRUNE_INTERVAL = 60.0


@dataclass
class EngineStats:
    """Counters for metrics; plain numbers so any exporter can read them."""

    acquires: dict[str, int] = field(default_factory=dict)
    releases: int = 0
    extends: int = 0
    deadlocks: int = 0
    retries: int = 0
    waiting: int = 0
    last_db_ms: float = 0.0

    def count_acquire(self, result: str) -> None:
        self.acquires[result] = self.acquires.get(result, 0) + 1


@dataclass(frozen=True)
class AcquireRequest:
    """A validated acquire; ``lease_id`` is chosen here so retries are idempotent."""

    name: str
    owner_id: str
    mode: LockMode
    ttl: float
    wait: float
    permits: int | None
    reentrant: bool
    metadata: dict[str, Any]
    lease_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def fast_args(self) -> tuple[Any, ...]:
        """Arguments of ``acquire_fast`` (the one-statement uncontended path)."""
        ms = int(self.ttl * 1000)
        return (self.name, self.lease_id, self.owner_id, self.mode.value, ms, self.permits, self.metadata)

    def args(self, listener_pid: int | None) -> tuple[Any, ...]:
        return (
            self.name,
            self.lease_id,
            self.owner_id,
            self.mode.value,
            int(self.ttl * 1000),
            int(self.wait * 1000),
            self.permits,
            self.reentrant,
            self.metadata,
            listener_pid,
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook that sends nothing: the engine's statements leave no session
    state behind (settings are transaction-local), so asyncpg's default reset query
    would only add a round trip to every call."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


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


class LockClient:
    """Distributed locks on PostgreSQL: exclusive, shared and semaphore; see SPEC §1."""

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
        self.pool = pool
        self.settings = settings
        self.schema = settings.schema
        self.owner_id = owner_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self.stats = EngineStats()
        self._dsn = dsn
        self._q = load_queries(self.schema)
        self._listener = GrantListener(self._listen_connect, channel_for(self.schema), self._relisten)
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
            real_dsn = (
                cfg.dsn if cfg.dsn is not None else await asyncio.to_thread(start_embedded, cfg.data_dir)
            )
            try:
                pool = await asyncpg.create_pool(
                    real_dsn,
                    min_size=cfg.pool_min,
                    max_size=cfg.pool_max,
                    init=_init_connection,
                    reset=_keep_session,
                    command_timeout=60,
                )
            except ValueError as err:  # asyncpg's DSN parser: malformed port, options...
                raise LockValidationError(f"invalid DSN {cfg.safe_dsn()}", field="dsn") from err
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                raise LockDatabaseError(
                    f"cannot connect to PostgreSQL at {cfg.safe_dsn()}: {type(err).__name__}"
                ) from err
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
        await self._listener.close()
        await self.pool.close()

    async def __aenter__(self) -> LockClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing -----------------------------------------------------------------

    async def _listen_connect(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        return conn

    async def _relisten(self, pid: int, lease_ids: list[str]) -> None:
        if lease_ids:
            await self._call("refresh_listener", pid, [uuid.UUID(i) for i in lease_ids], fetch="execute")

    async def _call(
        self, name: str, *args: Any, deadline: float | None = None, fetch: str = "fetchrow"
    ) -> Any:
        query = self._q[name]

        async def once() -> Any:
            async with self.pool.acquire() as conn:
                try:
                    return await getattr(conn, fetch)(query, *args)
                except Exception as err:
                    if is_transient(err):  # never hand a broken connection back to the pool
                        conn.terminate()
                    raise

        started = time.perf_counter()
        try:
            result, retries = await self.retry.run(
                once, deadline or time.monotonic() + OPERATION_TIMEOUT, self.breaker
            )
        finally:
            self.stats.last_db_ms = (time.perf_counter() - started) * 1000
        self.stats.retries += retries
        return result

    # -- acquire ------------------------------------------------------------------

    def request(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        mode: LockMode | str = LockMode.EXCLUSIVE,
        ttl: float | None = None,
        wait: float = 0.0,
        permits: int | None = None,
        reentrant: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> AcquireRequest:
        """Validate an acquire request (raises ``VALIDATION_ERROR`` before any I/O)."""
        return AcquireRequest(
            name=check_name(name),
            owner_id=check_name(owner_id or self.owner_id, "owner_id"),
            mode=check_mode(mode),
            ttl=check_ttl(self.settings.default_ttl if ttl is None else ttl),
            wait=check_wait(wait),
            permits=check_permits(permits),
            reentrant=bool(reentrant),
            metadata=check_metadata(metadata),
        )

    async def acquire(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        mode: LockMode | str = LockMode.EXCLUSIVE,
        ttl: float | None = None,
        wait: float = 0.0,
        permits: int | None = None,
        reentrant: bool = False,
        metadata: dict[str, Any] | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> Lease:
        """Acquire ``name``. ``wait=0`` tries once; ``wait=T`` queues FIFO for up to T s.

        With ``conn`` the lease is taken inside the caller's transaction and commits or
        rolls back with it (try-lock only: a queue entry would be invisible until commit).
        """
        req = self.request(
            name,
            owner_id,
            mode=mode,
            ttl=ttl,
            wait=wait,
            permits=permits,
            reentrant=reentrant,
            metadata=metadata,
        )
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

    # -- queries and admin --------------------------------------------------------

    async def get_lock_info(self, name: str) -> LockInfo:
        """Holders, queue and last token of ``name``; ``LOCK_NOT_FOUND`` if never used."""
        check_name(name)
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            row = await conn.fetchrow(self._q["lock_row"], name)
            if row is None:
                raise LockNotFoundError(f"lock {name!r} does not exist", lock_name=name)
            holders = await conn.fetch(self._q["lock_holders"], name)
            waiters = await conn.fetch(self._q["lock_waiters"], name)
        return LockInfo(
            name=name,
            permits=row["permits"],
            last_token=row["fence"],
            holders=[Lease.from_record(h) for h in holders],
            waiters=[
                Waiter(w["owner_id"], LockMode(w["mode"]), i, w["waiting_ms"])
                for i, w in enumerate(waiters, start=1)
            ],
        )

    async def list_locks(
        self,
        *,
        prefix: str | None = None,
        owner_id: str | None = None,
        expiring_within: float | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[LockSummary]:
        """Held locks, by name; page with ``after=<last name of the previous page>``."""
        if not 1 <= limit <= 1000:
            raise LockValidationError("limit must be within 1..1000", field="limit")
        within_ms = None if expiring_within is None else int(expiring_within * 1000)
        rows = await self._call("list_locks", prefix, owner_id, within_ms, limit, after, fetch="fetch")
        return [
            LockSummary(
                name=r["name"],
                permits=r["permits"],
                last_token=r["fence"],
                holders=r["holders"],
                exclusive=r["exclusive"],
                owners=list(r["owners"]),
                waiters=r["waiters"],
                next_expiry=r["next_expiry"],
            )
            for r in rows
        ]

    async def counts(self) -> dict[str, int]:
        """Active locks, leases, waiters, expired-but-unreaped leases, known lock names."""
        return dict(await self._call("counts"))

    async def recent_events(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest events from the outbox (all locks, or one)."""
        return [dict(r) for r in await self._call("recent_events", name, limit, fetch="fetch")]

    async def force_release(self, name: str, reason: str) -> int:
        """Admin: free every lease of ``name`` (recorded with ``reason``); returns how many."""
        check_name(name)
        if not reason or len(reason) > 1000:
            raise LockValidationError("a reason of 1-1000 characters is required", field="reason")
        count: int = await self._call("force_release", name, reason, fetch="fetchval")
        if count < 0:
            raise LockNotFoundError(f"lock {name!r} does not exist", lock_name=name)
        return count

    async def cleanup_expired(self) -> int:
        """Reap expired leases now (the background task does this periodically)."""
        count: int = await self._call("cleanup_expired", fetch="fetchval")
        return count

    async def prune(self, *, keep_unrelayed: bool = False) -> tuple[int, int]:
        """Drop events older than ``event_retention`` and lock rows idle for
        ``lock_idle_retention`` (the cleanup task does this every minute); returns
        (events, locks) removed. Tokens stay strictly increasing: they come from a
        sequence, not from the pruned rows."""
        row = await self._call(
            "prune", self.settings.event_retention, self.settings.lock_idle_retention, keep_unrelayed
        )
        return int(row["events_pruned"]), int(row["locks_pruned"])

    async def fence_guard(self, conn: asyncpg.Connection, resource: str, token: int) -> None:
        """Inside the caller's transaction: reject a write whose token is older than one
        already seen for ``resource`` (raises :class:`StaleTokenError`)."""
        check_name(resource, "resource")
        if not await conn.fetchval(self._q["fence_guard"], resource, token):
            raise StaleTokenError(
                f"fencing token {token} for {resource!r} is stale", resource=resource, token=token
            )

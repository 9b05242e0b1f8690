"""The async lock client: the one implementation of every operation.

All lock state lives in PostgreSQL; this object holds a connection pool, one LISTEN
connection shared by its waiters, and a cleanup task. Any number of clients in any
number of processes may use the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager
from typing import Any, Literal, Unpack, overload

import asyncpg

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import (
    LockDatabaseError,
    LockError,
    LockExpiredError,
    LockHeldByOtherError,
    LockNotHeldError,
    LockTimeoutError,
    LockValidationError,
    PoolExhaustedError,
)
from omninode_bridge.locks.listener import GrantListener
from omninode_bridge.locks.migrate import migrate
from omninode_bridge.locks.models import (
    Lease,
    LockMode,
    check_correlation,
    check_mode,
    check_name,
    check_permits,
    check_ttl,
    check_wait,
    metadata_json,
)
from omninode_bridge.locks.pool import open_pool
from omninode_bridge.locks.queries import channel_for
from omninode_bridge.locks.renew import LeaseKeeper
from omninode_bridge.locks.request import AcquireOptions, AcquireRequest, check_options
from omninode_bridge.locks.results import (
    acquire_outcome,
    lease_outcome,
    parse_lease_id,
)
from omninode_bridge.locks.retry import CircuitBreaker, RetryPolicy
from omninode_bridge.locks.store import LockStore

PRUNE_INTERVAL = 60.0
UNDO_GRACE = 1.0  # how long a cancelled call's statement may finish before it is stopped
SETTLE_TIMEOUT = 5.0  # how long a cancelled call waits for its statement's outcome


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


# release() statuses that mean the lease existed: given back now, or ended already
FOUND_AND_ENDED = frozenset({"released", "already_released", "expired"})


def _outcome_unknown(err: BaseException) -> bool:
    """A database failure after the statement may have been sent (a pool that gave no
    connection sent nothing)."""
    return isinstance(err, LockDatabaseError) and not isinstance(err, PoolExhaustedError)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _deliver(call: Awaitable[Any], answer: asyncio.Future[Any]) -> Any:
    """Await ``call`` in its own task and hand the outcome to ``answer`` from inside that
    task (unless the caller stopped waiting), as ``asyncio.shield`` would: a stopped
    statement cancels ``answer``."""
    try:
        result = await call
    except asyncio.CancelledError:
        answer.cancel()
        raise
    except BaseException as err:
        if not answer.done():
            answer.set_exception(err)
        raise
    if not answer.done():
        answer.set_result(result)
    return result


class LockClient(LockStore):
    """Distributed locks on PostgreSQL: exclusive, shared and semaphore; see SPEC §1.

    Acquire, release, extend and the ``lock()`` context manager live here; queries,
    admin operations and the retrying statement runner come from :class:`LockStore`;
    waiting in a queue from :mod:`~omninode_bridge.locks.waiting`.

    Owner identity: without an explicit ``owner_id`` (per call, or for the whole
    client at :meth:`connect`), every asyncio task gets its own owner id
    (``host:pid:client:task-n``), so concurrent tasks of one client are distinct owners
    to deadlock detection and reentrancy, as they are in reality.
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
        self._fixed_owner = owner_id is not None
        self._task_owner: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()
        self._task_numbers = itertools.count(1)
        self._dsn = dsn
        self.listener = GrantListener.shared(
            dsn, channel_for(self.schema), self.queries, settings.recheck_interval
        )
        self._background: set[asyncio.Task[None]] = set()
        # statements in flight and clean-ups that must finish even if their caller was
        # cancelled: close() lets them end before it closes the pool
        self._inflight: set[asyncio.Future[Any]] = set()
        self._settling: set[asyncio.Future[Any]] = set()
        self._cleanup_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def dsn(self) -> str:
        """The DSN the pool connected with (for a LISTEN connection beside it, e.g. the event feed)."""
        return self._dsn

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
        """Open a client. With no DSN configured anywhere, an embedded PostgreSQL starts.

        ``run_migrations`` (default on) creates or upgrades the lock schema (six tables
        in ``settings.schema``) under an advisory lock; turn it off where the schema is
        managed by ``omninode-lock migrate``.
        """

        async def opener() -> LockClient:
            cfg = settings or LockSettings.load()
            if dsn is not None:
                cfg = cfg.with_dsn(dsn)
            pool, real_dsn = await open_pool(cfg)
            client = cls(pool, cfg, dsn=real_dsn, owner_id=owner_id, retry=retry, breaker=breaker)
            try:
                if run_migrations:
                    await client._migrate()
                if cleanup:
                    client.start_cleanup()
            except BaseException:
                await client.close()
                raise
            return client

        return _Connecting(opener)

    async def _migrate(self) -> None:
        try:
            async with self.pool.acquire() as conn:
                await migrate(conn, self.schema)  # type: ignore[arg-type]
        except LockError:
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise LockDatabaseError(
                f"migrating schema {self.schema} failed: {type(err).__name__}: {err}", schema=self.schema
            ) from err

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
        await self._drain()
        for task in [self._cleanup_task, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.listener.release()
        await self._close_lane()
        await self.pool.close()

    async def _drain(self) -> None:
        """Let in-flight statements and the clean-ups of cancelled callers finish
        (bounded), so closing never leaves a lease or a queue entry held by nobody."""
        end = time.monotonic() + SETTLE_TIMEOUT
        quiet = 0
        while quiet < 2 and time.monotonic() < end:
            for _ in range(4):  # cancellations requested before close() land first
                await asyncio.sleep(0)
            pending = self._inflight | self._settling
            if not pending:
                quiet += 1  # twice nothing pending: a finished statement started no clean-up
                continue
            quiet = 0
            await asyncio.wait(pending, timeout=max(end - time.monotonic(), 0.001))

    def settle(self, work: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run clean-up ``work`` so that cancelling the caller does not stop it, and
        close() waits for it."""
        task = asyncio.ensure_future(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return asyncio.shield(task)

    async def __aenter__(self) -> LockClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background until it ends or the client closes."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- owners and requests ------------------------------------------------------

    def default_owner_id(self) -> str:
        """The owner id used when a call names none: distinct per asyncio task."""
        if self._fixed_owner:
            return self.owner_id
        task = asyncio.current_task()
        if task is None:
            return self.owner_id
        owner = self._task_owner.get(task)
        if owner is None:
            owner = self._task_owner[task] = f"{self.owner_id}:task-{next(self._task_numbers)}"
        return owner

    def request(
        self, name: str, owner_id: str | None = None, **options: Unpack[AcquireOptions]
    ) -> AcquireRequest:
        """Validate an acquire request (raises ``VALIDATION_ERROR`` before any I/O, and
        ``TypeError`` for an unknown option)."""
        check_options(options)
        ttl = options.get("ttl")
        lease_id = options.get("lease_id")
        return AcquireRequest(
            name=check_name(name),
            owner_id=check_name(owner_id or self.default_owner_id(), "owner_id"),
            mode=check_mode(options.get("mode", LockMode.EXCLUSIVE)),
            ttl=check_ttl(self.settings.default_ttl if ttl is None else ttl),
            wait=check_wait(options.get("wait", 0.0)),
            permits=check_permits(options.get("permits")),
            reentrant=bool(options.get("reentrant", False)),
            metadata_json=metadata_json(options.get("metadata")),
            lease_id=uuid.uuid4() if lease_id is None else parse_lease_id(lease_id),
            own_id=lease_id is not None,
            correlation_id=check_correlation(options.get("correlation_id")),
        )

    # -- acquire ------------------------------------------------------------------

    @overload
    async def acquire(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        blocking: Literal[True] = True,
        conn: asyncpg.Connection | None = None,
        **options: Unpack[AcquireOptions],
    ) -> Lease: ...

    @overload
    async def acquire(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        blocking: Literal[False],
        conn: asyncpg.Connection | None = None,
        **options: Unpack[AcquireOptions],
    ) -> Lease | None: ...

    async def acquire(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        blocking: bool = True,
        conn: asyncpg.Connection | None = None,
        **options: Unpack[AcquireOptions],
    ) -> Lease | None:
        """Acquire ``name``. Options: ``mode`` ("exclusive" | "shared"), ``ttl`` (s),
        ``wait`` (0 tries once; T queues FIFO for up to T s), ``permits`` (semaphore
        size), ``reentrant``, ``metadata`` (JSON object, <= 4 KiB), ``lease_id`` (your
        own UUID, so that a retried request finds its own earlier effect),
        ``correlation_id`` (carried by the events this acquire causes).

        ``blocking=False`` returns ``None`` instead of raising when the lock is busy (or
        the wait ran out), as redis-py does. With ``conn`` the lease is taken inside the
        caller's transaction and commits or rolls back with it (try-lock only).
        """
        req = self.request(name, owner_id, **options)
        try:
            if conn is not None:
                if req.wait > 0:
                    raise LockValidationError("wait must be 0 inside the caller's transaction", field="wait")
                if req.correlation_id is not None and conn.is_in_transaction():
                    await conn.execute(self.queries["set_correlation"], req.correlation_id)
                sent = time.monotonic()
                row: Any = await conn.fetchrow(self.queries["acquire_in_txn"], *req.txn_args())
                lease = acquire_outcome(row, req.name, sent)
            elif req.wait == 0:
                lease = await self._try_now(req)
            else:
                from omninode_bridge.locks.waiting import wait_in_queue

                lease = await wait_in_queue(self, req)
        except (LockHeldByOtherError, LockTimeoutError) as err:
            self.stats.count_acquire(err.code.lower())
            if not blocking:
                return None
            raise
        except Exception as err:
            self.stats.count_acquire(getattr(err, "code", "error").lower())
            if _outcome_unknown(err) and conn is None and req.wait == 0:
                self.spawn(self._discard_later(req.lease_id, req.ttl))  # a grant may commit late
            if getattr(err, "code", "") == "DEADLOCK_DETECTED":
                self.stats.deadlocks += 1
            raise
        self.stats.count_acquire("granted")
        return lease

    async def _try_now(self, req: AcquireRequest) -> Lease:
        """Try-lock: the one-statement fast path, then the full state machine."""
        sent = time.monotonic()
        lease = await self.fast_acquire(req)
        if lease is not None:
            return lease
        row = await self.settled(
            self._call("acquire", *req.args(None), correlation_id=req.correlation_id),
            undo=self._discard(req.lease_id, req.ttl),
        )
        return acquire_outcome(row, req.name, sent)

    async def fast_acquire(self, req: AcquireRequest, deadline: float | None = None) -> Lease | None:
        """The uncontended grant, or None when the lock is busy, queued or in doubt.
        ``deadline`` (monotonic): a waiter's own, which also bounds the wait for a pool
        connection (thousands of waiters may share a pool of one)."""
        if req.reentrant:
            return None
        sent = time.monotonic()
        try:
            row = await self.settled(
                self._call(
                    "acquire_fast", *req.fast_args(), deadline=deadline, correlation_id=req.correlation_id
                ),
                undo=self._discard(req.lease_id, req.ttl),
            )
        except asyncpg.UniqueViolationError:  # a retry racing its own first attempt
            return None
        return None if row is None or row["token"] is None else req.granted(row, sent)

    async def settled(self, call: Awaitable[Any], undo: Callable[[bool], Awaitable[None]]) -> Any:
        """Await a statement so that cancelling the caller cannot leave its effect behind.

        A cancelled ``await`` does not un-send a statement: it may still commit (a
        lease held by nobody for its whole TTL). So the statement runs in its own task;
        if the caller is cancelled, that task is allowed to finish, ``undo`` runs after
        it (shielded), and only then is the cancellation passed on.
        """
        # asyncio.shield(task) would do, but costs the caller a loop iteration (the task's
        # done callbacks run first, then the outer future's): the task hands its outcome
        # to ``answer`` itself, and its own failure is retrieved by ``_finished``
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        task = loop.create_task(_deliver(call, answer))
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        try:
            return await answer
        except asyncio.CancelledError:
            await self.settle(self._undo_after(task, undo))
            raise

    def _finished(self, task: asyncio.Future[Any]) -> None:
        """A settled() statement ended: no longer in flight, and its failure (which the
        caller got through ``answer``, or the undo looks at) is never "never retrieved"."""
        self._inflight.discard(task)
        _consume(task)

    @staticmethod
    async def _undo_after(task: asyncio.Future[Any], undo: Callable[[bool], Awaitable[None]]) -> None:
        await asyncio.wait({task}, timeout=UNDO_GRACE)
        if not task.done():  # slow, or retrying through an outage: no further attempts
            task.cancel()
            await asyncio.wait({task}, timeout=UNDO_GRACE)
        # unknown: the statement did not answer (its connection broke, it was stopped, or
        # it is still waiting on the server), so a grant may yet commit after the undo
        unknown = not task.done() or task.cancelled() or task.exception() is not None
        with contextlib.suppress(Exception):
            await undo(unknown)

    def _discard(self, lease_id: uuid.UUID, ttl: float) -> Callable[[bool], Awaitable[None]]:
        """An undo: release ``lease_id`` if it was granted (releasing nothing is fine);
        when that fails, or the grant's outcome is unknown, keep at it in the background."""

        async def undo(unknown: bool) -> None:
            try:
                await self._call("release", lease_id, deadline=time.monotonic() + SETTLE_TIMEOUT)
            except Exception:
                unknown = True
            if unknown:
                self.spawn(self._discard_later(lease_id, ttl))

        return undo

    async def _discard_later(self, lease_id: uuid.UUID, ttl: float) -> None:
        """Give back a grant whose request failed or was cancelled with its outcome
        unknown: it may commit late (a statement still waiting on the server) or the
        database may be out of reach now. Tries with backoff until such a grant would
        have lapsed anyway; stops once the lease was found (released or ended)."""
        lapse = time.monotonic() + ttl + SETTLE_TIMEOUT
        pause, failed = 0.1, 0
        while time.monotonic() < lapse:
            await asyncio.sleep(pause)
            try:
                row = await self._call(
                    "release", lease_id, deadline=time.monotonic() + SETTLE_TIMEOUT, probe=True
                )
            except Exception:  # out of reach: try again within a second of its return
                failed += 1
                pause = min(pause * 2, 1.0)
                continue
            if row["status"] in FOUND_AND_ENDED:
                return
            pause = min(pause * 2, 5.0)  # reachable, nothing granted (yet): watch for a late commit
        if failed:
            emit_log_event(
                LogLevel.WARNING,
                "could not give back a lease whose request failed; it lapsed by its TTL",
                {"attempts_failed": failed},
            )

    # -- release / extend ---------------------------------------------------------

    async def release(
        self,
        lease: Lease | str | uuid.UUID,
        *,
        conn: asyncpg.Connection | None = None,
        correlation_id: str | None = None,
        name: str | None = None,
    ) -> bool:
        """Release a lease. Idempotent: releasing twice is fine. Returns False when it was
        already released earlier; raises LOCK_EXPIRED / LOCK_NOT_HELD when it was lost.
        With ``conn``, inside the caller's transaction (its durability is untouched).
        ``correlation_id`` is carried by the release's event. ``name``: only if the lease
        is one of that lock (else LOCK_NOT_HELD and nothing changes; the HTTP route's form)."""
        lease_id = parse_lease_id(lease)
        correlation_id = check_correlation(correlation_id)
        started = time.perf_counter()
        if name is not None and conn is not None:
            raise LockValidationError("release(name=...) checks the lock outside a caller's transaction only")
        if name is not None:
            row: Any = await self._call(
                "release_of", lease_id, check_name(name), correlation_id=correlation_id
            )
        elif conn is not None:
            if correlation_id is not None and conn.is_in_transaction():
                await conn.execute(self.queries["set_correlation"], correlation_id)
            row = await conn.fetchrow(self.queries["release_in_txn"], lease_id)
        else:
            row = await self._call("release", lease_id, correlation_id=correlation_id)
        if isinstance(lease, Lease) and row["status"] in ("expired", "not_held"):
            lease.lost = row["status"]
        status = lease_outcome(row, "release")
        self.stats.releases += 1
        self.stats.last_db_ms = (time.perf_counter() - started) * 1000
        return status != "already_released"

    async def extend(
        self, lease: Lease, ttl: float | None = None, *, correlation_id: str | None = None
    ) -> Lease:
        """Renew ``lease`` for ``ttl`` seconds (default: its TTL) from now, by the DB clock.
        If it was lost (``LOCK_EXPIRED`` / ``LOCK_NOT_HELD``), ``lease.lost`` says so."""
        seconds = check_ttl(lease.ttl if ttl is None else ttl)
        try:
            renewed = await self.extend_lease_id(lease.lease_id, seconds, correlation_id=correlation_id)
        except (LockExpiredError, LockNotHeldError) as err:
            lease.lost = err.code
            raise
        lease.expires_at, lease.ttl, lease.local_deadline = (
            renewed.expires_at,
            seconds,
            renewed.local_deadline,
        )
        return lease

    async def extend_lease_id(
        self,
        lease_id: str | uuid.UUID,
        ttl: float | None = None,
        *,
        correlation_id: str | None = None,
        name: str | None = None,
    ) -> Lease:
        """Renew a lease known only by its id (the HTTP API's and CLI's form) for ``ttl``
        seconds (default ``default_ttl``); returns the lease as the database now has it.
        ``name``: only if the lease is one of that lock (else LOCK_NOT_HELD, nothing changes)."""
        seconds = check_ttl(self.settings.default_ttl if ttl is None else ttl)
        correlation_id = check_correlation(correlation_id)
        sent = time.monotonic()
        args: tuple[Any, ...] = (parse_lease_id(lease_id), int(seconds * 1000))
        if name is not None:
            args += (check_name(name),)
        row = await self._call(
            "extend" if name is None else "extend_of", *args, correlation_id=correlation_id
        )
        lease_outcome(row, "extend")
        self.stats.extends += 1
        return Lease.from_record(row, sent)

    async def locked(self, name: str) -> bool:
        """Whether ``name`` is held by anyone right now (by the database clock)."""
        return bool(await self._call("locked", check_name(name), fetch="fetchval"))

    async def owned(self, lease: Lease | str | uuid.UUID) -> bool:
        """Whether ``lease`` is still held (not released, expired or taken over)."""
        return bool(await self._call("owned", parse_lease_id(lease), fetch="fetchval"))

    @asynccontextmanager
    async def lock(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        auto_renew: bool = False,
        on_lost: Callable[[Lease, str], None] | None = None,
        **options: Unpack[AcquireOptions],
    ) -> AsyncIterator[Lease]:
        """``async with locks.lock(name, ttl=30, wait=10) as lease:`` — released on exit.

        Takes the options of :meth:`acquire` (an unknown one raises ``TypeError``).
        With ``auto_renew`` the lease is extended about every TTL/3; if that fails the
        body is cancelled at once and ``LockExpiredError`` is raised from this block.
        """
        check_options(options, "lock")
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
                try:  # shielded: a cancelled body must still give the lock back
                    await asyncio.shield(self.release(lease))
                except Exception:
                    if not body_failed:
                        raise

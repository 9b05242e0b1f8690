"""The synchronous facade: the async client run on a private event-loop thread.

No operation is implemented twice: each method forwards to :class:`LockClient`.
The only sync-specific path is taking or releasing a lease inside the caller's own
psycopg transaction, which sends the same named statement and interprets the row
with the same functions as the async client.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar, Unpack, overload

from omninode_bridge.locks.client import LockClient
from omninode_bridge.locks.errors import LockHeldByOtherError, LockValidationError, StaleTokenError
from omninode_bridge.locks.models import Lease, LockInfo, LockSummary, check_correlation, check_name
from omninode_bridge.locks.renew import LeaseKeeper
from omninode_bridge.locks.request import AcquireOptions, check_options
from omninode_bridge.locks.results import acquire_outcome, lease_outcome, parse_lease_id

T = TypeVar("T")
_PLACEHOLDER = re.compile(r"\$(\d+)")


class _LoopThread:
    """A daemon thread running one event loop for the client's lifetime."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="omninode-locks", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


def _psycopg_row(conn: Any, query: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
    """Run one named statement on a psycopg 3 connection (the caller's transaction).

    ``$n`` placeholders become named ``%(pn)s`` ones, since a statement may use one
    parameter more than once.
    """
    from psycopg.rows import dict_row

    params = {f"p{i}": a for i, a in enumerate(args, start=1)}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_PLACEHOLDER.sub(lambda m: f"%(p{m.group(1)})s", query), params)
        row: dict[str, Any] | None = cur.fetchone()
    return row


def _psycopg_one(conn: Any, query: str, args: tuple[Any, ...]) -> dict[str, Any]:
    row = _psycopg_row(conn, query, args)
    assert row is not None, "statement returns exactly one row"
    return row


class SyncLockClient:
    """Blocking API with the same capabilities as :class:`LockClient`.

    Without an explicit owner id every calling thread is its own owner, so threads
    sharing one client are distinct owners to deadlock detection and reentrancy.
    """

    def __init__(self, client: LockClient, runner: _LoopThread) -> None:
        self.client = client
        self._runner = runner
        self._threads = threading.local()
        self._numbers = itertools.count(1)

    @classmethod
    def connect(cls, dsn: str | None = None, **options: Any) -> SyncLockClient:
        """Open a client (see :meth:`LockClient.connect` for options)."""
        runner = _LoopThread()

        async def opener() -> LockClient:
            return await LockClient.connect(dsn, **options)

        try:
            return cls(runner.run(opener()), runner)
        except BaseException:
            runner.stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def close(self) -> None:
        self._run(self.client.close())
        self._runner.stop()

    def __enter__(self) -> SyncLockClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def default_owner_id(self) -> str:
        """The owner id used when a call names none: distinct per calling thread."""
        if self.client._fixed_owner:
            return self.client.owner_id
        owner: str | None = getattr(self._threads, "owner", None)
        if owner is None:
            owner = self._threads.owner = f"{self.client.owner_id}:thread-{next(self._numbers)}"
        return owner

    @overload
    def acquire(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        blocking: Literal[True] = True,
        conn: Any = None,
        **options: Unpack[AcquireOptions],
    ) -> Lease: ...

    @overload
    def acquire(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        blocking: Literal[False],
        conn: Any = None,
        **options: Unpack[AcquireOptions],
    ) -> Lease | None: ...

    def acquire(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        blocking: bool = True,
        conn: Any = None,
        **options: Unpack[AcquireOptions],
    ) -> Lease | None:
        """Acquire; with ``conn`` (a psycopg connection) inside the caller's transaction."""
        owner = owner_id or self.default_owner_id()
        if conn is None:
            if blocking:
                return self._run(self.client.acquire(name, owner, **options))
            return self._run(self.client.acquire(name, owner, blocking=False, **options))
        req = self.client.request(name, owner, **options)
        if req.wait > 0:
            raise LockValidationError("wait must be 0 inside the caller's transaction", field="wait")
        if req.correlation_id is not None:
            _psycopg_one(conn, self.client.queries["set_correlation"], (req.correlation_id,))
        sent = time.monotonic()
        row = _psycopg_one(conn, self.client.queries["acquire_in_txn"], req.txn_args())
        try:
            return acquire_outcome(row, name, sent)
        except LockHeldByOtherError:
            if blocking:
                raise
            return None

    def release(
        self, lease: Lease | str | uuid.UUID, *, conn: Any = None, correlation_id: str | None = None
    ) -> bool:
        if conn is None:
            return self._run(self.client.release(lease, correlation_id=correlation_id))
        correlation_id = check_correlation(correlation_id)
        if correlation_id is not None:  # psycopg: always inside the caller's transaction
            _psycopg_one(conn, self.client.queries["set_correlation"], (correlation_id,))
        row = _psycopg_one(conn, self.client.queries["release_in_txn"], (parse_lease_id(lease),))
        return lease_outcome(row, "release") != "already_released"

    def extend(self, lease: Lease, ttl: float | None = None, *, correlation_id: str | None = None) -> Lease:
        return self._run(self.client.extend(lease, ttl, correlation_id=correlation_id))

    def locked(self, name: str) -> bool:
        return self._run(self.client.locked(name))

    def owned(self, lease: Lease | str | uuid.UUID) -> bool:
        return self._run(self.client.owned(lease))

    def get_lock_info(self, name: str) -> LockInfo:
        return self._run(self.client.get_lock_info(name))

    def list_locks(self, **filters: Any) -> list[LockSummary]:
        return self._run(self.client.list_locks(**filters))

    def counts(self) -> dict[str, int]:
        return self._run(self.client.counts())

    def recent_events(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._run(self.client.recent_events(name, limit))

    def force_release(self, name: str, reason: str, *, correlation_id: str | None = None) -> int:
        return self._run(self.client.force_release(name, reason, correlation_id=correlation_id))

    def cleanup_expired(self) -> int:
        return self._run(self.client.cleanup_expired())

    def fence_guard(self, conn: Any, resource: str, token: int) -> None:
        """Inside the caller's psycopg transaction: reject a stale fencing token."""
        check_name(resource, "resource")
        row = _psycopg_one(conn, self.client.queries["fence_guard"], (resource, token))
        if not next(iter(row.values())):
            raise StaleTokenError(
                f"fencing token {token} for {resource!r} is stale", resource=resource, token=token
            )

    @contextmanager
    def lock(
        self,
        name: str,
        owner_id: str | None = None,
        *,
        auto_renew: bool = False,
        on_lost: Callable[[Lease, str], None] | None = None,
        **options: Unpack[AcquireOptions],
    ) -> Iterator[Lease]:
        """``with locks.lock(name, ttl=30, wait=10) as lease:``; call ``lease.check()``
        before critical writes: with ``auto_renew`` a lost lease raises there."""
        check_options(options, "lock")
        lease = self.acquire(name, owner_id, **options)
        keeper = LeaseKeeper(self.client.extend, lease, on_lost=on_lost)
        if auto_renew:
            self._runner.loop.call_soon_threadsafe(keeper.start)
        failed = False
        try:
            yield lease
        except BaseException:
            failed = True
            raise
        finally:
            self._run(keeper.stop())
            if lease.lost is None:
                try:
                    self.release(lease)
                except Exception:
                    if not failed:
                        raise

"""Queries and admin operations over the lock tables, and the retrying statement runner.

:class:`LockStore` is the part of the client that needs no listener: it runs named
statements through the pool with retries and the circuit breaker, and answers
lock info, listings, counts, events, force-release, cleanup, pruning and the
fencing guard. :class:`~omninode_bridge.locks.client.LockClient` builds on it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import (
    LockNotFoundError,
    LockValidationError,
    PoolExhaustedError,
    StaleTokenError,
)
from omninode_bridge.locks.models import (
    Lease,
    LockInfo,
    LockMode,
    LockSummary,
    Waiter,
    check_correlation,
    check_name,
)
from omninode_bridge.locks.queries import load_queries
from omninode_bridge.locks.request import EngineStats
from omninode_bridge.locks.retry import CircuitBreaker, RetryPolicy, is_transient

OPERATION_TIMEOUT = 10.0


class LockStore:
    """Named statements with retries, plus every read and admin operation."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: LockSettings,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.schema = settings.schema
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self.stats = EngineStats()
        self.queries = load_queries(self.schema)
        # The engine's own statements keep a few idle connections out of asyncpg's pool
        # between calls: taking one back is a list pop, where the pool's acquire and
        # release cost ~60 us of client CPU per acquire+release pair (a task and a
        # shield per release). At least one connection always stays with the pool for
        # its other users (lock info, listings, the event feed), and a closed
        # connection goes back to the pool, which replaces it.
        self._lane: list[Any] = []  # pool connection proxies
        self._lane_max = max(0, settings.pool_max - 1)
        self._lane_open = True

    async def _call(
        self,
        name: str,
        *args: Any,
        deadline: float | None = None,
        fetch: str = "fetchrow",
        correlation_id: str | None = None,
        probe: bool = False,
    ) -> Any:
        """Run the named statement with retries. ``probe``: background clean-up that must
        reach the database as soon as it answers, so it does not wait for an open circuit
        breaker; its success closes the breaker for everyone."""
        query = self.queries[name]

        limit = deadline or time.monotonic() + OPERATION_TIMEOUT

        async def once() -> Any:
            conn = self._lane.pop() if self._lane else await self._connection(limit)
            try:
                if correlation_id is None:  # the hot path: one statement, its own transaction
                    return await getattr(conn, fetch)(query, *args)
                async with conn.transaction():
                    await conn.execute(self.queries["set_correlation"], correlation_id)
                    return await getattr(conn, fetch)(query, *args)
            except Exception as err:
                if is_transient(err):  # never hand a broken connection back to the pool
                    conn.terminate()
                raise
            finally:
                if not self._keep(conn):
                    await self.pool.release(conn)

        started = time.perf_counter()
        try:
            result, retries = await self.retry.run(once, limit, None if probe else self.breaker)
            if probe:
                self.breaker.record_success()
        finally:
            self.stats.last_db_ms = (time.perf_counter() - started) * 1000
        self.stats.retries += retries
        return result

    async def _connection(self, deadline: float) -> Any:
        """A pool connection; waiting for one is bounded by the caller's deadline too."""
        if self._lane:
            return self._lane.pop()
        pool = self.pool
        if pool.get_idle_size() > 0 or pool.get_size() < pool.get_max_size():
            return await pool.acquire()  # no wait for a free one: skip the timer's cost
        try:
            return await pool.acquire(timeout=max(deadline - time.monotonic(), 0.001))
        except TimeoutError as err:  # not a database failure: no retry, no breaker
            raise PoolExhaustedError(
                f"no database connection free within the deadline (pool of {pool.get_max_size()})"
            ) from err

    def _keep(self, conn: Any) -> bool:
        """Keep ``conn`` in the lane if it is open and the lane has room (no await, so the
        hot path does not build a coroutine to find that out)."""
        if self._lane_open and len(self._lane) < self._lane_max and not conn.is_closed():
            self._lane.append(conn)
            return True
        return False

    async def _give_back(self, conn: Any) -> None:
        if not self._keep(conn):
            await self.pool.release(conn)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection for several statements: a kept one if any, else the pool's."""
        conn = await self._connection(time.monotonic() + OPERATION_TIMEOUT)
        try:
            yield conn
        except Exception as err:
            if is_transient(err):  # never keep a broken connection
                conn.terminate()
            raise
        finally:
            await self._give_back(conn)

    def idle_connections(self) -> int:
        """Idle connections: the pool's and those the engine keeps between its calls."""
        return int(self.pool.get_idle_size()) + len(self._lane)

    async def _close_lane(self) -> None:
        """Hand every kept connection back to the pool (before it closes)."""
        self._lane_open = False
        while self._lane:
            await self.pool.release(self._lane.pop())

    # -- queries and admin --------------------------------------------------------

    async def get_lock_info(self, name: str) -> LockInfo:
        """Holders, queue and last token of ``name``; ``LOCK_NOT_FOUND`` if never used."""
        check_name(name)
        async with self.connection() as conn, conn.transaction(readonly=True):
            row = await conn.fetchrow(self.queries["lock_row"], name)
            if row is None:
                raise LockNotFoundError(f"lock {name!r} does not exist", lock_name=name)
            sent = time.monotonic()
            holders = await conn.fetch(self.queries["lock_holders"], name)
            waiters = await conn.fetch(self.queries["lock_waiters"], name)
        return LockInfo(
            name=name,
            permits=row["permits"],
            last_token=row["fence"],
            holders=[Lease.from_record(h, sent) for h in holders],
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
        for field, value in (("prefix", prefix), ("owner_id", owner_id), ("after", after)):
            if value is not None:
                check_name(value, field)
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
        rows = await self._call("recent_events", name, limit, fetch="fetch")
        return [{**r, "payload": _json(r["payload"])} for r in rows]

    async def force_release(self, name: str, reason: str, *, correlation_id: str | None = None) -> int:
        """Admin: free every lease of ``name`` (recorded with ``reason``); returns how many."""
        check_name(name)
        check_name(reason, "reason", longest=1000)
        count: int = await self._call(
            "force_release", name, reason, fetch="fetchval", correlation_id=check_correlation(correlation_id)
        )
        if count < 0:
            raise LockNotFoundError(f"lock {name!r} does not exist", lock_name=name)
        return count

    async def cleanup_expired(self) -> int:
        """Reap expired leases now (the background task does this periodically)."""
        count: int = await self._call("cleanup_expired", fetch="fetchval")
        return count

    async def prune(self, *, keep_unrelayed: bool | None = None) -> tuple[int, int]:
        """Drop events older than ``event_retention`` and lock rows idle for
        ``lock_idle_retention`` (the cleanup task does this every minute); returns
        (events, locks) removed. Tokens stay strictly increasing: they come from a
        sequence, not from the pruned rows. By default (``None``) events not yet
        relayed are kept while Kafka is configured here or any event relay has
        registered in the database (``omninode-lock relay --forget`` unregisters)."""
        if keep_unrelayed is None:
            statement, keep = "prune_keep_unrelayed", self.settings.kafka_bootstrap_servers is not None
        else:
            statement, keep = "prune", keep_unrelayed
        row = await self._call(
            statement, self.settings.event_retention, self.settings.lock_idle_retention, keep
        )
        return int(row["events_pruned"]), int(row["locks_pruned"])

    async def fence_guard(self, conn: asyncpg.Connection, resource: str, token: int) -> None:
        """Inside the caller's transaction: reject a write whose token is older than one
        already seen for ``resource`` (raises :class:`StaleTokenError`)."""
        check_name(resource, "resource")
        if not await conn.fetchval(self.queries["fence_guard"], resource, token):
            raise StaleTokenError(
                f"fencing token {token} for {resource!r} is stale", resource=resource, token=token
            )


def _json(value: Any) -> Any:
    """A ``jsonb`` value as Python (connections without a JSON codec return text)."""
    return json.loads(value) if isinstance(value, str) else value

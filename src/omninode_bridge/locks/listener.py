"""One LISTEN connection per process (per event loop, DSN and schema), shared by all
the waiters of every client there.

The database grants queued waiters itself (in FIFO order, inside the release or
expiry transaction) and announces each grant on the channel of the waiter's own
listening backend (``<schema>_grants_<pid>``). The listener hands each announcement
to the one local waiter whose lease id it names; nobody else wakes up.

A notification says *that* a lease was granted, not how long it has left by the
client's clock, so the listener asks: one query on its own connection confirms every
announced lease with the database's remaining time (batched when grants arrive
together). The waiter then counts that time from before the question was sent, which
errs early however late the notification was processed.

Waiters never poll. The listener runs one safety re-check for all of its waiters at
once (``poll_waiters``) every ``recheck_interval`` seconds, and right after a lease
that blocks one of them is due to expire: it covers lost notifications, crashed
holders and waiters dropped from a queue. If the connection drops, it reconnects,
tells the database its new backend pid (so its waiters are not taken for dead) and
re-checks at once. Grants announced for a waiter that gave up (cancelled, or failed
on a database error) are released at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

import asyncpg

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.models import Lease
from omninode_bridge.locks.pool import raise_connect_error

EXPIRY_MARGIN = 0.002  # re-check this long after a blocking lease's expiry
SWEEP_BACKOFF = 0.05  # first pause after a failed re-check (doubling, capped at recheck_interval)
ABANDONED_FOR = 3600.0  # how long a given-up lease id is remembered


class WaitSlot:
    """What one waiting acquire sleeps on: a confirmed grant, 'gone', or nothing yet.

    ``grant`` is the lease row and ``sent_at`` the monotonic time before the question
    that confirmed it; ``due`` is when a lease blocking this waiter expires.
    """

    __slots__ = ("due", "enqueued_at", "event", "gone", "grant", "name", "queued", "refine", "sent_at")

    def __init__(self, name: str = "") -> None:
        self.name = name  # the lock it waits for
        self.event = asyncio.Event()
        self.enqueued_at = 0.0  # when the (latest) queue request was sent
        self.refine = False  # the grant's deadline is a conservative bound: refine it
        self.queued = False  # set once the database confirmed the queue entry
        self.grant: Any = None  # a lease row (asyncpg Record) with remaining_ms
        self.sent_at = 0.0
        self.gone = False
        self.due: float | None = None


def _pending(slot: WaitSlot) -> bool:
    """Whether ``slot`` waits in the database's queue with nothing settled yet."""
    return slot.queued and slot.grant is None and not slot.gone


class GrantListener:
    """Owns the LISTEN connection, the table of local waiters and the re-check task.

    Get one with :meth:`shared` and give it back with :meth:`release`; the last
    release closes the connection.
    """

    _registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], GrantListener]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, dsn: str, channel: str, queries: Mapping[str, str], recheck_interval: float) -> None:
        self._dsn = dsn
        self._channel = channel
        self._q = queries
        self.recheck_interval = recheck_interval
        self._conn: asyncpg.Connection | None = None
        self._slots: dict[str, WaitSlot] = {}
        self._waiting_for: dict[str, int] = {}  # lock name -> local waiters
        self._abandoned: dict[str, float] = {}
        self._to_confirm: set[str] = set()
        self._to_refine: dict[str, Lease] = {}
        self._lock = asyncio.Lock()  # opening the connection
        self._busy = asyncio.Lock()  # one query at a time on the connection
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False
        self._users = 0
        self.pid: int | None = None
        self.channel: str | None = None
        self.notifications = 0
        self.sweeps = 0
        self._sweep_failures = 0

    @classmethod
    def shared(
        cls, dsn: str, channel: str, queries: Mapping[str, str], recheck_interval: float
    ) -> GrantListener:
        """The listener of this event loop for ``dsn`` and ``channel`` (created on first use)."""
        per_loop = cls._registry.setdefault(asyncio.get_running_loop(), {})
        listener = per_loop.get((dsn, channel))
        if listener is None or listener._closed:
            listener = per_loop[(dsn, channel)] = cls(dsn, channel, queries, recheck_interval)
        listener.recheck_interval = min(listener.recheck_interval, recheck_interval)
        listener._users += 1
        return listener

    async def release(self) -> None:
        """One user fewer; the last one closes the connection."""
        self._users -= 1
        if self._users <= 0:
            per_loop = self._registry.get(asyncio.get_running_loop(), {})
            if per_loop.get((self._dsn, self._channel)) is self:
                del per_loop[(self._dsn, self._channel)]
            await self.close()

    async def ensure_started(self) -> int:
        """Connect and LISTEN if not yet done; return the listening backend's pid."""
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                await self._open()
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
            assert self.pid is not None
            return self.pid

    async def _open(self) -> None:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as err:
            raise_connect_error(err, self._dsn)
        try:
            pid = await self._backend_pid(conn)
            # Grants are addressed to the waiter's listening backend: one channel per
            # listener, so a process never wakes for another process's grants.
            self.channel = f"{self._channel}_{pid}"
            await conn.add_listener(self.channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self.pid = pid

    async def _backend_pid(self, conn: asyncpg.Connection) -> int:
        """The pid the database knows this session by, which waiter rows must name. A
        proxy in between (PgBouncer, a cloud proxy) reports a pid of its own in the
        protocol; then LISTEN works only if the proxy gives this connection a session."""
        backend = int(await conn.fetchval(self._q["backend_pid"]))
        if backend != conn.get_server_pid():
            emit_log_event(
                LogLevel.WARNING,
                "the LISTEN connection goes through a proxy; it needs a session of its own: behind "
                "PgBouncer in transaction mode set OMNINODE_LISTEN_DSN to a direct connection",
                {"backend_pid": backend},
            )
        return backend

    # -- waiters ------------------------------------------------------------------

    def register(self, lease_id: str, name: str) -> WaitSlot:
        slot = WaitSlot(name)
        self._slots[lease_id] = slot
        self._waiting_for[name] = self._waiting_for.get(name, 0) + 1
        return slot

    def unregister(self, lease_id: str) -> None:
        slot = self._slots.pop(lease_id, None)
        if slot is not None:
            left = self._waiting_for.get(slot.name, 0) - 1
            if left > 0:
                self._waiting_for[slot.name] = left
            else:
                self._waiting_for.pop(slot.name, None)

    def waits_for(self, name: str) -> bool:
        """Whether a waiter of this process waits for ``name``: then the lock has a queue
        (or is about to), and the one-statement fast path, which grants only a lock
        nobody queues for, would fail."""
        return name in self._waiting_for

    def abandon(self, lease_id: str) -> None:
        """Remember a lease id whose waiter gave up: if its grant is announced later,
        release it at once instead of leaving it held by nobody."""
        now = time.monotonic()
        self._abandoned[lease_id] = now + ABANDONED_FOR
        if len(self._abandoned) > 10_000:
            self._abandoned = {k: t for k, t in self._abandoned.items() if t > now}

    def forget(self, lease_id: str) -> None:
        self._abandoned.pop(lease_id, None)

    @property
    def waiting(self) -> int:
        return len(self._slots)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.notifications += 1
        try:
            grant = json.loads(str(payload))
            lease_id = str(grant["lease_id"])
        except (ValueError, TypeError, KeyError):
            return
        slot = self._slots.get(lease_id)
        if slot is not None and slot.grant is None and not slot.gone:
            self._announced(slot, lease_id, grant)
        elif lease_id in self._abandoned:
            self._spawn(self._release_abandoned(lease_id))

    def _announced(self, slot: WaitSlot, lease_id: str, grant: dict[str, Any]) -> None:
        """A grant for ``slot``. The grant happened after the waiter's queue request was
        sent, so that send time plus the TTL is a deadline that errs early. When it still
        leaves at least half the TTL, the waiter takes the lease at once (the exact
        remaining time is fetched in the background); otherwise it waits for the answer.
        """
        ttl = grant["ttl_ms"] / 1000
        if slot.enqueued_at + ttl - time.monotonic() >= ttl / 2:
            slot.grant, slot.sent_at, slot.refine = (
                {**grant, "remaining_ms": grant["ttl_ms"]},
                slot.enqueued_at,
                True,
            )
            slot.event.set()
        else:
            self._to_confirm.add(lease_id)
            self._spawn(self._confirm())

    def refine(self, lease: Lease) -> None:
        """Fetch the exact remaining time of a lease taken on a conservative deadline; if
        it is already gone, mark it lost."""
        self._to_refine[lease.lease_id] = lease
        self._spawn(self._refine())

    async def _refine(self) -> None:
        if not self._to_refine:
            return
        leases, self._to_refine = self._to_refine, {}
        sent = time.monotonic()
        try:
            rows = await self._query("granted_leases", [uuid.UUID(i) for i in leases])
        except Exception:  # the conservative deadline stands
            return
        found = {str(r["lease_id"]): r for r in rows}
        for lease_id, lease in leases.items():
            row = found.get(lease_id)
            if row is not None:
                lease.local_deadline = max(lease.local_deadline, sent + row["remaining_ms"] / 1000)
            elif lease.lost is None and lease.local_deadline > sent:
                lease.lost = "expired or released before the grant was delivered"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _query(self, name: str, *args: Any) -> list[asyncpg.Record]:
        async with self._busy:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise ConnectionError("listener connection is down")
            rows: list[asyncpg.Record] = await conn.fetch(self._q[name], *args)
            return rows

    async def _confirm(self) -> None:
        """Ask how long the announced leases have left (one query for all pending)."""
        if not self._to_confirm:
            return
        ids, self._to_confirm = self._to_confirm, set()
        sent = time.monotonic()
        try:
            rows = await self._query("granted_leases", [uuid.UUID(i) for i in ids])
        except Exception as err:  # the next re-check finds these grants
            emit_log_event(LogLevel.WARNING, "grant confirmation failed", {"error": type(err).__name__})
            self._kick.set()
            return
        found = {str(r["lease_id"]): r for r in rows}
        for lease_id in ids:
            slot = self._slots.get(lease_id)
            if slot is None:
                if lease_id in self._abandoned and lease_id in found:
                    await self._release_abandoned(lease_id)
                continue
            self._settle(slot, found.get(lease_id), sent)

    @staticmethod
    def _settle(slot: WaitSlot, grant: Any, sent: float) -> None:
        if grant is None:
            slot.gone = True  # announced, but already expired or force-released
        else:
            slot.grant, slot.sent_at = grant, sent
        slot.event.set()

    async def _release_abandoned(self, lease_id: str) -> None:
        if self._abandoned.pop(lease_id, None) is None:
            return
        try:
            await self._query("release", uuid.UUID(lease_id))
        except Exception as err:  # the lease then runs out at its TTL
            emit_log_event(
                LogLevel.WARNING, "releasing an abandoned grant failed", {"error": type(err).__name__}
            )

    # -- the safety re-check --------------------------------------------------------

    async def _sweep_loop(self) -> None:
        last = time.monotonic()
        while not self._closed:
            if not self._slots:
                self._kick.clear()
                await self._kick.wait()
                last = time.monotonic()
                continue
            interval = self.recheck_interval * random.uniform(0.8, 1.0)
            due = [s.due for s in self._slots.values() if s.due is not None and _pending(s)]
            at = min([last + interval, *due])
            self._kick.clear()
            if at > time.monotonic():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), at - time.monotonic())
                    continue  # a new waiter or a new expiry to watch: recompute
            last = time.monotonic()
            await self.sweep()

    async def sweep(self) -> None:
        """Re-check every local waiter now: promote what can move, settle what did."""
        ids = [i for i, s in self._slots.items() if _pending(s)]
        if not ids:
            await asyncio.sleep(0)
            return
        self.sweeps += 1
        sent = time.monotonic()
        try:
            rows = await self._query("poll_waiters", [uuid.UUID(i) for i in ids])
        except Exception as err:
            # Back off: the query can fail without awaiting anything (no connection), and
            # a re-check left due in the past would make the sweep loop spin and starve
            # the event loop, reconnect included. Warn once per outage, not per try.
            self._sweep_failures += 1
            pause = min(SWEEP_BACKOFF * 2 ** min(self._sweep_failures, 10), self.recheck_interval)
            for i in ids:
                if (slot := self._slots.get(i)) is not None:
                    slot.due = time.monotonic() + pause
            if self._sweep_failures == 1:
                emit_log_event(LogLevel.WARNING, "waiter re-check failed", {"error": type(err).__name__})
            return
        self._sweep_failures = 0
        for row in rows:
            slot = self._slots.get(str(row["lease_id"]))
            if slot is None or slot.grant is not None:
                continue
            status = row["status"]
            if status == "granted":
                self._settle(slot, row, sent)
            elif status == "gone":
                slot.gone = True
                slot.event.set()
            else:  # still queued: next re-check when the blocking lease expires (never sooner)
                retry_ms = row["retry_ms"]
                slot.due = None if retry_ms is None else sent + max(retry_ms / 1000, 0.01) + EXPIRY_MARGIN

    def queued(self, slot: WaitSlot, sent: float, retry_ms: int | None) -> None:
        """``slot`` is in the database's queue; the lease blocking it expires ``retry_ms``
        after ``sent`` (re-check then)."""
        slot.queued, slot.gone = True, False
        slot.due = None if retry_ms is None else sent + retry_ms / 1000 + EXPIRY_MARGIN
        self._kick.set()

    # -- connection loss ------------------------------------------------------------

    def _on_terminated(self, _conn: Any) -> None:
        if self._closed:
            return
        emit_log_event(LogLevel.WARNING, "grant listener connection lost; reconnecting", {})
        self._conn = None
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                await self.ensure_started()
                if self._slots:  # our waiters now listen on the new backend's channel
                    async with self._busy:
                        assert self._conn is not None
                        await self._conn.execute(
                            self._q["refresh_listener"], self.pid, [uuid.UUID(i) for i in self._slots]
                        )
                break
            except Exception as err:  # keep trying; the waiters' deadlines still hold
                emit_log_event(LogLevel.WARNING, "listener reconnect failed", {"error": type(err).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        await self.sweep()  # grants announced while we were away

    async def close(self) -> None:
        self._closed = True
        self._kick.set()
        for task in [self._reconnect_task, self._sweeper, *self._tasks]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
        self._conn = None

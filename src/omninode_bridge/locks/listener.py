"""One LISTEN connection per process (per event loop, DSN and schema), shared by all
the waiters of every client there.

The database grants queued waiters itself (in FIFO order, inside the release or
expiry transaction) and announces each grant, with the lease as JSON, on the channel
of the waiter's own listening backend (``<schema>_grants_<pid>``).
The listener hands each announcement to the one local waiter whose lease id it
names; nobody else wakes up. If the connection drops, it reconnects, tells the
database its new backend pid (so its waiters are not taken for dead) and wakes every
local waiter once so it re-checks, covering notifications lost meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import weakref
from typing import Any

import asyncpg

from omninode_bridge.core.logging import LogLevel, emit_log_event


class WaitSlot:
    """What one waiting acquire sleeps on: a grant payload or a nudge to re-check."""

    __slots__ = ("event", "grant")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.grant: dict[str, Any] | None = None


class GrantListener:
    """Owns the LISTEN connection and the table of local waiters.

    Get one with :meth:`shared` and give it back with :meth:`release`; the last
    release closes the connection.
    """

    _registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], GrantListener]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, dsn: str, channel: str, refresh_sql: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._refresh_sql = refresh_sql
        self._conn: asyncpg.Connection | None = None
        self._slots: dict[str, WaitSlot] = {}
        self._lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False
        self._users = 0
        self.pid: int | None = None
        self.channel: str | None = None
        self.notifications = 0

    @classmethod
    def shared(cls, dsn: str, channel: str, refresh_sql: str) -> GrantListener:
        """The listener of this event loop for ``dsn`` and ``channel`` (created on first use)."""
        per_loop = cls._registry.setdefault(asyncio.get_running_loop(), {})
        listener = per_loop.get((dsn, channel))
        if listener is None or listener._closed:
            listener = per_loop[(dsn, channel)] = cls(dsn, channel, refresh_sql)
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
            assert self.pid is not None
            return self.pid

    async def _open(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        pid = conn.get_server_pid()
        # Grants are addressed to the waiter's listening backend: one channel per
        # listener, so a process never wakes for another process's grants.
        self.channel = f"{self._channel}_{pid}"
        await conn.add_listener(self.channel, self._on_notify)
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self.pid = pid

    def register(self, lease_id: str) -> WaitSlot:
        slot = WaitSlot()
        self._slots[lease_id] = slot
        return slot

    def unregister(self, lease_id: str) -> None:
        self._slots.pop(lease_id, None)

    @property
    def waiting(self) -> int:
        return len(self._slots)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.notifications += 1
        try:
            grant = json.loads(str(payload))
        except ValueError:
            return
        slot = self._slots.get(str(grant.get("lease_id")))
        if slot is not None:
            slot.grant = grant
            slot.event.set()

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
                assert self._conn is not None
                if self._slots:  # our waiters now listen on the new backend's channel
                    await self._conn.execute(self._refresh_sql, self.pid, [uuid.UUID(i) for i in self._slots])
                break
            except Exception as err:  # keep trying; waiters re-check on their own meanwhile
                emit_log_event(LogLevel.WARNING, "listener reconnect failed", {"error": type(err).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        for slot in self._slots.values():
            slot.event.set()

    async def close(self) -> None:
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnect_task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
        self._conn = None

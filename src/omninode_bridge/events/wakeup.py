"""Wake-ups from the outbox trigger: one LISTEN connection, any number of sleepers.

Migration 0003's trigger NOTIFYs ``<schema>_outbox`` when a transaction that inserted
events commits *and* a sleeper armed it (notifying commits are serialised by
PostgreSQL, so under load nobody is asleep and nothing notifies). A sleeper calls
:meth:`OutboxWakeup.arm`, takes a :meth:`OutboxWakeup.ticket`, reads the table once
more, and only then waits on the ticket, so a commit after its last read wakes it. A
notification carries no data; sleepers always re-read the table, so a lost
notification costs at most one sweep interval, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.events.queries import load_event_queries, outbox_channel

RECONNECT_DELAY = 1.0


ARM_RETRY = 0.2  # seconds between re-reads while the wake-up cannot be armed


class OutboxWakeup:
    """Owns the LISTEN connection; reconnects in the background when it drops."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn = dsn
        self.channel = outbox_channel(schema)
        self._arm_sql = load_event_queries(schema)["arm_wakeup"]
        self._arming = asyncio.Lock()
        self._conn: asyncpg.Connection | None = None
        self._event = asyncio.Event()
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False
        self.notifications = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Connect and LISTEN; raises if the database cannot be reached now."""
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(self.channel, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_lost)
        self._conn = conn

    async def arm(self) -> None:
        """Ask the next commit with events to notify (call before the last read before
        sleeping). Without a connection this does nothing: the sweep covers."""
        async with self._arming:
            conn = self._conn
            if conn is None or conn.is_closed():
                self._wake_soon()
                return
            try:
                await conn.execute(self._arm_sql)
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ) as err:
                # also a connection terminated in the middle of this statement
                emit_log_event(LogLevel.WARNING, "outbox wake-up not armed", {"error": type(err).__name__})
                self._wake_soon()

    def _wake_soon(self) -> None:
        """Not armed, so no commit will notify: wake the sleeper shortly to read again
        (and arm again, once the connection is back) instead of sleeping to the sweep."""
        asyncio.get_running_loop().call_later(ARM_RETRY, self._wake)

    def ticket(self) -> asyncio.Event:
        """The event the next notification sets; take it before reading the table."""
        return self._event

    async def wait(self, ticket: asyncio.Event, seconds: float) -> bool:
        """Sleep until ``ticket`` is set or ``seconds`` pass; True when woken."""
        if seconds <= 0:
            return ticket.is_set()
        try:
            await asyncio.wait_for(ticket.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, _payload: object) -> None:
        self.notifications += 1
        self._wake()

    def _on_lost(self, _conn: Any) -> None:
        self._conn = None
        self._wake()  # sleepers re-read the table: anything committed meanwhile is found
        if not self._closed and self._reconnect is None:
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        try:
            while not self._closed and not self.connected:
                await asyncio.sleep(RECONNECT_DELAY)
                try:
                    await self.start()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                    emit_log_event(LogLevel.WARNING, "outbox listener reconnect failed",
                                   {"error": type(err).__name__})  # fmt: skip
                else:
                    self._wake()
        finally:
            self._reconnect = None

    async def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close()

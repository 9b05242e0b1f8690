"""The outbox relay: claim and mark, publish, commit - at least once, in commit order per lock.

One round (:meth:`Relay.relay_once`) runs in one transaction. One statement locks the
oldest unrelayed events no other relay holds (``FOR UPDATE SKIP LOCKED``), sets
``relayed_at`` on those whose lock has no older event held by another relay and returns
them as ready Kafka messages (the JSON is built in SQL); the relay publishes them, waits
for the broker's acknowledgements, and only then commits. The engine commits some changes
lazily (a release that handed nothing on), and an event is visible before its commit is
on disk: a crash could undo an event the broker already has (an invented event). So the
claim also says whether the write-ahead log is already flushed past its snapshot (under
load every durable grant flushes it); if not, a durable write on another connection
flushes it before the publish. A failed publish rolls the
marks back; a relay that dies mid-round never commits: its rows unlock and the next
round (its own after a restart, or another relay's) sends them again with the same
``event_id`` - at least once. Live relays never claim the same row, so in normal
operation nothing is sent twice.

While busy, rounds start at most once per ``linger`` seconds, so a round carries what
committed meanwhile (fewer, larger rounds as the load grows; an event waits at most
about that long). When a round finds nothing the relay arms the outbox trigger, looks
once more, gives its connection back to the pool and sleeps until the NOTIFY of the next
commit with events or, as a safety net, ``sweep`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.events.envelope import Row, with_derived_id
from omninode_bridge.events.kafka import BrokerError
from omninode_bridge.events.queries import load_event_queries
from omninode_bridge.events.wakeup import OutboxWakeup

BATCH_SIZE = 1000
LINGER = 0.015  # while busy, at most one round per this many seconds (fewer, larger rounds)
SWEEP_INTERVAL = 5.0
HEARTBEAT_INTERVAL = 10.0
MAX_BACKOFF = 5.0
# what a failing database or connection raises between or inside rounds: ridden out with
# backoff (InternalClientError: asyncpg found the connection's protocol state broken)
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
BACKLOG_COUNT_CAP = 1_000_000


class Sink(Protocol):
    """Where relayed messages go (:class:`~omninode_bridge.events.kafka.KafkaSink`):
    rows with ``event_type``, ``key`` (the lock name as bytes) and ``value`` (the
    envelope as JSON bytes), in outbox order."""

    def describe(self) -> str: ...

    async def publish(self, messages: Sequence[Row]) -> None: ...

    async def reset(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class OutboxStats:
    """The outbox as the database sees it: events not yet relayed and the oldest one's age."""

    backlog: int
    lag_seconds: float
    last_id: int


async def outbox_stats(pool: asyncpg.Pool, schema: str, cap: int = BACKLOG_COUNT_CAP) -> OutboxStats:
    """Backlog and lag, for gauges and health. The backlog is counted up to ``cap`` (it
    walks the unrelayed rows); with no relay configured every event stays unrelayed, so
    a service without Kafka should not scrape it (or pass a small ``cap``)."""
    row = await pool.fetchrow(load_event_queries(schema)["backlog"], cap)
    assert row is not None
    return OutboxStats(int(row["backlog"]), float(row["lag_seconds"]), int(row["last_id"] or 0))


@dataclass(frozen=True)
class RelayStatus:
    """For /health and /metrics: ``degraded`` while the broker or database fails
    (locks keep working; the backlog grows and drains later)."""

    state: Literal["starting", "ok", "degraded", "stopped"]
    broker_reachable: bool | None
    relayed_total: int
    backlog: int | None = None
    lag_seconds: float | None = None
    last_error: str | None = None
    sink: str = ""


class Relay:
    """Moves outbox rows to a :class:`Sink`. Run any number at once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        sink: Sink,
        wakeup: OutboxWakeup | None = None,
        *,
        batch_size: int = BATCH_SIZE,
        sweep: float = SWEEP_INTERVAL,
        relay_id: str | None = None,
        linger: float = LINGER,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.sink = sink
        self.wakeup = wakeup
        self.batch_size = batch_size
        self.sweep = sweep
        self.linger = linger
        self.relay_id = relay_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._q = load_event_queries(schema)
        self._stream_id: uuid.UUID | None = None
        self._state: Literal["starting", "ok", "degraded", "stopped"] = "starting"
        self._broker_ok: bool | None = None
        self._last_error: str | None = None
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None  # held while busy
        self.relayed_total = 0
        self.rounds = 0

    # -- status ---------------------------------------------------------------------

    def status(self) -> RelayStatus:
        """This relay's own view, without asking the database."""
        return RelayStatus(
            self._state, self._broker_ok, self.relayed_total, last_error=self._last_error,
            sink=self.sink.describe(),
        )  # fmt: skip

    async def full_status(self) -> RelayStatus:
        """:meth:`status` plus the backlog and lag from the database (None if it fails)."""
        mine = self.status()
        try:
            stats = await outbox_stats(self.pool, self.schema)
        except DB_ERRORS:
            return mine
        return RelayStatus(
            mine.state, mine.broker_reachable, mine.relayed_total, stats.backlog, stats.lag_seconds,
            mine.last_error, mine.sink,
        )  # fmt: skip

    # -- one round ------------------------------------------------------------------

    async def relay_once(self, *, keep_connection: bool = False) -> tuple[int, int]:
        """Claim and publish one batch; returns (claimed, published). Raises
        :class:`BrokerError` (nothing marked) when the broker did not acknowledge.

        Three round trips: BEGIN, one statement that claims, marks and builds the
        messages (``claim_batch``), COMMIT after the broker's acknowledgement. With
        ``keep_connection`` (:meth:`run` while busy) the connection stays with the relay
        for the next round; :meth:`release_connection` gives it back."""
        if self._stream_id is None:
            self._stream_id = uuid.UUID(str(await self.pool.fetchval(self._q["stream_id"])))
        conn = self._conn
        if conn is None:
            conn = self._conn = await self.pool.acquire()
        try:
            async with conn.transaction():
                rows = await conn.fetch(self._q["claim_batch"], self.batch_size)
                claimed = int(rows[0]["claimed"])
                ready: Sequence[Row] = []
                if rows[0]["id"] is not None:
                    ready = rows
                    if any(r["derive_id"] for r in rows):
                        ready = [_Legacy.of(r, self._stream_id) if r["derive_id"] else r for r in rows]
                    if not any(r["durable"] for r in rows):  # else already on disk
                        await self.durable_barrier()
                    await self.sink.publish(ready)
        except BrokerError:
            await self.release_connection()  # rolled back cleanly: the connection is fine
            raise
        except BaseException:
            await self.release_connection(broken=True)  # its protocol state is unknown
            raise
        if not keep_connection:
            await self.release_connection()
        self.relayed_total += len(ready)
        self.rounds += 1
        return claimed, len(ready)

    async def durable_barrier(self) -> None:
        """Make every event this round claimed durable before the broker sees it: one
        durable write (always a new row version, so a commit record is flushed) on another
        pool connection, begun after the claim, so the flush covers the commit of every
        event the claim saw. With a synchronous standby it waits for the standby too.
        Skipped when the claim found the log already flushed past its snapshot (under load
        every durable grant flushes it), so it costs only rounds of lazy commits."""
        await self.pool.execute(
            self._q["relay_barrier"], self.relay_id, self.sink.describe(), self.relayed_total
        )

    async def release_connection(self, *, broken: bool = False) -> None:
        """Give the held connection back to the pool (when idle, failing or stopping);
        ``broken``: close it instead, never to be used again (a failure mid-round may
        leave asyncpg's protocol state behind: 'another operation is in progress')."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if broken:
            with contextlib.suppress(Exception):
                conn.terminate()
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    # -- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        await self._register()
        backoff = 0.0
        armed = False
        last_beat = time.monotonic()
        try:
            while not stop.is_set():
                ticket = self.wakeup.ticket() if self.wakeup is not None else None
                started = time.monotonic()
                try:
                    claimed, published = await self.relay_once(keep_connection=True)
                except BrokerError as err:
                    backoff = await self._failed(err, backoff, broker=True)
                    await self.sink.reset()
                    await _sleep_or_stop(stop, backoff)
                    continue
                except DB_ERRORS as err:
                    backoff = await self._failed(err, backoff, broker=None)
                    await _sleep_or_stop(stop, backoff)
                    continue
                backoff = 0.0
                self._state, self._broker_ok, self._last_error = (
                    "ok",
                    True if published else self._broker_ok,
                    None,
                )
                # the steps between rounds touch the database too (heartbeat, wake-up,
                # giving the connection back): a failure there is an outage like any
                # other, ridden out with backoff, never the end of the relay
                try:
                    if time.monotonic() - last_beat >= HEARTBEAT_INTERVAL:
                        last_beat = time.monotonic()
                        await self._heartbeat()
                    if claimed >= self.batch_size and published:
                        continue  # more waiting: go on at once
                    if claimed > published:
                        await _sleep_or_stop(stop, 0.005)  # another relay holds older events of a lock
                        continue
                    if published:
                        # busy: at most one round per linger period, so rounds grow with the
                        # load instead of multiplying; an event waits at most that long
                        armed = False
                        await _sleep_or_stop(stop, started + self.linger - time.monotonic())
                        continue  # more may have committed meanwhile: look again before sleeping
                    if self.wakeup is not None and not armed:
                        await self.wakeup.arm()  # then one more look before sleeping
                        armed = True
                        continue
                    await self.release_connection()
                    await self._idle(ticket, stop)
                    armed = False
                except DB_ERRORS as err:
                    backoff = await self._failed(err, backoff, broker=None)
                    await _sleep_or_stop(stop, backoff)
                    armed = False
        finally:
            await self.release_connection()
            self._state = "stopped"
            with contextlib.suppress(Exception):
                await self._heartbeat()

    async def _idle(self, ticket: asyncio.Event | None, stop: asyncio.Event) -> None:
        """Sleep until a commit's NOTIFY, ``stop``, or the sweep interval."""
        waits = [asyncio.ensure_future(stop.wait())]
        if ticket is not None:
            waits.append(asyncio.ensure_future(ticket.wait()))
        try:
            await asyncio.wait(waits, timeout=self.sweep, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _failed(self, err: Exception, backoff: float, *, broker: bool | None) -> float:
        if broker:
            self._broker_ok = False
        if self._state != "degraded":
            emit_log_event(LogLevel.WARNING, "event relay degraded", {"error": type(err).__name__,
                           "relay_id": self.relay_id})  # fmt: skip
        self._state = "degraded"
        self._last_error = f"{type(err).__name__}: {err}"[:500]
        return min(MAX_BACKOFF, backoff * 2 if backoff else 0.1)

    async def _register(self) -> None:
        await self.pool.execute(self._q["register_relay"], self.relay_id, self.sink.describe())

    async def _heartbeat(self) -> None:
        """Record that this relay is alive (best effort: a failure only delays it)."""
        with contextlib.suppress(*DB_ERRORS):
            await self.pool.execute(self._q["relay_seen"], self.relay_id, self.relayed_total)


class _Legacy(NamedTuple):
    """A row older than migration 0003 (no ``event_id`` column value) as a message."""

    event_type: str
    key: bytes
    value: bytes

    @classmethod
    def of(cls, row: asyncpg.Record, stream_id: uuid.UUID) -> _Legacy:
        return cls(row["event_type"], row["key"], with_derived_id(row["value"], row["id"], stream_id))

    def __getitem__(self, name: Any) -> Any:
        return getattr(self, name) if isinstance(name, str) else tuple.__getitem__(self, name)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

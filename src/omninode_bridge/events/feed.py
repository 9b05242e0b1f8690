"""Follow the outbox from PostgreSQL: long poll and an endless stream, no broker needed.

``await feed.follow(after=ID, wait=S)`` returns the events after outbox id ``ID`` in
id order, waiting up to ``S`` s (woken by the commit's NOTIFY, not by polling) when
there are none yet. Resuming with ``after=<last id returned>`` never skips an event:

Outbox ids are drawn before commit, so a transaction can commit id 12 while id 11 is
still in flight. A page is therefore cut at the first gap. When the page starts with a
gap, the feed takes a barrier: a fresh xid ``X`` (newer than every xid assigned so
far), then waits until no transaction of this database with an xid older than ``X``
still runs, and reads the range up to the newest id it had seen again. The engine
draws an outbox id only in a transaction that already has an xid (its first statement
writes the lock row), and the missing id was drawn before the newest one seen
committed, so whoever holds it has committed or rolled back by then. Gaps that stay
(rollbacks, pruned history) are final.

Only what a crash cannot take back is served: a release that hands nothing on commits
lazily, visible before its commit is on disk. A page read before the write-ahead log was
flushed past it is answered after one durable write (migration 0008).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from omninode_bridge.events.envelope import Envelope, envelope_from_row
from omninode_bridge.events.queries import load_event_queries
from omninode_bridge.events.wakeup import OutboxWakeup
from omninode_bridge.locks.errors import LockValidationError

SWEEP_INTERVAL = 5.0  # re-read even without a notification (lost notification, reconnect)
GAP_WAIT = 5.0  # longest wait for in-flight transactions before reporting what is final


class EventFeed:
    """Read and follow the outbox of one schema; share one per process.

    ``pool`` runs the reads; ``wakeup`` (optional but recommended) turns commits into
    wake-ups, else a follower re-reads every ``sweep`` s.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        wakeup: OutboxWakeup | None = None,
        *,
        sweep: float = SWEEP_INTERVAL,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.wakeup = wakeup
        self.sweep = sweep
        self._q = load_event_queries(schema)
        self._stream_id: uuid.UUID | None = None

    async def stream_id(self) -> uuid.UUID:
        """This outbox's identity (derives event ids of rows older than migration 0003)."""
        if self._stream_id is None:
            self._stream_id = uuid.UUID(str(await self.pool.fetchval(self._q["stream_id"])))
        return self._stream_id

    async def last_id(self) -> int:
        """The newest outbox id (``after=last_id()`` follows only what comes next)."""
        return int(await self.pool.fetchval(self._q["last_id"]))

    async def read(
        self, after: int, limit: int = 100, lock_name: str | None = None, gap_wait: float = GAP_WAIT
    ) -> list[Envelope]:
        """The final events after ``after`` (see the module doc), without waiting for new
        ones. When the page starts with a gap, waits up to ``gap_wait`` s for the
        transactions that may fill it, and returns nothing if they still run."""
        check_page(after, limit)
        found = await self.pool.fetch(self._q["feed_page"], after, limit, lock_name)
        if not found:
            return []
        final = _contiguous(found, after) if lock_name is None else []
        if not final:  # the page starts with a gap some running transaction may fill
            if not await self._barrier(gap_wait):
                return []
            final = await self.pool.fetch(self._q["feed_range"], after, found[-1]["id"], limit, lock_name)
        if final and not all(r["flushed"] for r in final):  # a lazy commit not yet on disk
            await self.pool.execute(self._q["feed_barrier"])
        stream = await self.stream_id()
        return [envelope_from_row(r, stream) for r in final]

    async def follow(
        self, after: int, wait: float = 0.0, limit: int = 100, lock_name: str | None = None
    ) -> list[Envelope]:
        """Long poll: the events after ``after``; if none, wait up to ``wait`` s for some."""
        if not 0 <= wait <= 3600:
            raise LockValidationError("wait must be within 0..3600 seconds", field="wait")
        deadline = time.monotonic() + wait
        armed = False
        while True:
            ticket = self.wakeup.ticket() if self.wakeup is not None else None
            page = await self.read(after, limit, lock_name, max(deadline - time.monotonic(), 0.05))
            remaining = deadline - time.monotonic()
            if page or remaining <= 0:
                return page
            if self.wakeup is not None and not armed:  # arm, then read once more before sleeping
                await self.wakeup.arm()
                armed = True
                continue
            await self._sleep(ticket, min(remaining, self.sweep))
            armed = False

    async def stream(
        self, after: int, limit: int = 100, lock_name: str | None = None, heartbeat: float | None = None
    ) -> AsyncIterator[Envelope | None]:
        """Every event after ``after``, forever (an SSE endpoint's loop). Yields ``None``
        after ``heartbeat`` s without events so the caller can send a keep-alive."""
        while True:
            page = await self.follow(after, heartbeat or self.sweep, limit, lock_name)
            if not page and heartbeat is not None:
                yield None
            for envelope in page:
                after = envelope["id"]
                yield envelope

    async def _sleep(self, ticket: asyncio.Event | None, seconds: float) -> None:
        if ticket is None or self.wakeup is None:
            await asyncio.sleep(seconds)
        else:
            await self.wakeup.wait(ticket, seconds)

    async def _barrier(self, seconds: float) -> bool:
        """Wait (with backoff) until every transaction of this database that had an xid
        when this was called has ended; False if some still run after ``seconds``."""
        deadline = time.monotonic() + seconds
        xid = await self.pool.fetchval(self._q["barrier_xid"])
        delay = 0.0005
        while await self.pool.fetchval(self._q["running_before"], xid):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True


def check_page(after: int, limit: int) -> None:
    if after < 0:
        raise LockValidationError("after must be >= 0", field="after")
    if not 1 <= limit <= 1000:
        raise LockValidationError("limit must be within 1..1000", field="limit")


def _contiguous(rows: list[Any], after: int) -> list[Any]:
    """The leading rows whose ids follow ``after`` with no hole."""
    out = []
    expected = after + 1
    for row in rows:
        if row["id"] != expected:
            break
        out.append(row)
        expected += 1
    return out

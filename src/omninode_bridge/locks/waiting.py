"""Waiting in a lock's FIFO queue: enqueue once, sleep until the grant is announced.

The waiter itself never polls: the database grants queue heads inside the releasing
(or expiring) transaction and the process's one listener delivers the grant, or its
periodic re-check finds it (see :mod:`~omninode_bridge.locks.listener`). What this
module adds is the waiter's side: the deadline, re-enqueueing when the database
dropped the entry, and leaving the queue cleanly however the wait ends.

A wait that ends in cancellation or a database error must not leave a queue entry (the
next release would grant the lock to nobody until its TTL runs out): the entry is
removed, a grant that raced in is released, and if the database cannot be reached the
exit is retried in the background while the listener releases any grant announced
for the abandoned request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.locks.errors import (
    DeadlockDetectedError,
    LockDatabaseError,
    LockHeldByOtherError,
    LockTimeoutError,
    LockValidationError,
    PoolExhaustedError,
)
from omninode_bridge.locks.listener import WaitSlot
from omninode_bridge.locks.models import Lease
from omninode_bridge.locks.request import AcquireRequest
from omninode_bridge.locks.results import acquire_error

if TYPE_CHECKING:
    from omninode_bridge.locks.client import LockClient

# Outcomes the database decided: the request is not (or no longer) in the queue.
DECIDED = (LockTimeoutError, DeadlockDetectedError, LockValidationError, LockHeldByOtherError)
EXIT_TIMEOUT = 2.0
QUEUE_GRACE = 2.0  # the database keeps a waiter this long past its wait (see acquire())
GIVE_UP_GRACE = 1.0  # how far past its wait a call may end when the database does not answer


async def wait_in_queue(client: LockClient, req: AcquireRequest) -> Lease:
    """Acquire ``req`` (``wait > 0``): at once if free, else FIFO until granted or
    ``req.wait`` seconds have passed (``LOCK_TIMEOUT``)."""
    deadline = time.monotonic() + req.wait
    if not client.listener.waits_for(req.name):  # else the fast path fails: skip its round trip
        try:
            lease = await client.fast_acquire(req, deadline)
        except PoolExhaustedError:  # the wait ran out before a connection was free: nothing sent
            raise _timeout(req) from None
        if lease is not None:
            return lease
    lease_id = str(req.lease_id)
    slot = client.listener.register(lease_id, req.name)
    client.stats.waiting += 1
    try:
        return await _wait(client, req, slot, deadline)
    except DECIDED:
        raise
    except _LeavingLater as gone:  # the wait ran out while the database did not answer
        raise gone.error from gone.error.__cause__
    except BaseException:  # cancelled or failed mid-wait: leave the queue explicitly
        await client.settle(_leave(client, req, deadline))
        raise
    finally:
        client.listener.unregister(lease_id)
        client.stats.waiting -= 1


async def _wait(client: LockClient, req: AcquireRequest, slot: WaitSlot, deadline: float) -> Lease:
    while True:  # one pass per queue entry: again only if the database dropped it
        pid = await client.listener.ensure_started()  # the current listener, after any reconnect
        sent = slot.enqueued_at = time.monotonic()
        try:
            row = await client.settled(
                client._call("acquire", *req.args(pid), deadline=deadline, correlation_id=req.correlation_id),
                undo=_nothing,
            )
        except PoolExhaustedError:  # the wait ran out before a connection was free: nothing sent
            raise _timeout(req) from None
        if row["status"] == "granted":
            return Lease.from_record(row, sent)
        if row["status"] != "queued":
            raise acquire_error(row, req.name)
        client.listener.queued(slot, sent, row["retry_ms"])
        while not (slot.gone or slot.grant is not None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return await _give_up(client, req)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.event.wait(), remaining)
            slot.event.clear()
        if slot.grant is not None:
            lease = Lease.from_record(slot.grant, slot.sent_at)
            if slot.refine:
                client.listener.refine(lease)
            return lease
        slot.gone = slot.queued = False  # dropped (e.g. our listener was gone): queue again


async def _nothing(_unknown: bool) -> None:
    """No undo: the caller leaves the queue itself (see :func:`_leave`)."""


class _LeavingLater(Exception):
    """:func:`_give_up` could not reach the database; the queue is left in the background."""

    def __init__(self, error: LockDatabaseError) -> None:
        super().__init__(str(error))
        self.error = error


async def _give_up(client: LockClient, req: AcquireRequest) -> Lease:
    """The wait ran out: leave the queue, keeping a grant that raced the deadline. If the
    database does not answer within GIVE_UP_GRACE (an outage, a partition), DATABASE_ERROR
    comes now - the caller's deadline bounds the retries - not after the engine's whole
    per-statement bound, and the queue is left in the background (a grant that raced in
    is then released)."""
    sent = time.monotonic()
    try:
        # retries end at the deadline; a statement hanging on a dead link ends here too
        row = await asyncio.wait_for(
            client._call("cancel_wait", req.lease_id, deadline=sent + GIVE_UP_GRACE), GIVE_UP_GRACE
        )
    except (LockDatabaseError, TimeoutError) as err:
        client.listener.abandon(str(req.lease_id))
        client.spawn(_leave_later(client, req, sent + QUEUE_GRACE + req.ttl))
        if isinstance(err, LockDatabaseError):
            raise _LeavingLater(err) from err
        unanswered = LockDatabaseError(
            f"the database did not answer within {GIVE_UP_GRACE:g}s as the wait for {req.name!r} ended",
            lock_name=req.name,
        )
        raise _LeavingLater(unanswered) from None
    if row["status"] == "granted":  # the grant raced the deadline: keep it
        return Lease.from_record(row, sent)
    raise _timeout(req)


def _timeout(req: AcquireRequest) -> LockTimeoutError:
    return LockTimeoutError(
        f"timed out after {req.wait:g}s waiting for {req.name!r}", lock_name=req.name, wait=req.wait
    )


async def _leave(client: LockClient, req: AcquireRequest, deadline: float) -> None:
    """Remove the queue entry and release a grant that raced in; if the database is not
    reachable now, keep trying in the background until the entry would have lapsed."""
    lease_id = str(req.lease_id)
    client.listener.abandon(lease_id)
    if await _exit_queue(client, req):
        return
    lapse = deadline + QUEUE_GRACE + req.ttl
    client.spawn(_leave_later(client, req, lapse))


async def _exit_queue(client: LockClient, req: AcquireRequest) -> bool:
    try:
        row = await client._call("cancel_wait", req.lease_id, deadline=time.monotonic() + EXIT_TIMEOUT)
        if row["status"] == "granted":
            await client._call("release", req.lease_id, deadline=time.monotonic() + EXIT_TIMEOUT)
    except Exception:
        return False
    client.listener.forget(str(req.lease_id))
    return True


async def _leave_later(client: LockClient, req: AcquireRequest, lapse: float) -> None:
    pause = 0.2
    while time.monotonic() < lapse:
        await asyncio.sleep(pause)
        if await _exit_queue(client, req):
            return
        pause = min(pause * 2, 5.0)
    emit_log_event(
        LogLevel.WARNING, "could not leave a lock queue; the entry lapsed", {"lock_name": req.name}
    )

"""Turn a ``lock_result`` row into a lease or the matching exception.

Pure functions shared by the async client and the sync facade's in-transaction path,
so the state machine's outcomes are interpreted in exactly one place.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from omninode_bridge.locks.errors import (
    DeadlockDetectedError,
    LockError,
    LockExpiredError,
    LockHeldByOtherError,
    LockNotHeldError,
    LockValidationError,
)
from omninode_bridge.locks.models import Lease

Row = Mapping[str, Any]


def parse_lease_id(lease: Lease | str | uuid.UUID) -> uuid.UUID:
    """The lease id of ``lease`` as a UUID; a malformed id is a validation error."""
    if isinstance(lease, Lease):
        lease = lease.lease_id
    if isinstance(lease, uuid.UUID):
        return lease
    try:
        return uuid.UUID(str(lease))
    except ValueError as err:
        raise LockValidationError("lease_id must be a UUID", field="lease_id") from err


def acquire_outcome(row: Row, name: str, sent_at: float) -> Lease:
    """The lease of a ``granted`` row, else the error its status stands for."""
    status = row["status"]
    if status == "granted":
        return Lease.from_record(row, sent_at)
    raise acquire_error(row, name)


def acquire_error(row: Row, name: str) -> LockError:
    status, detail = row["status"], row["detail"]
    if status == "busy":
        holders = detail.split(",") if detail else []
        who = ", ".join(holders) if holders else "another owner (its lease is expiring)"
        retry = row["retry_ms"]
        when = "" if retry is None else f"; the earliest lease ends in {retry / 1000:.3g}s"
        return LockHeldByOtherError(
            f"lock {name!r} is held by {who}{when}",
            lock_name=name,
            holders=holders,
            retry_after_ms=retry,
        )
    if status == "deadlock":
        return DeadlockDetectedError(
            f"waiting for {name!r} would deadlock: {detail}",
            lock_name=name,
            cycle=detail.split(" -> "),
        )
    if status == "invalid":
        return LockValidationError(detail or "invalid request", lock_name=name)
    return LockError(f"unexpected acquire status {status!r} for {name!r}", lock_name=name)


def lease_outcome(row: Row, action: str) -> str:
    """For release/extend rows: the success status (``released``, ``already_released``
    or ``extended``), or raise expired / not held."""
    status = row["status"]
    if status == "extended" or (action == "release" and status in ("released", "already_released")):
        return str(status)
    if status == "expired":
        raise LockExpiredError(f"cannot {action}: the lease has expired", lock_name=row["lock_name"])
    detail = row["detail"] or ("the lease was released" if status == "already_released" else "no such lease")
    raise LockNotHeldError(f"cannot {action}: {detail}", lock_name=row["lock_name"])

"""Value types of the engine: modes, leases, lock info, and request validation."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, cast

from omninode_bridge.locks.errors import LockValidationError

MAX_NAME = 255
MAX_METADATA_BYTES = 4096
TTL_RANGE = (1.0, 3600.0)
MAX_WAIT = 3600.0


class LockMode(str, Enum):
    """Exclusive (writer / semaphore slot) or shared (reader)."""

    EXCLUSIVE = "exclusive"
    SHARED = "shared"


_MODES = {mode.value: mode for mode in LockMode}  # a dict lookup is ~10x cheaper than LockMode(x)


@dataclass(slots=True)
class Lease:
    """A granted lock. ``token`` is the fencing token; ``lease_id`` is the secret handle.

    ``acquired_at``/``expires_at`` are database-clock times for display; the client
    never compares them with its own clock. ``local_deadline`` is a monotonic-clock
    estimate measured from when the request was sent, so it errs on the early side.
    """

    lock_name: str
    owner_id: str
    mode: LockMode
    lease_id: str
    token: int
    acquired_at: datetime
    expires_at: datetime
    ttl: float
    metadata: dict[str, Any] = field(default_factory=dict)
    hold_count: int = 1
    local_deadline: float = 0.0
    lost: str | None = None

    @classmethod
    def from_record(cls, rec: Any, sent_at: float | None = None) -> Lease:
        """Build from a lease row (``lock_result`` or ``leases``) that carries
        ``remaining_ms``, the time the database says the lease has left.

        ``sent_at`` is the monotonic time taken *before* the request was sent: the local
        deadline counts the database's remaining time from then, so it errs early.
        Without ``sent_at`` (display only) it counts from now.
        """
        metadata = rec["metadata"]
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        remaining = rec.get("remaining_ms")  # absent from some rows: as if None
        start = time.monotonic() if sent_at is None else sent_at
        ttl = rec["ttl_ms"] / 1000.0
        mode = rec["mode"]
        return cls(
            lock_name=rec["lock_name"],
            owner_id=rec["owner_id"],
            mode=_MODES.get(mode) or LockMode(mode),
            lease_id=str(rec["lease_id"]),
            token=int(rec["token"]),
            acquired_at=_as_datetime(rec["acquired_at"]),
            expires_at=_as_datetime(rec["expires_at"]),
            ttl=ttl,
            metadata=dict(metadata or {}),
            hold_count=int(rec["hold_count"]),
            local_deadline=start + (ttl if remaining is None else remaining / 1000.0),
        )

    def remaining(self) -> float:
        """Seconds left by the local monotonic estimate (never by wall clocks)."""
        return self.local_deadline - time.monotonic()

    def check(self) -> None:
        """Raise :class:`LockExpiredError` if the lease was lost or has run out."""
        from omninode_bridge.locks.errors import LockExpiredError

        if self.lost is not None:
            raise LockExpiredError(
                f"lease on {self.lock_name!r} was lost: {self.lost}", lock_name=self.lock_name
            )
        if self.remaining() <= 0:
            raise LockExpiredError(f"lease on {self.lock_name!r} has expired", lock_name=self.lock_name)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: times in ISO 8601 UTC."""
        return {
            "lock_name": self.lock_name,
            "owner_id": self.owner_id,
            "mode": self.mode.value,
            "lease_id": self.lease_id,
            "token": self.token,
            "acquired_at": self.acquired_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "ttl": self.ttl,
            "metadata": self.metadata,
        }


@dataclass(frozen=True, slots=True)
class Waiter:
    """A queued request, as seen by :meth:`LockClient.get_lock_info`."""

    owner_id: str
    mode: LockMode
    position: int
    waiting_ms: int


@dataclass(frozen=True, slots=True)
class LockInfo:
    """One lock: its holders (live leases), its FIFO queue, and the last token issued."""

    name: str
    permits: int
    last_token: int
    holders: list[Lease]
    waiters: list[Waiter]

    @property
    def held(self) -> bool:
        return bool(self.holders)


@dataclass(frozen=True, slots=True)
class LockSummary:
    """One row of :meth:`LockClient.list_locks`."""

    name: str
    permits: int
    last_token: int
    holders: int
    exclusive: bool
    owners: list[str]
    waiters: int
    next_expiry: datetime | None


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def check_name(name: Any, what: str = "lock name", longest: int = MAX_NAME) -> str:
    """A lock name or owner id (or other text): 1–``longest`` characters, valid Unicode,
    without NUL."""
    if not isinstance(name, str):
        raise LockValidationError(f"{what} must be a string", field=what)
    if not 1 <= len(name) <= longest:
        raise LockValidationError(f"{what} must be 1-{longest} characters, got {len(name)}", field=what)
    if "\x00" in name:
        raise LockValidationError(f"{what} must not contain NUL", field=what)
    if not name.isascii() and not _encodable(name):  # ASCII has no surrogates: skip encoding
        raise LockValidationError(f"{what} must be valid Unicode (it has a lone surrogate)", field=what)
    return name


def check_correlation(correlation_id: Any) -> str | None:
    """A caller's correlation id (carried by the events its call causes): None, or text of
    1-255 characters like a name."""
    return None if correlation_id is None else check_name(correlation_id, "correlation_id")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_ttl(ttl: Any) -> float:
    """A TTL in seconds within 1–3600."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise LockValidationError("ttl must be a number of seconds", field="ttl")
    if not TTL_RANGE[0] <= ttl <= TTL_RANGE[1]:
        raise LockValidationError(f"ttl must be within 1..3600 seconds, got {ttl}", field="ttl")
    return float(ttl)


def check_wait(wait: Any) -> float:
    """A wait in seconds within 0–3600 (0 = try-lock)."""
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT:
        raise LockValidationError(f"wait must be within 0..{MAX_WAIT:.0f} seconds", field="wait")
    return float(wait)


def check_permits(permits: Any) -> int | None:
    """``None`` (keep the lock's setting) or a semaphore size within 1–100000."""
    if permits is None:
        return None
    if isinstance(permits, bool) or not isinstance(permits, int) or not 1 <= permits <= 100_000:
        raise LockValidationError("permits must be an integer within 1..100000", field="permits")
    return permits


def check_metadata(metadata: Any) -> dict[str, Any]:
    """A JSON object of at most 4 KiB once encoded, storable as PostgreSQL ``jsonb``:
    no NaN or Infinity, no NUL character and no lone surrogate in any string."""
    if metadata is None:
        return {}
    metadata_json(metadata)  # raises unless it is a JSON object within the limits
    return cast(dict[str, Any], metadata)


def metadata_json(metadata: Any) -> str:
    """``metadata`` checked as :func:`check_metadata` does, as the JSON text sent to the
    database (encoded once: the check's own encoding is the one sent)."""
    if metadata is None:
        return EMPTY_METADATA_JSON
    if not isinstance(metadata, dict):
        raise LockValidationError("metadata must be a JSON object", field="metadata")
    try:
        text = encode_metadata(metadata)
    except (TypeError, ValueError) as err:
        raise LockValidationError(f"metadata is not valid JSON: {err}", field="metadata") from err
    if _has_nul(metadata):
        raise LockValidationError("metadata must not contain NUL characters", field="metadata")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise LockValidationError(
            "metadata must be valid Unicode (it has a lone surrogate)", field="metadata"
        ) from None
    if size > MAX_METADATA_BYTES:
        raise LockValidationError(f"metadata is {size} bytes; the limit is 4096", field="metadata")
    return text


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def encode_metadata(metadata: dict[str, Any]) -> str:
    """The JSON text sent to the database (strict JSON: NaN/Infinity are refused)."""
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


EMPTY_METADATA_JSON = encode_metadata({})


def decode_metadata(text: str) -> dict[str, Any]:
    """The metadata of :func:`metadata_json`'s text, as a fresh dict."""
    return {} if text == EMPTY_METADATA_JSON else cast(dict[str, Any], json.loads(text))


def check_mode(mode: Any) -> LockMode:
    if type(mode) is LockMode:  # the default, and what typed callers pass
        return mode
    try:
        return LockMode(mode)
    except ValueError as err:
        raise LockValidationError("mode must be 'exclusive' or 'shared'", field="mode") from err

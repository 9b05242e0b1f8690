"""A validated acquire request and the engine's counters (plain values, no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from omninode_bridge.locks.models import Lease, LockMode, decode_metadata


@dataclass
class EngineStats:
    """Counters for metrics; plain numbers so any exporter can read them."""

    acquires: dict[str, int] = field(default_factory=dict)
    releases: int = 0
    extends: int = 0
    deadlocks: int = 0
    retries: int = 0
    waiting: int = 0
    last_db_ms: float = 0.0

    def count_acquire(self, result: str) -> None:
        self.acquires[result] = self.acquires.get(result, 0) + 1


class AcquireOptions(TypedDict, total=False):
    """Keyword options of an acquire (all optional; see ``LockClient.acquire``)."""

    mode: LockMode | str
    ttl: float | None
    wait: float
    permits: int | None
    reentrant: bool
    metadata: dict[str, Any] | None
    lease_id: str | uuid.UUID | None
    correlation_id: str | None


ACQUIRE_OPTIONS = frozenset(AcquireOptions.__annotations__)


def check_options(options: Mapping[str, Any], where: str = "acquire") -> None:
    """Unknown keyword options are a programming error: raise ``TypeError`` naming them
    (redis-py's ``timeout``/``blocking_timeout`` would otherwise be silently ignored)."""
    if options.keys() <= ACQUIRE_OPTIONS:
        return
    unknown = sorted(set(options) - ACQUIRE_OPTIONS)
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        known = ", ".join(sorted(ACQUIRE_OPTIONS))
        raise TypeError(f"{where}() got unexpected keyword argument(s) {names}; options are: {known}")


@dataclass(frozen=True)
class AcquireRequest:
    """A validated acquire; ``lease_id`` is chosen here (or by the caller) so retries
    are idempotent. ``metadata_json`` is the metadata as sent to the database."""

    name: str
    owner_id: str
    mode: LockMode
    ttl: float
    wait: float
    permits: int | None
    reentrant: bool
    metadata_json: str
    lease_id: uuid.UUID = field(default_factory=uuid.uuid4)
    own_id: bool = False  # the caller chose lease_id (it may have been used before)
    correlation_id: str | None = None  # carried by the events this request causes

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def granted(self, row: Any, sent_at: float) -> Lease:
        """The lease ``acquire_fast`` granted: its row carries only what the database
        decided (token, times, ``remaining_ms``); the rest is this request."""
        remaining_ms = row["remaining_ms"]
        return Lease(
            lock_name=self.name,
            owner_id=self.owner_id,
            mode=self.mode,
            lease_id=str(self.lease_id),
            token=int(row["token"]),
            acquired_at=row["acquired_at"],
            expires_at=row["expires_at"],
            ttl=self.ttl_ms / 1000.0,
            metadata=decode_metadata(self.metadata_json),
            local_deadline=sent_at + (self.ttl if remaining_ms is None else remaining_ms / 1000.0),
        )

    def fast_args(self) -> tuple[Any, ...]:
        """Arguments of ``acquire_fast`` (the one-statement uncontended path)."""
        return (
            self.name,
            self.lease_id,
            self.owner_id,
            self.mode.value,
            self.ttl_ms,
            self.permits,
            self.metadata_json,
            self.own_id,
        )

    def args(self, listener_pid: int | None) -> tuple[Any, ...]:
        """Arguments of ``acquire`` (the full state machine)."""
        return (
            self.name,
            self.lease_id,
            self.owner_id,
            self.mode.value,
            self.ttl_ms,
            int(self.wait * 1000),
            self.permits,
            self.reentrant,
            self.metadata_json,
            listener_pid,
            self.own_id,
        )

    def txn_args(self) -> tuple[Any, ...]:
        """Arguments of ``acquire_in_txn`` (a try-lock inside the caller's transaction)."""
        return (
            self.name,
            self.lease_id,
            self.owner_id,
            self.mode.value,
            self.ttl_ms,
            self.permits,
            self.reentrant,
            self.metadata_json,
        )

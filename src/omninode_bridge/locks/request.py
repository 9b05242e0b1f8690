"""A validated acquire request and the engine's counters (plain values, no I/O)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, TypedDict

from omninode_bridge.locks.models import LockMode


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


@dataclass(frozen=True)
class AcquireRequest:
    """A validated acquire; ``lease_id`` is chosen here so retries are idempotent."""

    name: str
    owner_id: str
    mode: LockMode
    ttl: float
    wait: float
    permits: int | None
    reentrant: bool
    metadata: dict[str, Any]
    lease_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def fast_args(self) -> tuple[Any, ...]:
        """Arguments of ``acquire_fast`` (the one-statement uncontended path)."""
        ms = int(self.ttl * 1000)
        return (self.name, self.lease_id, self.owner_id, self.mode.value, ms, self.permits, self.metadata)

    def args(self, listener_pid: int | None) -> tuple[Any, ...]:
        return (
            self.name,
            self.lease_id,
            self.owner_id,
            self.mode.value,
            int(self.ttl * 1000),
            int(self.wait * 1000),
            self.permits,
            self.reentrant,
            self.metadata,
            listener_pid,
        )

"""The event envelope: one definition for Kafka values and the HTTP/CLI feed.

An outbox row becomes ``{"id", "event_id", "event_type", "lock_name", "owner_id",
"token", "occurred_at", "correlation_id", "payload"}``. ``id`` is the outbox position
(the ``after=`` cursor of the feed); ``event_id`` is the identity a consumer
de-duplicates on: the row's random ``event_id`` column, or for rows written before
migration 0003 a UUID derived from the stream's identity and the row id. Both are the
same on every delivery of the event. The lease id is a secret and never leaves: the
relay does not select it, and a payload key of that name is dropped.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict

from omninode_bridge.locks.errors import LockValidationError

DEFAULT_PREFIX = "dev.omninode-bridge"
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
SECRET_KEYS = frozenset({"lease_id"})


class Row(Protocol):
    """An outbox row (an asyncpg ``Record`` or a dict)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Envelope(TypedDict):
    """What a consumer receives for one event."""

    id: int
    event_id: str
    event_type: str
    lock_name: str
    owner_id: str | None
    token: int | None
    occurred_at: str
    correlation_id: str | None
    payload: dict[str, Any]


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if Kafka accepts it as the start of a topic name."""
    if not _TOPIC.match(prefix) or prefix.startswith(".") or prefix.endswith("."):
        raise LockValidationError(
            f"topic prefix {prefix!r} must be 1-200 of A-Z a-z 0-9 . _ - (not starting or ending with '.')",
            field="kafka_topic_prefix",
        )
    return prefix


def topic_for(event_type: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``lock_acquired`` -> ``{prefix}.lock.acquired.v1``; ``deadlock_detected`` ->
    ``{prefix}.lock.deadlock-detected.v1``; ``lock_force_released`` -> ``...force-released...``."""
    kind = event_type.removeprefix("lock_").replace("_", "-")
    return f"{check_prefix(prefix)}.lock.{kind}.v1"


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` and always six digits of microseconds (the database
    clock's value; the relay's SQL writes the same form)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_id_for(row: Row, stream_id: uuid.UUID) -> str:
    """The row's own ``event_id``, or (rows older than migration 0003) one derived from
    the stream identity and the outbox id - the same on every delivery."""
    own = row["event_id"]
    if own is not None:
        return str(own)
    return derived_event_id(int(row["id"]), stream_id)


def derived_event_id(outbox_id: int, stream_id: uuid.UUID) -> str:
    return str(uuid.uuid5(stream_id, f"outbox:{outbox_id}"))


def envelope_from_row(row: Row, stream_id: uuid.UUID) -> Envelope:
    payload = row["payload"]
    if isinstance(payload, str):  # a connection without the json codec
        payload = json.loads(payload)
    clean = {k: v for k, v in (payload or {}).items() if k not in SECRET_KEYS}
    return Envelope(
        id=int(row["id"]),
        event_id=event_id_for(row, stream_id),
        event_type=row["event_type"],
        lock_name=row["lock_name"],
        owner_id=row["owner_id"],
        token=None if row["token"] is None else int(row["token"]),
        occurred_at=iso_utc(row["created_at"]),
        correlation_id=row["correlation_id"],
        payload=clean,
    )


def with_derived_id(value: bytes, outbox_id: int, stream_id: uuid.UUID) -> bytes:
    """A message value the relay's SQL built for a row older than migration 0003 (its
    ``event_id`` is null there), with the derived id filled in - the same on every
    delivery (key order kept)."""
    envelope = json.loads(value)
    envelope["event_id"] = derived_event_id(outbox_id, stream_id)
    return json.dumps(envelope, separators=(",", ":")).encode()


def encode(envelope: Envelope) -> bytes:
    """The Kafka message value: compact JSON, keys sorted (stable bytes for one event)."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), default=str).encode()

"""The event envelope and topic names (no I/O)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from omninode_bridge.events.envelope import (
    encode,
    envelope_from_row,
    event_id_for,
    topic_for,
    with_derived_id,
)
from omninode_bridge.locks import LockValidationError

STREAM = uuid.UUID("6f1c1a52-4c1e-4f7e-9a43-0c6d2f1b9e11")


def row(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": 41,
        "event_id": uuid.UUID("0b8c5a9e-1f0e-4a57-9b1c-3d2e4f5a6b7c"),
        "event_type": "lock_released",
        "lock_name": "reports:nightly",
        "owner_id": "worker-1",
        "token": 9,
        "payload": {"mode": "exclusive", "held_ms": 12},
        "created_at": datetime(2026, 12, 1, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        "correlation_id": None,
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("event_type", "topic"),
    [
        ("lock_acquired", "dev.omninode-bridge.lock.acquired.v1"),
        ("lock_released", "dev.omninode-bridge.lock.released.v1"),
        ("lock_extended", "dev.omninode-bridge.lock.extended.v1"),
        ("lock_expired", "dev.omninode-bridge.lock.expired.v1"),
        ("lock_force_released", "dev.omninode-bridge.lock.force-released.v1"),
        ("deadlock_detected", "dev.omninode-bridge.lock.deadlock-detected.v1"),
    ],
)
def test_topics(event_type: str, topic: str) -> None:
    assert topic_for(event_type) == topic
    assert topic_for(event_type, "prod.locks") == topic.replace("dev.omninode-bridge", "prod.locks")


@pytest.mark.parametrize("prefix", ["", "has space", "a/b", ".lead", "trail.", "x" * 201])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(LockValidationError):
        topic_for("lock_acquired", prefix)


def test_envelope_fields_time_in_utc_and_no_lease_id() -> None:
    envelope = envelope_from_row(row(payload={"mode": "shared", "lease_id": "secret"}), STREAM)
    assert envelope == {
        "id": 41,
        "event_id": "0b8c5a9e-1f0e-4a57-9b1c-3d2e4f5a6b7c",
        "event_type": "lock_released",
        "lock_name": "reports:nightly",
        "owner_id": "worker-1",
        "token": 9,
        "occurred_at": "2026-12-01T14:00:00.123456Z",
        "correlation_id": None,
        "payload": {"mode": "shared"},
    }
    assert datetime.fromisoformat(envelope["occurred_at"]) == datetime(
        2026, 12, 1, 14, 0, 0, 123456, tzinfo=UTC
    )
    assert json.loads(encode(envelope)) == envelope
    assert encode(envelope) == encode(envelope_from_row(row(payload={"mode": "shared"}), STREAM))


def test_rows_older_than_the_event_id_column_get_a_stable_derived_id() -> None:
    first = event_id_for(row(event_id=None), STREAM)
    assert first == event_id_for(row(event_id=None), STREAM)  # the same on every delivery
    assert first != event_id_for(row(event_id=None, id=42), STREAM)
    assert first != event_id_for(row(event_id=None), uuid.uuid4())  # another outbox
    assert uuid.UUID(first).version == 5


def test_whole_seconds_keep_six_digits_of_microseconds() -> None:
    """The relay's SQL writes occurred_at with .US always; the feed writes the same."""
    envelope = envelope_from_row(row(created_at=datetime(2026, 12, 1, 14, 0, 0, tzinfo=UTC)), STREAM)
    assert envelope["occurred_at"] == "2026-12-01T14:00:00.000000Z"


def test_a_value_built_for_an_old_row_gets_the_derived_id() -> None:
    value = json.dumps({"event_id": None, "id": 41, "lock_name": "x"}).encode()
    fixed = json.loads(with_derived_id(value, 41, STREAM))
    assert fixed == {"event_id": event_id_for(row(event_id=None), STREAM), "id": 41, "lock_name": "x"}
    assert list(fixed) == ["event_id", "id", "lock_name"], "key order kept"
    assert with_derived_id(value, 41, STREAM) == with_derived_id(value, 41, STREAM)

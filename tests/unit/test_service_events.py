"""The service's event wiring without I/O: the outbox gauges appear only with values,
and a service told to relay refuses to start without the Kafka client."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from omninode_bridge.locks.config import LockSettings
from omninode_bridge.locks.errors import LockValidationError
from omninode_bridge.service import relay_runner
from omninode_bridge.service.app import create_app
from omninode_bridge.service.relay_runner import OutboxGauges


def test_outbox_gauges_are_absent_until_there_is_something_to_say() -> None:
    registry = CollectorRegistry(auto_describe=True)
    gauges = OutboxGauges().register(registry)
    assert b"distributed_lock_outbox_backlog" not in generate_latest(registry)
    gauges.values = (12.0, 3.5, None)  # a relay elsewhere: no relay_up from this process
    text = generate_latest(registry).decode()
    assert "distributed_lock_outbox_backlog 12.0" in text
    assert "distributed_lock_relay_lag_seconds 3.5" in text
    assert "distributed_lock_relay_up" not in text
    gauges.values = (0.0, 0.0, 1.0)
    assert "distributed_lock_relay_up 1.0" in generate_latest(registry).decode()
    gauges.values = None
    assert b"distributed_lock_relay" not in generate_latest(registry)


def test_kafka_configured_without_aiokafka_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "aiokafka" else real(name, *args)

    monkeypatch.setattr(relay_runner.importlib.util, "find_spec", find_spec)
    cfg = LockSettings(dsn="postgresql://u@127.0.0.1:1/db", kafka_bootstrap_servers="127.0.0.1:9092")
    with pytest.raises(LockValidationError, match=r"omninode-bridge\[kafka\]"):
        create_app(cfg)
    monkeypatch.undo()
    assert create_app(cfg).state.events.runner is not None  # with aiokafka: a relay will run
    no_kafka = create_app(LockSettings(dsn="postgresql://u@127.0.0.1:1/db")).state.events
    assert no_kafka.runner is None

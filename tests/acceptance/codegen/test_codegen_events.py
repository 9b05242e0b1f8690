"""Acceptance: node_generation_completed reaches a real Kafka-protocol broker (Tansu), or the log."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from omninode_bridge.codegen.events import BOOTSTRAP_ENV, PREFIX_ENV, generation_topic
from omninode_bridge.codegen.pipeline import STAGES, GenerateOptions, GenerationResult, generate


async def consume_one(bootstrap: str, topic: str) -> tuple[bytes | None, dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=15)
    finally:
        await consumer.stop()
    event: dict[str, Any] = json.loads(message.value)
    return message.key, event


def assert_event_fields(event: dict[str, Any], result: GenerationResult, method: str) -> None:
    """The SPEC's fields: method, the time of each of the nine stages, the quality score."""
    assert event["event_type"] == "NODE_GENERATION_COMPLETED"
    assert uuid.UUID(event["event_id"]).version == 4
    original = {
        "correlation_id",
        "event_id",
        "timestamp",
        "workflow_id",
        "total_duration_seconds",
        "generated_files",
        "node_type",
        "service_name",
        "quality_score",
        "test_coverage",
        "complexity_score",
        "patterns_applied",
        "intelligence_sources",
        "primary_model",
        "total_tokens",
        "total_cost_usd",
    }
    assert original <= set(event)
    assert (event["primary_model"], event["total_tokens"], event["total_cost_usd"]) == (None, None, None)
    assert event["generated_files"] == result.files
    assert event["service_name"] == Path(result.node_dir).parent.name.replace("_", "-")
    assert uuid.UUID(event["workflow_id"]) and uuid.UUID(event["correlation_id"])
    assert (event["node_name"], event["node_type"]) == (result.node_name, result.node_type)
    assert event["method"] == method == result.method
    assert event["success"] is True
    stage_times = event["stage_times_ms"]
    assert sorted(stage_times) == sorted(STAGES.values())  # all nine, by name
    assert all(isinstance(ms, float) and ms >= 0 for ms in stage_times.values())
    assert stage_times == {s.name: s.duration_ms for s in result.stages}
    assert result.quality is not None
    assert isinstance(event["quality_score"], float)
    assert event["quality_score"] == result.quality.score >= 0.8
    assert len(event["generated_files"]) >= 16
    assert event["total_duration_seconds"] * 1000 >= sum(stage_times.values()) * 0.5


def test_event_is_published_to_kafka(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, kafka_bootstrap)
    monkeypatch.setenv(PREFIX_ENV, f"test{tmp_path.name[-6:]}")
    result = generate(
        GenerateOptions(
            description="Fetch exchange rates from an HTTP API with retry",
            output_dir=tmp_path,
            run_tests=False,
        )
    )
    assert result.success
    assert result.event == "kafka"
    key, event = asyncio.run(consume_one(kafka_bootstrap, generation_topic()))
    assert key == result.node_name.encode()
    assert_event_fields(event, result, "prompt")


def test_event_from_contract_says_so(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = generate(
        GenerateOptions(
            description="Fetch exchange rates from an HTTP API with retry",
            output_dir=tmp_path / "a",
            run_tests=False,
            publish_event=False,
        )
    )
    monkeypatch.setenv(BOOTSTRAP_ENV, kafka_bootstrap)
    monkeypatch.setenv(PREFIX_ENV, f"contract{tmp_path.name[-6:]}")
    result = generate(
        GenerateOptions(
            from_contract=Path(first.node_dir) / "contract.yaml",
            output_dir=tmp_path / "b",
            run_tests=False,
            enable_intelligence=True,
        )
    )
    assert result.event == "kafka"
    _, event = asyncio.run(consume_one(kafka_bootstrap, generation_topic()))
    assert_event_fields(event, result, "contract+intelligence")


def test_event_is_logged_without_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    caplog.set_level(logging.INFO, logger="omninode_bridge")
    result = generate(
        GenerateOptions(
            description="Fetch exchange rates from an HTTP API with retry",
            output_dir=tmp_path,
            run_tests=False,
        )
    )
    assert result.event == "log"
    records = [
        r for r in caplog.records if "node_generation_completed" in r.getMessage()
    ]  # logged lower-case
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    line = json.loads(records[0].getMessage())
    event = line.get("context", line)
    assert_event_fields(event, result, "prompt")


def test_unreachable_kafka_does_not_fail_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "127.0.0.1:1")
    result = generate(
        GenerateOptions(
            description="Fetch exchange rates from an HTTP API with retry",
            output_dir=tmp_path,
            run_tests=False,
        )
    )
    assert result.success
    assert result.event == "log (kafka failed)"

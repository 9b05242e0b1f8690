"""Acceptance: node_generation_completed reaches a real Kafka-protocol broker (Tansu), or the log."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from omninode_bridge.codegen.events import BOOTSTRAP_ENV, PREFIX_ENV, generation_topic
from omninode_bridge.codegen.pipeline import GenerateOptions, generate


async def consume_one(bootstrap: str, topic: str) -> dict[str, object]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=15)
    finally:
        await consumer.stop()
    event: dict[str, object] = json.loads(message.value)
    return event


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
    event = asyncio.run(consume_one(kafka_bootstrap, generation_topic()))
    assert event["event_type"] == "node_generation_completed"
    assert event["node_name"] == result.node_name
    assert event["method"] == "prompt"
    assert event["quality_score"] == pytest.approx(result.quality.score if result.quality else 0)
    stage_times = event["stage_times_ms"]
    assert isinstance(stage_times, dict) and len(stage_times) == 9


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
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if "node_generation_completed" in r.getMessage()
    ]
    assert lines and lines[-1]["node_name"] == result.node_name
    assert "quality_score" in lines[-1]


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

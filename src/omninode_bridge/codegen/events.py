"""Stage 5 support: the generator's own ``NODE_GENERATION_COMPLETED`` event.

The envelope follows the original omninode_bridge codegen event: ``correlation_id,
event_id, timestamp, workflow_id, total_duration_seconds, generated_files, node_type,
service_name, quality_score, test_coverage, complexity_score, patterns_applied,
intelligence_sources`` (model, token and cost fields are null: this generator uses
templates, not a model), plus stage times. Published to Kafka (aiokafka) on
``dev.omninode-bridge.codegen.generation-completed.v1`` when
``OMNINODE_KAFKA_BOOTSTRAP_SERVERS`` is set, else logged with ``emit_log_event``.
A broker problem never fails a generation.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from omninode_bridge.core import emit_log_event

BOOTSTRAP_ENV = "OMNINODE_KAFKA_BOOTSTRAP_SERVERS"
PREFIX_ENV = "OMNINODE_KAFKA_TOPIC_PREFIX"
EVENT_TYPE = "NODE_GENERATION_COMPLETED"


def generation_topic() -> str:
    prefix = os.environ.get(PREFIX_ENV, "dev.omninode-bridge")
    return f"{prefix}.codegen.generation-completed.v1"


def build_event(summary: dict[str, Any], correlation_id: uuid.UUID | None = None) -> dict[str, Any]:
    """The event envelope (``event_id`` is unique per publication; the time is UTC ISO 8601)."""
    return {
        "event_type": EVENT_TYPE,
        "correlation_id": str(correlation_id or uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat(),
        **summary,
    }


async def _send(bootstrap: str, topic: str, event: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(producer.start(), timeout=10)
        await asyncio.wait_for(
            producer.send_and_wait(
                topic, json.dumps(event, sort_keys=True).encode(), key=event["node_name"].encode()
            ),
            timeout=10,
        )
    finally:
        await producer.stop()


def publish_generation_event(summary: dict[str, Any]) -> str:
    """Publish (or log) the event; returns ``"kafka"``, ``"log"`` or ``"log (kafka failed)"``."""
    event = build_event(summary)
    bootstrap = os.environ.get(BOOTSTRAP_ENV)
    if bootstrap:
        try:
            asyncio.run(_send(bootstrap, generation_topic(), event))
        except Exception as err:
            emit_log_event(
                "WARNING", "generation_event_publish_failed", {"error": str(err), "topic": generation_topic()}
            )
        else:
            return "kafka"
        emit_log_event("INFO", EVENT_TYPE.lower(), event)
        return "log (kafka failed)"
    emit_log_event("INFO", EVENT_TYPE.lower(), event)
    return "log"

"""Stage 5 support: the generator's own ``node_generation_completed`` event.

Published to Kafka (aiokafka) when ``OMNINODE_KAFKA_BOOTSTRAP_SERVERS`` is set,
else logged with ``emit_log_event``. A broker problem never fails a generation.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

from omninode_bridge.core import emit_log_event

BOOTSTRAP_ENV = "OMNINODE_KAFKA_BOOTSTRAP_SERVERS"
PREFIX_ENV = "OMNINODE_KAFKA_TOPIC_PREFIX"
EVENT_TYPE = "node_generation_completed"


def generation_topic() -> str:
    prefix = os.environ.get(PREFIX_ENV, "dev.omninode-bridge")
    return f"{prefix}.codegen.node-generation-completed.v1"


def build_event(summary: dict[str, Any]) -> dict[str, Any]:
    """The event envelope (``event_id`` is unique per publication)."""
    return {"event_type": EVENT_TYPE, "event_id": str(uuid.uuid4()), **summary}


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
        emit_log_event("INFO", EVENT_TYPE, event)
        return "log (kafka failed)"
    emit_log_event("INFO", EVENT_TYPE, event)
    return "log"

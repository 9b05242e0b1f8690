"""Lock events leave the database: the outbox relay to Kafka and the PostgreSQL feed.

Every state change of the engine writes an event row in its own transaction (the
outbox). :class:`Relay` publishes them to Kafka at least once, in commit order per lock,
any number of relays at once; :class:`EventFeed` lets anyone follow them from
PostgreSQL with no broker (long poll and an endless stream, resumable by outbox id).
"""

from __future__ import annotations

from omninode_bridge.events.envelope import DEFAULT_PREFIX, Envelope, encode, topic_for
from omninode_bridge.events.feed import EventFeed
from omninode_bridge.events.kafka import BrokerError, KafkaSink
from omninode_bridge.events.relay import OutboxStats, Relay, RelayStatus, Sink, outbox_stats
from omninode_bridge.events.runner import close_feed, feed_for, kafka_sink, open_feed, open_relay
from omninode_bridge.events.wakeup import OutboxWakeup

__all__ = [
    "DEFAULT_PREFIX",
    "BrokerError",
    "Envelope",
    "EventFeed",
    "KafkaSink",
    "OutboxStats",
    "OutboxWakeup",
    "Relay",
    "RelayStatus",
    "Sink",
    "close_feed",
    "encode",
    "feed_for",
    "kafka_sink",
    "open_feed",
    "open_relay",
    "outbox_stats",
    "topic_for",
]

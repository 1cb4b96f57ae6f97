"""The producer library: validated, idempotent, acknowledged publishing of events.

Every event is validated against the schema registry before it leaves the process. A valid
event goes to its domain topic (keyed ``tenant:user``, headers event_type/version/trace_id);
an invalid one goes to the dead-letter topic with its violations, so nothing is silently dropped.
Delivery reports are checked: ``flush()`` raises if any message was not acknowledged.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from pipelines.config import Settings
from pipelines.contracts.events import encode_event, message_headers, message_key
from pipelines.contracts.registry import SchemaRegistry, Violation

HEADER_ERROR = "dlq_error"
HEADER_INTENDED_TOPIC = "dlq_intended_topic"


class ProduceError(RuntimeError):
    """Some messages were not acknowledged by the broker; the message lists them by topic."""


@dataclass
class DeliveryStats:
    """What the broker acknowledged, per topic, plus failures and dead-lettered events."""

    delivered: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (topic, error)
    dead_lettered: int = 0

    @property
    def total_delivered(self) -> int:
        return sum(self.delivered.values())


def producer_config(settings: Settings, bootstrap_servers: str) -> dict[str, Any]:
    """librdkafka settings: idempotent, acks=all, batched and compressed, bounded client memory."""
    p = settings.producer
    return {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": p.compression_type,
        "linger.ms": p.linger_ms,
        "batch.size": p.batch_size,
        "queue.buffering.max.messages": p.max_in_flight_messages,
        "queue.buffering.max.kbytes": p.max_in_flight_kbytes,
        "delivery.timeout.ms": p.delivery_timeout_ms,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 2000,
        **settings.kafka.client_settings(),
    }


def violations_json(violations: Iterable[Violation]) -> str:
    return json.dumps([{"path": v.path, "message": v.message} for v in violations])


class EventProducer:
    """Publish events to their domain topics; use as a context manager so shutdown flushes."""

    def __init__(self, settings: Settings, bootstrap_servers: str, registry: SchemaRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or SchemaRegistry.load(settings.schemas_dir)
        self.stats = DeliveryStats()
        self._producer = Producer(producer_config(settings, bootstrap_servers))
        self._retries = settings.producer.retries

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def publish(self, event: dict[str, Any], trace_id: str | None = None) -> bool:
        """Validate and publish one event; returns False when it went to the dead-letter topic."""
        violations = self.registry.validate(event)
        headers = message_headers(event if isinstance(event, dict) else {}, trace_id)
        if violations:
            self._dead_letter(
                encode_event(event), message_key(event), headers, violations, intended=self._topic_of(event)
            )
            return False
        self.send(self._topic_of(event), encode_event(event), message_key(event), headers)
        return True

    def publish_json(self, raw: bytes, trace_id: str | None = None) -> bool:
        """Publish an already-serialized event (e.g. from a file or an HTTP body) after validating it."""
        event, violations = self.registry.validate_json(raw)
        if event is None or violations:
            safe_event = event if isinstance(event, dict) else {}
            self._dead_letter(
                raw,
                message_key(safe_event),
                message_headers(safe_event, trace_id),
                violations,
                intended=self._topic_of(safe_event),
            )
            return False
        self.send(self._topic_of(event), raw, message_key(event), message_headers(event, trace_id))
        return True

    def send(self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        """Produce one message as-is (no validation); retried with backoff while the local queue is full."""
        self._produce_with_backoff(topic, value, key, headers)

    def flush(self, timeout_s: float = 120.0) -> DeliveryStats:
        """Wait for every delivery report; raise ProduceError if any message was not acknowledged."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise ProduceError(f"{remaining} message(s) still unacknowledged after {timeout_s:.0f}s flush")
        if self.stats.failed:
            by_topic = Counter(topic for topic, _ in self.stats.failed)
            first = self.stats.failed[0]
            raise ProduceError(
                f"{len(self.stats.failed)} message(s) were not delivered ({dict(by_topic)}); first error on "
                f"{first[0]!r}: {first[1]}"
            )
        return self.stats

    def _topic_of(self, event: Any) -> str:
        event_type = event.get("event_type") if isinstance(event, dict) else None
        return self.settings.kafka.topic_for_event_type.get(str(event_type), self.settings.kafka.dead_letter_topic)

    def _dead_letter(
        self,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        violations: list[Violation],
        intended: str,
    ) -> None:
        dlq_headers = [
            *headers,
            (HEADER_ERROR, violations_json(violations).encode()),
            (HEADER_INTENDED_TOPIC, intended.encode()),
        ]
        self.stats.dead_lettered += 1
        self._produce_with_backoff(self.settings.kafka.dead_letter_topic, value, key, dlq_headers)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.stats.failed.append((message.topic(), str(error)))
        else:
            self.stats.delivered[message.topic()] += 1

    def _produce_with_backoff(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        try:
            self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
        except BufferError:
            # The bounded local queue is full: serve delivery reports to make room, retry with backoff.
            Retrying(
                retry=retry_if_exception_type(BufferError),
                wait=wait_exponential(multiplier=0.05, max=2.0),
                stop=stop_after_attempt(self._retries + 1),
                before_sleep=lambda _: self._producer.poll(0.5),
                reraise=True,
            )(self._producer.produce, topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
        self._producer.poll(0)

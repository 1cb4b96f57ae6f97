"""Producer library against the real broker: round trip with keys and headers, DLQ, delivery errors."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipelines.config import Settings
from pipelines.contracts.events import message_key
from pipelines.kafka.producer import HEADER_ERROR, HEADER_INTENDED_TOPIC, EventProducer, ProduceError

pytestmark = pytest.mark.integration


def page_view(tenant: str, user: str, n: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "version": 2,
        "occurred_at": f"2026-11-01T10:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
        "tenant_id": tenant,
        "user_id": user,
        "anonymous_id": None,
        "session_id": f"s-{user}",
        "properties": {"url": f"https://shop.example/p/{n}", "page_type": "product"},
        "context": {"device": "desktop", "ip": "203.0.113.7", "locale": "en-US"},
    }


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    """Read a whole topic with assign (no group), until `expected` messages or the timeout."""
    from confluent_kafka.admin import AdminClient

    partitions = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages = []
    import time

    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        for message in consumer.consume(1000, timeout=0.5):
            assert message.error() is None, message.error()
            messages.append(message)
    # a little longer, to catch anything beyond what we expected
    messages.extend(m for m in consumer.consume(1000, timeout=1.0) if m.error() is None)
    consumer.close()
    return messages


def test_round_trip_keys_headers_and_order(isolated_settings: Settings, broker) -> None:
    events = [page_view(f"t{n % 3}", f"u{n % 17}", n) for n in range(600)]
    with EventProducer(isolated_settings, broker.bootstrap_servers) as producer:
        for event in events:
            assert producer.publish(event, trace_id=event["event_id"].replace("-", ""))
    topic = next(t for t in isolated_settings.kafka.topics if t.startswith("user.activity"))
    assert producer.stats.delivered[topic] == 600 and not producer.stats.failed

    received = consume_all(broker.bootstrap_servers, topic, 600)
    assert len(received) == 600, "exactly N produced, N consumed"
    by_id = {e["event_id"]: e for e in events}
    partitions_per_key: dict[bytes, set[int]] = {}
    for message in received:
        event = json.loads(message.value())
        assert event == by_id[event["event_id"]]
        assert message.key() == message_key(event) == f"{event['tenant_id']}:{event['user_id']}".encode()
        headers = dict(message.headers())
        assert headers["event_type"] == b"page_view" and headers["version"] == b"2"
        assert headers["trace_id"] == event["event_id"].replace("-", "").encode()
        partitions_per_key.setdefault(message.key(), set()).add(message.partition())
    assert all(len(p) == 1 for p in partitions_per_key.values()), "one key, one partition"
    # per key, the broker order is the publish order
    for key in partitions_per_key:
        sent = [e["event_id"] for e in events if message_key(e) == key]
        got = [json.loads(m.value())["event_id"] for m in sorted(received, key=lambda m: m.offset()) if m.key() == key]
        assert got == sent


def test_invalid_event_goes_to_dead_letter_with_reasons(isolated_settings: Settings, broker) -> None:
    good = page_view("acme", "u1", 1)
    bad = page_view("acme", "u2", 2)
    del bad["occurred_at"]
    bad["properties"]["scroll_depth"] = "deep"
    with EventProducer(isolated_settings, broker.bootstrap_servers) as producer:
        assert producer.publish(good) is True
        assert producer.publish(bad) is False
        assert producer.publish_json(b"{not json") is False
    assert producer.stats.dead_lettered == 2

    dlq = consume_all(broker.bootstrap_servers, isolated_settings.kafka.dead_letter_topic, 2)
    assert len(dlq) == 2
    first, second = sorted(dlq, key=lambda m: m.offset())
    assert json.loads(first.value())["event_id"] == bad["event_id"], "the original event is kept"
    errors = {e["path"] for e in json.loads(dict(first.headers())[HEADER_ERROR])}
    assert {"$.occurred_at", "$.properties.scroll_depth"} <= errors
    assert dict(first.headers())[HEADER_INTENDED_TOPIC].decode().startswith("user.activity")
    assert second.value() == b"{not json", "raw bytes are kept as they came"
    assert "invalid JSON" in dict(second.headers())[HEADER_ERROR].decode()

    topic = next(t for t in isolated_settings.kafka.topics if t.startswith("user.activity"))
    assert [json.loads(m.value())["event_id"] for m in consume_all(broker.bootstrap_servers, topic, 1)] == [
        good["event_id"]
    ]


def test_unreachable_broker_reports_undelivered(isolated_settings: Settings) -> None:
    from pipelines.platform.processes import free_port

    settings = isolated_settings.model_copy(
        update={"producer": isolated_settings.producer.model_copy(update={"delivery_timeout_ms": 1500})}
    )
    producer = EventProducer(settings, f"127.0.0.1:{free_port()}")
    producer.publish(page_view("acme", "u1", 1))
    with pytest.raises(ProduceError, match="not delivered"):
        producer.flush(timeout_s=10)


def test_the_current_opentelemetry_trace_travels_to_bronze(spark, isolated_settings: Settings, broker) -> None:
    """A producer inside an OpenTelemetry span sends its W3C traceparent; bronze.events keeps that trace id
    (and a producer that sends only a traceparent, without our trace_id header, is traced too)."""
    from confluent_kafka import Producer
    from opentelemetry.sdk.trace import TracerProvider

    from pipelines.bronze import run_bronze
    from pipelines.contracts.events import encode_event
    from pipelines.kafka.producer import producer_config
    from pipelines.platform.lake import Lake

    tracer = TracerProvider().get_tracer("test")
    traced, untraced, foreign = page_view("t1", "u1", 1), page_view("t1", "u2", 2), page_view("t1", "u3", 3)
    with EventProducer(isolated_settings, broker.bootstrap_servers) as producer:
        with tracer.start_as_current_span("checkout") as span:
            assert producer.publish(traced)
            context = span.get_span_context()
        assert producer.publish(untraced)
    foreign_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    raw = Producer(producer_config(isolated_settings, broker.bootstrap_servers))
    raw.produce(
        isolated_settings.kafka.topic_for_event_type["page_view"],
        encode_event(foreign),
        headers=[("traceparent", f"00-{foreign_trace}-00f067aa0ba902b7-01".encode())],
    )
    assert raw.flush(30) == 0

    topic = isolated_settings.kafka.topic_for_event_type["page_view"]
    headers = {
        dict(m.headers())["trace_id"]: dict(m.headers())
        for m in consume_all(broker.bootstrap_servers, topic, 3)
        if "trace_id" in dict(m.headers())
    }
    expected = f"{context.trace_id:032x}"
    assert (
        headers[expected.encode()]["traceparent"]
        == f"00-{expected}-{context.span_id:016x}-{int(context.trace_flags):02x}".encode()
    )
    assert len(headers) == 2 and all("traceparent" not in h for k, h in headers.items() if k != expected.encode())

    run_bronze(spark, isolated_settings, broker.bootstrap_servers, once=True)
    rows = (
        spark.read.format("delta").load(Lake(isolated_settings).bronze_events).select("event_id", "trace_id").collect()
    )
    trace_of = {row.event_id: row.trace_id for row in rows}
    assert trace_of[traced["event_id"]] == expected
    assert trace_of[foreign["event_id"]] == foreign_trace
    assert len(trace_of[untraced["event_id"]]) == 32 and trace_of[untraced["event_id"]] not in (expected, foreign_trace)

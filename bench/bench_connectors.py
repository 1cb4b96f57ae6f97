"""Kafka -> Delta throughput: the project's Spark connectors against what a user would write instead.

One run, one topic, the same messages for every row (the synthetic generator's realistic JSON events,
~330 B each, 4 partitions, embedded Tansu broker):

1. raw confluent-kafka consume (one consumer, assign, batch consume): the ceiling for any reader;
2. ``lakehouse_kafka`` streaming source -> Spark's ``noop`` sink (Trigger.AvailableNow);
3. ``lakehouse_kafka`` -> ``lakehouse_delta`` streaming sink (AvailableNow, exactly-once commits);
4. hand-written loop: confluent-kafka consumer -> pyarrow table per 100k messages -> ``write_deltalake``.

Rows 2-4 write the same columns (key, value, topic, partition, offset, timestamp). Spark rows exclude
session start-up and a warm-up query but include query planning and start/stop. The ratio column compares with row 4.

Run: ``.venv/bin/python -m bench.bench_connectors [--messages N]``; rewrites its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import machine, markdown_table, private_broker, write_section
from pipelines.config import load_settings
from pipelines.generator import GeneratorSpec, generate

PARTITIONS = 4
BATCH = 200_000  # maxOffsetsPerTrigger
COLUMNS = ["key", "value", "topic", "partition", "offset", "timestamp"]


def produce(bootstrap: str, topic: str, messages: int) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)
    settings = load_settings("local", environ={})
    users = max(1, messages // 95)  # the generator emits ~32 messages per user and day over 3 tenants
    stream, _ = generate(
        GeneratorSpec(seed=1, tenants=1, users_per_tenant=users, days=3), settings.kafka.topic_for_event_type
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 20,
            "batch.size": 262144,
        }
    )
    count = 0
    while count < messages:
        for message in stream:
            if count == messages:
                break
            while True:
                try:
                    producer.produce(topic, value=message.value, key=message.key, headers=message.headers)
                    break
                except BufferError:
                    producer.poll(0.1)
            count += 1
    assert producer.flush(120) == 0
    return count


def raw_consume(bootstrap: str, topic: str, expected: int) -> float:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    started, seen = time.perf_counter(), 0
    while seen < expected:
        seen += sum(1 for m in consumer.consume(10_000, timeout=1.0) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def hand_written_loop(bootstrap: str, topic: str, expected: int, table: str) -> float:
    """What a user writes without the connectors: consume, batch into Arrow, write_deltalake."""
    from deltalake import write_deltalake

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    started, seen = time.perf_counter(), 0
    buffer: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    schema = pa.schema(
        [
            ("key", pa.binary()),
            ("value", pa.binary()),
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("timestamp", pa.timestamp("ms", tz="UTC")),
        ]
    )

    def flush() -> None:
        write_deltalake(table, pa.Table.from_pydict(buffer, schema=schema), mode="append")
        for column in buffer.values():
            column.clear()

    while seen < expected:
        for m in consumer.consume(10_000, timeout=1.0):
            if m.error() is not None:
                continue
            buffer["key"].append(m.key())
            buffer["value"].append(m.value())
            buffer["topic"].append(m.topic())
            buffer["partition"].append(m.partition())
            buffer["offset"].append(m.offset())
            buffer["timestamp"].append(m.timestamp()[1])
            seen += 1
        if len(buffer["offset"]) >= 100_000:
            flush()
    if buffer["offset"]:
        flush()
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def spark_stream(
    spark, bootstrap: str, topic: str, sink: str, target: str | None, checkpoint: str
) -> tuple[float, float | None]:
    """Seconds end to end, and the steady-state rate: rows / trigger time over the micro-batches after the first."""
    frame = (
        spark.readStream.format("lakehouse_kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(BATCH))
        .option("includeHeaders", "false")  # the rows compared carry no headers (as in Spark's default)
        .load()
        .select(*COLUMNS)
    )
    writer = frame.writeStream.format(sink).option("checkpointLocation", checkpoint).trigger(availableNow=True)
    started = time.perf_counter()
    query = writer.start(target) if target else writer.start()
    query.awaitTermination()
    elapsed = time.perf_counter() - started
    if query.exception():
        raise query.exception()  # type: ignore[misc]
    steady = [p for p in query.recentProgress if p["batchId"] > 0 and p["numInputRows"]]
    rows = sum(p["numInputRows"] for p in steady)
    millis = sum(p["durationMs"]["triggerExecution"] for p in steady)
    return elapsed, (rows / (millis / 1000) if millis else None)


def warm_up(spark, bootstrap: str, topic: str, work: Path) -> None:
    """JVM JIT and Python workers for both the source and the Delta sink (imports, first table)."""
    frame = (
        spark.read.format("lakehouse_kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("includeHeaders", "false")
        .load()
        .select(*COLUMNS)
    )
    frame.count()
    frame.limit(50_000).write.format("lakehouse_delta").mode("append").save(str(work / "warm-up"))


def run(messages: int = 300_000) -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    from pipelines.spark import build_spark

    work = Path(tempfile.mkdtemp(prefix="bench-connectors-"))
    try:
        with private_broker(work / "broker") as bootstrap:
            topic = "bench.events"
            produced = produce(bootstrap, topic, messages)
            settings = load_settings("local", environ={"LAKEHOUSE__SPARK__MASTER": "local[2]"})
            spark = build_spark(settings, app_name="bench-connectors")
            warm_up(spark, bootstrap, topic, work)  # not part of any measured row
            raw = raw_consume(bootstrap, topic, produced)
            timings = {
                "raw confluent-kafka consume": (raw, produced / raw),
                "lakehouse_kafka -> noop sink (Spark)": spark_stream(
                    spark, bootstrap, topic, "noop", None, str(work / "cp-noop")
                ),
                "lakehouse_kafka -> lakehouse_delta sink (Spark)": spark_stream(
                    spark, bootstrap, topic, "lakehouse_delta", str(work / "delta-spark"), str(work / "cp-delta")
                ),
                "hand-written consumer -> write_deltalake": (
                    hand := hand_written_loop(bootstrap, topic, produced, str(work / "delta-hand")),
                    produced / hand,
                ),
            }
            assert DeltaTable(str(work / "delta-spark")).to_pyarrow_dataset().count_rows() == produced
            assert DeltaTable(str(work / "delta-hand")).to_pyarrow_dataset().count_rows() == produced
            spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = produced / timings["hand-written consumer -> write_deltalake"][0]
    return [
        {
            "path": name,
            "messages": produced,
            "seconds": f"{seconds:.1f}",
            "events/s end to end": f"{produced / seconds:,.0f}",
            "steady-state events/s": "-" if steady is None else f"{steady:,.0f}",
            "end to end vs loop": f"{produced / seconds / baseline:.2f}x",
            "steady state vs loop": "-" if steady is None else f"{steady / baseline:.2f}x",
        }
        for name, (seconds, steady) in timings.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    rows = run(args.messages)
    body = "\n".join(
        [
            "## Kafka -> Delta connectors (issue 3)",
            "",
            f"Machine: {machine()}. Data: {rows[0]['messages']:,} generated JSON events (~330 B), one topic with "
            f"{PARTITIONS} partitions on the embedded Tansu broker (same machine). Spark `local[2]`, AvailableNow, "
            f"maxOffsetsPerTrigger {BATCH:,}, includeHeaders=false (no row compared carries headers), after a "
            "warm-up of both connectors; one run each. End to end includes query start, the first micro-batch "
            "and stop; steady state is rows / trigger time of the micro-batches after the first (what a running "
            "stream sustains). Ratios compare with the hand-written loop (higher is faster).",
            "",
            markdown_table(
                rows,
                [
                    "path",
                    "messages",
                    "seconds",
                    "events/s end to end",
                    "steady-state events/s",
                    "end to end vs loop",
                    "steady state vs loop",
                ],
            ),
        ]
    )
    write_section("connectors", body)
    print(body)


if __name__ == "__main__":
    main()

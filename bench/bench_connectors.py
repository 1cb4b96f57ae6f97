"""Kafka -> Delta throughput: the project's Spark connectors against what a user would write instead.

One run, one topic, the same messages for every row (the synthetic generator's realistic JSON events,
~330 B each, 4 partitions, embedded Tansu broker):

1. raw confluent-kafka consume (one consumer, assign, batch consume): the ceiling for any reader;
2. ``lakehouse_kafka`` streaming source -> Spark's ``noop`` sink (Trigger.AvailableNow);
3. ``lakehouse_kafka`` -> ``lakehouse_delta`` streaming sink (AvailableNow, exactly-once commits);
4. hand-written loop: confluent-kafka consumer -> pyarrow table per 100k messages -> ``write_deltalake``.

Rows 2-4 write the same columns (key, value, topic, partition, offset, timestamp). Spark rows exclude
session start-up and one unmeasured pass of each Spark path (a stream runs warm for hours; the JIT needs a
few batches) but include query planning and start/stop. Every path runs ``--repeats`` times, interleaved;
the table shows medians, because a shared 2-core machine drifts by 10-20% between runs. The ratio columns
compare with row 4.

Run: ``.venv/bin/python -m bench.bench_connectors [--messages N] [--repeats R]``; rewrites its BENCHMARKS.md
section.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import machine, markdown_table, private_broker, sustained_rate, write_section
from pipelines.config import load_settings
from pipelines.generator import GeneratorSpec, generate

PARTITIONS = 4
BATCH = 200_000  # maxOffsetsPerTrigger
COLUMNS = ["key", "value", "topic", "partition", "offset", "timestamp"]
PATHS = (
    "raw confluent-kafka consume",
    "lakehouse_kafka -> noop sink (Spark)",
    "lakehouse_kafka -> lakehouse_delta sink (Spark)",
    "hand-written consumer -> write_deltalake",
)


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
    return elapsed, sustained_rate(query.recentProgress)


def warm_up(spark, bootstrap: str, topic: str, work: Path) -> None:
    """One full pass of each Spark path over the topic: the JVM's JIT and the Python workers (imports, first
    table) warm up, so the measured runs show what a long-running stream sustains. Not measured."""
    spark_stream(spark, bootstrap, topic, "noop", None, str(work / "cp-warm-noop"))
    spark_stream(spark, bootstrap, topic, "lakehouse_delta", str(work / "delta-warm"), str(work / "cp-warm-delta"))


def run(messages: int = 1_000_000, repeats: int = 3) -> list[dict[str, Any]]:
    """Every path ``repeats`` times, interleaved (so drift on a shared machine hits all alike); medians."""
    from deltalake import DeltaTable

    from pipelines.spark import build_spark

    work = Path(tempfile.mkdtemp(prefix="bench-connectors-"))
    samples: dict[str, list[tuple[float, float | None]]] = {name: [] for name in PATHS}
    try:
        with private_broker(work / "broker") as bootstrap:
            topic = "bench.events"
            produced = produce(bootstrap, topic, messages)
            settings = load_settings("local", environ={"LAKEHOUSE__SPARK__MASTER": "local[2]"})
            spark = build_spark(settings, app_name="bench-connectors")
            warm_up(spark, bootstrap, topic, work)
            for attempt in range(repeats):
                raw = raw_consume(bootstrap, topic, produced)
                samples[PATHS[0]].append((raw, produced / raw))
                for name, sink in ((PATHS[1], "noop"), (PATHS[2], "lakehouse_delta")):
                    target = None if sink == "noop" else str(work / f"delta-spark-{attempt}")
                    samples[name].append(
                        spark_stream(spark, bootstrap, topic, sink, target, str(work / f"cp-{name}-{attempt}"))
                    )
                    if target:
                        assert DeltaTable(target).to_pyarrow_dataset().count_rows() == produced
                hand_table = str(work / f"delta-hand-{attempt}")
                hand = hand_written_loop(bootstrap, topic, produced, hand_table)
                samples[PATHS[3]].append((hand, produced / hand))
                assert DeltaTable(hand_table).to_pyarrow_dataset().count_rows() == produced
                print(
                    f"run {attempt + 1}/{repeats}: "
                    + ", ".join(f"{n}: {produced / s[-1][0]:,.0f}/s" for n, s in samples.items())
                )
            spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {
        name: (
            statistics.median(seconds for seconds, _ in runs),
            None if any(rate is None for _, rate in runs) else statistics.median(rate for _, rate in runs if rate),
        )
        for name, runs in samples.items()
    }
    loop_seconds = medians[PATHS[3]][0]
    baseline = produced / loop_seconds
    return [
        {
            "path": name,
            "messages": f"{produced:,}",
            "median seconds": f"{seconds:.1f}",
            "events/s end to end": f"{produced / seconds:,.0f}",
            "steady-state events/s": "-" if steady is None else f"{steady:,.0f}",
            "end to end vs loop": f"{produced / seconds / baseline:.2f}x",
            "steady state vs loop": "-" if steady is None else f"{steady / baseline:.2f}x",
        }
        for name, (seconds, steady) in medians.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per path; the table shows medians")
    args = parser.parse_args()
    rows = run(args.messages, args.repeats)
    body = "\n".join(
        [
            "## Kafka -> Delta connectors (issue 3)",
            "",
            f"Machine: {machine()}. Data: {rows[0]['messages']} generated JSON events (~330 B), one topic with "
            f"{PARTITIONS} partitions on the embedded Tansu broker (same machine). Spark `local[2]` with the "
            "session settings of `conf/lakehouse.yaml` and bytecode in pyspark.zip (`./dev install`), AvailableNow, "
            f"maxOffsetsPerTrigger {BATCH:,}, includeHeaders=false (no row compared carries headers). One "
            "SparkSession; a full unmeasured pass of each Spark path first (JIT, Python workers), then "
            f"{args.repeats} interleaved runs of every path: medians. End to end includes query start, the first "
            "micro-batch and stop; steady state is rows / trigger time of the micro-batches after the first "
            "(what a running stream sustains). Ratios compare with the hand-written loop (higher is faster).",
            "",
            markdown_table(
                rows,
                [
                    "path",
                    "messages",
                    "median seconds",
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

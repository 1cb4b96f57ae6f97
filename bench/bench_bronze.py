"""Bronze ingestion: sustained events/s and produce-to-bronze latency, next to the raw consume rate.

One run on the embedded broker, Spark ``local[2]``, the configured topics:

1. raw confluent-kafka consume of the backlog (the ceiling for any reader);
2. backlog drain: N generated messages are published first, then the continuous bronze query
   (parse, validate, route, three Delta commits per batch) ingests them; events/s = N / time until
   every message is committed to bronze.events or bronze.quarantine;
3. latency: with the query caught up, messages are published at a steady rate; for each message,
   latency = commit time of the Delta version that made it visible - its Kafka (create) timestamp.

Run: ``.venv/bin/python -m bench.bench_bronze [--messages N] [--rate R] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

from bench.common import machine, markdown_table, private_broker, sustained_rate, write_section
from pipelines.config import Settings, load_settings
from pipelines.generator import GeneratorSpec, generate
from pipelines.lake import Lake


def _settings(work: Path, bootstrap: str, trigger: str) -> Settings:
    return load_settings(
        "local",
        environ={
            "LAKEHOUSE__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "LAKEHOUSE__LAKE__ROOT": str(work / "lake"),
            "LAKEHOUSE__SPARK__MASTER": "local[2]",
            "LAKEHOUSE__BRONZE__TRIGGER_INTERVAL": trigger,
        },
    )


def _messages(settings: Settings, count: int, seed: int):
    """Exactly ``count`` generated messages (the user count is grown until the stream is long enough)."""
    users = max(1, count // 90)
    while True:
        stream, _ = generate(
            GeneratorSpec(seed=seed, tenants=1, users_per_tenant=users, days=3), settings.kafka.topic_for_event_type
        )
        if len(stream) >= count:
            return stream[:count]
        users = int(users * 1.2) + 1


def _publish(settings: Settings, bootstrap: str, messages, rate: float | None = None) -> None:
    from pipelines.producer import EventProducer

    started = time.monotonic()
    with EventProducer(settings, bootstrap) as producer:
        for index, message in enumerate(messages, start=1):
            producer.send(message.topic, message.value, message.key, message.headers)
            if rate:
                ahead = index / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)


def _raw_consume(settings: Settings, bootstrap: str, expected: int) -> float:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    consumer.assign(
        [TopicPartition(topic, p, 0) for topic, spec in settings.kafka.topics.items() for p in range(spec.partitions)]
    )
    started, seen = time.perf_counter(), 0
    while seen < expected:
        seen += sum(1 for m in consumer.consume(10_000, timeout=1.0) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def _landed(lake: Lake) -> int:
    from deltalake import DeltaTable

    total = 0
    for path in (lake.bronze_events, lake.bronze_quarantine):
        if DeltaTable.is_deltatable(path):
            total += DeltaTable(path).to_pyarrow_dataset().count_rows()
    return total


def _wait_for(lake: Lake, expected: int, timeout_s: float = 1800) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _landed(lake) >= expected:
            return time.monotonic()
        time.sleep(0.25)
    raise TimeoutError(f"bronze did not reach {expected} rows in {timeout_s:.0f}s")


def _latencies(lake: Lake, since_version: int) -> list[float]:
    """Per row of bronze.events added after ``since_version``: commit time - Kafka timestamp (seconds)."""
    from deltalake import DeltaTable

    table = DeltaTable(lake.bronze_events)
    seen_files = set(DeltaTable(lake.bronze_events, version=since_version).file_uris())
    latencies: list[float] = []
    for entry in sorted(table.history(), key=lambda h: h["version"]):
        version = entry["version"]
        if version <= since_version:
            continue
        committed = dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC)
        files = set(DeltaTable(lake.bronze_events, version=version).file_uris())
        for path in files - seen_files:
            stamps = pq.read_table(path, columns=["kafka_timestamp"]).column(0).to_pylist()
            latencies.extend((committed - ts).total_seconds() for ts in stamps)
        seen_files = files
    return latencies


def run(messages: int = 600_000, rate: float = 5_000, seconds: float = 30, trigger: str = "1 second") -> dict[str, Any]:
    from deltalake import DeltaTable

    from pipelines.broker import ensure_topics
    from pipelines.bronze import start_bronze
    from pipelines.spark import build_spark

    work = Path(tempfile.mkdtemp(prefix="bench-bronze-"))
    try:
        with private_broker(work / "broker") as bootstrap:
            settings = _settings(work, bootstrap, trigger)
            ensure_topics(settings, bootstrap)
            backlog = _messages(settings, messages, seed=9)
            _publish(settings, bootstrap, backlog)
            raw_seconds = _raw_consume(settings, bootstrap, len(backlog))

            spark = build_spark(settings, app_name="bench-bronze")
            lake = Lake(settings)
            started = time.monotonic()
            query, recorder = start_bronze(spark, settings, bootstrap)
            drained = _wait_for(lake, len(backlog)) - started
            sustained = sustained_rate(query.recentProgress)

            version = DeltaTable(lake.bronze_events).version()
            steady = _messages(settings, int(rate * seconds), seed=10)
            publisher = threading.Thread(target=_publish, args=(settings, bootstrap, steady, rate))
            publisher.start()
            publisher.join()
            _wait_for(lake, len(backlog) + len(steady))
            query.stop()
            recorder.detach(spark)
            latencies = sorted(_latencies(lake, version))
            spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "messages": len(backlog),
        "raw_consume_eps": len(backlog) / raw_seconds,
        "bronze_eps": len(backlog) / drained,
        "sustained_eps": sustained,
        "drain_seconds": drained,
        "steady_rate": rate,
        "steady_messages": len(steady),
        "latency_p50": quantiles[49],
        "latency_p95": quantiles[94],
        "trigger": trigger,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600_000, help="backlog (3 micro-batches at the default limit)")
    parser.add_argument("--rate", type=float, default=5_000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    result = run(args.messages, args.rate, args.seconds)
    rows = [
        {"measure": "raw confluent-kafka consume (baseline)", "value": f"{result['raw_consume_eps']:,.0f} events/s"},
        {
            "measure": "bronze continuous, backlog drain (from query start)",
            "value": f"{result['bronze_eps']:,.0f} events/s "
            f"({result['bronze_eps'] / result['raw_consume_eps']:.3f}x raw)",
        },
        {
            "measure": "bronze backlog, micro-batches after the first (sustained)",
            "value": "-"
            if result["sustained_eps"] is None
            else f"{result['sustained_eps']:,.0f} events/s "
            f"({result['sustained_eps'] / result['raw_consume_eps']:.3f}x raw)",
        },
        {
            "measure": f"produce-to-bronze latency p50 at {result['steady_rate']:,.0f} events/s",
            "value": f"{result['latency_p50']:.2f} s",
        },
        {
            "measure": f"produce-to-bronze latency p95 at {result['steady_rate']:,.0f} events/s",
            "value": f"{result['latency_p95']:.2f} s",
        },
    ]
    body = "\n".join(
        [
            "## Bronze streaming ingestion (issue 4)",
            "",
            f"Machine: {machine()}. Data: {result['messages']:,} generated events as backlog, then "
            f"{result['steady_messages']:,} at a steady {result['steady_rate']:,.0f}/s; configured topics on the "
            f"embedded Tansu broker; Spark `local[2]`, processingTime trigger `{result['trigger']}`. Latency = Delta "
            "commit time of the version that made the row visible - Kafka create timestamp.",
            "",
            markdown_table(rows, ["measure", "value"]),
        ]
    )
    write_section("bronze", body)
    print(body)


if __name__ == "__main__":
    main()

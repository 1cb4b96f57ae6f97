"""Bronze ingestion: sustained events/s next to the raw consume rate, and produce-to-bronze latency.

One run, on its own embedded Apache Kafka broker, metastore database and Spark ``local[2]`` (all stopped by
PID at the end), with the configured topics and the real bronze query (``pipelines.bronze.start_bronze``:
Spark's Kafka source, parse + validate + route in ``mapInArrow``, three delta-spark commits per batch; beside
it, as in ``bronze run``, the lag rows appended at most every ``LAG_FLUSH_SECONDS``):

1. backlog: N generated messages are published, then read once by a plain confluent-kafka consumer (the
   ceiling for any reader; same backlog, same run);
2. drain: the continuous bronze query ingests that backlog (``maxOffsetsPerTrigger`` per micro-batch).
   Sustained events/s = rows / trigger time of the micro-batches after the first (query start and cold
   workers excluded), as a ratio to the raw consume; the drain from query start is reported too;
3. latency: with the query caught up (trigger ``--trigger``, default 1 second), a separate process publishes
   at a steady ``--rate`` for ``--seconds``. For every row of bronze.events added in that phase, latency =
   timestamp of the Delta commit that made it visible (commitInfo in ``_delta_log``, what
   ``DESCRIBE HISTORY`` shows) - its Kafka create timestamp (set by the producer when it sent the message).

Run: ``.venv/bin/python -m bench.bench_bronze [--messages N] [--rate R] [--seconds S] [--trigger T]``; rewrites
the ``bronze`` section of BENCHMARKS.md (``--validation``: labelled as a small validation run, not a result).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import queue
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

from bench.common import (
    EVENTS_PER_USER_DAY,
    bench_environ,
    machine,
    markdown_table,
    private_broker,
    private_spark,
    section_heading,
    sustained_rate,
    write_section,
)
from pipelines.config import Settings, load_settings
from pipelines.platform.lake import Lake
from pipelines.synthetic.generator import GeneratorSpec, generate

DAYS = 3


def _settings(work: Path, bootstrap: str, trigger: str, max_offsets: int | None) -> Settings:
    overrides = {
        "LAKEHOUSE__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LAKEHOUSE__SPARK__MASTER": "local[2]",
        "LAKEHOUSE__BRONZE__TRIGGER_INTERVAL": trigger,
    }
    if max_offsets:
        overrides["LAKEHOUSE__BRONZE__MAX_OFFSETS_PER_TRIGGER"] = str(max_offsets)
    return load_settings("local", environ=bench_environ(work, **overrides))


def _messages(settings: Settings, count: int, seed: int) -> list:
    """Exactly ``count`` generated messages (the user count is grown until the stream is long enough); event
    times are the last days before today, so none is quarantined for its age."""
    users = max(1, round(count / (DAYS * EVENTS_PER_USER_DAY) * 1.05))
    start = date.today() - timedelta(days=DAYS + 1)
    while True:
        spec = GeneratorSpec(seed=seed, tenants=1, users_per_tenant=users, days=DAYS, start_date=start)
        stream, _ = generate(spec, settings.kafka.topic_for_event_type)
        if len(stream) >= count:
            return stream[:count]
        users = int(users * count / max(len(stream), 1) * 1.05) + 1


def _publish(settings: Settings, bootstrap: str, messages: list, rate: float | None = None) -> float:
    """Publish (at ``rate`` messages/s, or as fast as possible) and wait for every ack; returns the seconds."""
    from pipelines.kafka.producer import EventProducer

    with EventProducer(settings, bootstrap) as producer:
        started = time.monotonic()
        for index, message in enumerate(messages, start=1):
            producer.send(message.topic, message.value, message.key, message.headers)
            if rate:
                ahead = index / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    time.sleep(ahead)
    return time.monotonic() - started


def _steady_publisher(settings: Settings, bootstrap: str, count: int, rate: float, results: Any) -> None:
    """Child process of the latency phase: generate, then publish at ``rate`` (no GIL shared with the driver)."""
    messages = _messages(settings, count, seed=10)
    results.put({"messages": len(messages), "seconds": _publish(settings, bootstrap, messages, rate)})


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


@dataclass
class Commit:
    version: int
    timestamp_ms: int  # inCommitTimestamp when enabled, else commitInfo.timestamp: what DESCRIBE HISTORY shows
    files: list[tuple[str, int]]  # added data files: (path relative to the table, rows)


@dataclass
class DeltaLogTail:
    """The commits of a local Delta table, read in order from its ``_delta_log/<version>.json`` files.

    Bronze only appends, so the table's row count is the sum of the rows its commits added.
    """

    path: str
    commits: list[Commit] = field(default_factory=list)
    rows: int = 0

    def poll(self) -> list[Commit]:
        """Read every commit written since the last poll."""
        new = []
        log = Path(self.path) / "_delta_log"
        while True:
            version = self.commits[-1].version + 1 if self.commits else 0
            try:
                text = (log / f"{version:020d}.json").read_text()
            except FileNotFoundError:
                break
            actions = [json.loads(line) for line in text.splitlines() if line.strip()]
            info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
            files = [(a["add"]["path"], self._rows(a["add"])) for a in actions if "add" in a]
            commit = Commit(version, int(info.get("inCommitTimestamp") or info["timestamp"]), files)
            self.commits.append(commit)
            self.rows += sum(rows for _, rows in files)
            new.append(commit)
        return new

    def _rows(self, add: dict[str, Any]) -> int:
        stats = json.loads(add.get("stats") or "{}")
        if "numRecords" in stats:
            return int(stats["numRecords"])
        return pq.read_metadata(Path(self.path) / unquote(add["path"])).num_rows

    def kafka_timestamps_us(self, commit: Commit) -> list[int]:
        """Kafka create timestamps (microseconds since the epoch) of the rows ``commit`` added."""
        stamps: list[int] = []
        for relative, _ in commit.files:
            column = pq.read_table(Path(self.path) / unquote(relative), columns=["kafka_timestamp"]).column(0)
            unit = column.type.unit  # delta-spark may write INT96 (read as naive ns, UTC) or micros
            values = column.cast(pa.timestamp(unit)).cast(pa.int64()).to_pylist()
            scale = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 0.001}[unit]
            stamps.extend(int(v * scale) for v in values if v is not None)
        return stamps


def _wait_landed(
    tails: list[DeltaLogTail], expected: int, query: Any, flush: Callable[[], None], timeout_s: float = 3600
) -> int:
    """Poll the tables' logs until they hold ``expected`` rows; returns the timestamp (ms) of the commit that
    completed them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for tail in tails:
            tail.poll()
        if sum(t.rows for t in tails) >= expected:
            return max(t.commits[-1].timestamp_ms for t in tails if t.commits)
        if not query.isActive:
            raise RuntimeError(f"the bronze query stopped: {query.exception()}")
        flush()
        time.sleep(0.1)
    raise TimeoutError(f"bronze did not reach {expected} rows in {timeout_s:.0f}s")


def _wait_idle(query: Any, timeout_s: float = 120) -> None:
    """Until the query has no data to read and no trigger running (caught up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = query.status
        if not status["isDataAvailable"] and not status["isTriggerActive"]:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the bronze query did not catch up in {timeout_s:.0f}s")


class _Phases(dict):
    """Phase -> seconds, each printed when it is recorded (to estimate longer runs from short ones)."""

    def __setitem__(self, phase: str, seconds: float) -> None:
        super().__setitem__(phase, seconds)
        print(f"[bench] {phase}: {seconds:.1f} s", file=sys.stderr, flush=True)


def _print_breakdown(name: str, progress: list[dict[str, Any]]) -> None:
    """Median of each part of the micro-batches' time (Spark's durationMs), and rows per batch."""
    if not progress:
        return
    keys = sorted({key for p in progress for key in p["durationMs"]})
    parts = ", ".join(f"{k} {statistics.median(p['durationMs'].get(k, 0) for p in progress) / 1000:.2f}" for k in keys)
    rows = statistics.median(p["numInputRows"] for p in progress)
    print(f"[bench] {name}: {len(progress)} batches, median {rows:,.0f} rows, seconds: {parts}", file=sys.stderr)


def _percentile(sorted_values: list[float], q: int) -> float:
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[q - 1]


def run(
    messages: int = 1_000_000,
    rate: float = 5_000,
    seconds: float = 60,
    trigger: str = "1 second",
    max_offsets: int | None = None,
) -> dict[str, Any]:
    from pipelines.bronze import ensure_tables, start_bronze
    from pipelines.kafka.topics import ensure_topics

    phases = _Phases()
    work = Path(tempfile.mkdtemp(prefix="bench-bronze-"))
    try:
        clock = time.monotonic()
        with private_broker(work / "broker") as bootstrap:
            settings = _settings(work, bootstrap, trigger, max_offsets)
            ensure_topics(settings, bootstrap)
            phases["broker start, topics"] = time.monotonic() - clock
            clock = time.monotonic()
            backlog = _messages(settings, messages, seed=9)
            phases["generate backlog"] = time.monotonic() - clock
            clock = time.monotonic()
            publish_seconds = _publish(settings, bootstrap, backlog)
            phases["publish backlog"] = time.monotonic() - clock
            raw_seconds = _raw_consume(settings, bootstrap, len(backlog))
            phases["raw consume"] = raw_seconds

            clock = time.monotonic()
            extra = {"spark.sql.streaming.numRecentProgressUpdates": "10000"}
            with private_spark(settings, "bench-bronze", extra) as spark:
                lake = Lake(settings)
                ensure_tables(spark, settings)  # table creation and catalog names: not part of the drain
                phases["spark + metastore start, tables"] = time.monotonic() - clock
                events, quarantine = DeltaLogTail(lake.bronze_events), DeltaLogTail(lake.bronze_quarantine)
                started_ms = time.time() * 1000
                query, recorder = start_bronze(spark, settings, bootstrap)
                flush = functools.partial(recorder.flush_when_due, spark)  # what run_bronze's loop does
                try:
                    drained_ms = _wait_landed([events, quarantine], len(backlog), query, flush)
                    phases["bronze drain"] = (drained_ms - started_ms) / 1000
                    _wait_idle(query)
                    # read once idle: a batch's progress report comes after its commits, so a read right after
                    # the last commit misses the last batch
                    drain_progress = list(query.recentProgress)
                    clock = time.monotonic()
                    since_version = events.commits[-1].version
                    since_batch = max(p["batchId"] for p in drain_progress)
                    results = multiprocessing.get_context("spawn").Queue()
                    publisher = multiprocessing.get_context("spawn").Process(
                        target=_steady_publisher, args=(settings, bootstrap, int(rate * seconds), rate, results)
                    )
                    publisher.start()
                    try:
                        deadline = time.monotonic() + seconds * 5 + 600
                        while True:
                            with contextlib.suppress(queue.Empty):
                                published = results.get(timeout=0.5)
                                break
                            if time.monotonic() > deadline:
                                raise TimeoutError(f"the steady publisher sent nothing back in {seconds * 5 + 600} s")
                            flush()
                    finally:
                        publisher.join(timeout=60)
                        if publisher.is_alive():
                            publisher.terminate()
                            publisher.join()
                    if publisher.exitcode != 0:
                        raise RuntimeError(f"the steady publisher (PID {publisher.pid}) exited {publisher.exitcode}")
                    _wait_landed([events, quarantine], len(backlog) + published["messages"], query, flush)
                    phases["latency phase (generate + publish + land)"] = time.monotonic() - clock
                    with contextlib.suppress(TimeoutError):
                        _wait_idle(query, timeout_s=60)  # stop between batches, not inside one
                    steady_progress = [
                        p for p in query.recentProgress if p["batchId"] > since_batch and p["numInputRows"]
                    ]
                finally:
                    query.stop()
                    recorder.detach(spark)
        latencies = sorted(
            (commit.timestamp_ms * 1000 - stamp) / 1e6
            for commit in events.commits
            if commit.version > since_version
            for stamp in events.kafka_timestamps_us(commit)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    later = [p for p in drain_progress if p["batchId"] > 0 and p["numInputRows"]]
    _print_breakdown("drain micro-batches after the first", later)
    _print_breakdown("latency-phase micro-batches", steady_progress)
    batch_seconds = [p["durationMs"]["triggerExecution"] / 1000 for p in steady_progress]
    add_batch_seconds = [p["durationMs"].get("addBatch", 0) / 1000 for p in steady_progress]
    batch_rows = [p["numInputRows"] for p in steady_progress]
    return {
        "messages": len(backlog),
        "publish_eps": len(backlog) / publish_seconds,
        "raw_consume_eps": len(backlog) / raw_seconds,
        "drain_seconds": phases["bronze drain"],
        "drain_eps": len(backlog) / phases["bronze drain"],
        "sustained_eps": sustained_rate(drain_progress),
        "sustained_batches": len(later),
        "sustained_rows": sum(p["numInputRows"] for p in later),
        "max_offsets": settings.bronze.max_offsets_per_trigger,
        "trigger": trigger,
        "steady_rate": rate,
        "steady_messages": published["messages"],
        "steady_publish_eps": published["messages"] / published["seconds"],
        "latency_rows": len(latencies),
        "latency_p50": _percentile(latencies, 50),
        "latency_p95": _percentile(latencies, 95),
        "latency_p99": _percentile(latencies, 99),
        "latency_max": latencies[-1],
        "steady_batches": len(steady_progress),
        "steady_batch_seconds": statistics.median(batch_seconds) if batch_seconds else None,
        "steady_batch_rows": statistics.median(batch_rows) if batch_rows else None,
        "steady_add_batch_seconds": statistics.median(add_batch_seconds) if add_batch_seconds else None,
        "phases": phases,
    }


def section(result: dict[str, Any], validation: bool = False) -> str:
    raw = result["raw_consume_eps"]
    sustained = result["sustained_eps"]
    rows = [
        {"measure": "raw confluent-kafka consume of the backlog (baseline)", "value": f"{raw:,.0f} events/s"},
        {
            "measure": f"bronze, sustained: {result['sustained_batches']} micro-batches after the first "
            f"({result['sustained_rows']:,} rows)",
            "value": "- (a single micro-batch)"
            if sustained is None
            else f"{sustained:,.0f} events/s (**{sustained / raw:.3f}x raw**)",
        },
        {
            "measure": "bronze, whole backlog drain from query start",
            "value": f"{result['drain_eps']:,.0f} events/s ({result['drain_eps'] / raw:.3f}x raw; "
            f"{result['drain_seconds']:.1f} s)",
        },
    ]
    for q in (50, 95, 99):
        rows.append(
            {
                "measure": f"produce-to-visible latency p{q} at {result['steady_rate']:,.0f} events/s",
                "value": f"**{result[f'latency_p{q}']:.2f} s**" if q == 95 else f"{result[f'latency_p{q}']:.2f} s",
            }
        )
    rows.append({"measure": "produce-to-visible latency, max", "value": f"{result['latency_max']:.2f} s"})
    if result["steady_batch_seconds"] is not None:
        rows.append(
            {
                "measure": "micro-batches during the latency phase: count (median trigger time, of which "
                "foreachBatch; median rows)",
                "value": f"{result['steady_batches']} ({result['steady_batch_seconds']:.2f} s, "
                f"{result['steady_add_batch_seconds']:.2f} s; {result['steady_batch_rows']:,.0f} rows)",
            }
        )
    heading = section_heading("Bronze streaming ingestion: Kafka -> bronze (issue 4)", validation)
    return "\n".join(
        [
            heading,
            "",
            f"Machine: {machine()}. Stack: embedded Apache Kafka 4.4 broker (one node, same machine), Spark's "
            "Kafka source, pyspark 4.2 `local[2]`, delta-spark 4.4, Hive metastore on Derby. Data: "
            f"{result['messages']:,} generated events (1 tenant, {DAYS} days, ~1% malformed, ~2% duplicates) "
            f"published first as a backlog, then read by a plain confluent-kafka consumer and by the bronze query "
            f"(`maxOffsetsPerTrigger` {result['max_offsets']:,}, processingTime trigger `{result['trigger']}`); "
            f"then {result['steady_messages']:,} more published by a separate process at a steady "
            f"{result['steady_rate']:,.0f}/s (achieved {result['steady_publish_eps']:,.0f}/s) into the caught-up "
            "query. Sustained = rows / trigger time of the micro-batches after the first. Latency, over the "
            f"{result['latency_rows']:,} bronze.events rows of that phase = timestamp of the Delta commit that made "
            "the row visible (commitInfo in `_delta_log`) - the row's Kafka create timestamp.",
            "",
            markdown_table(rows, ["measure", "value"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="backlog size (default 1000000)")
    parser.add_argument("--rate", type=float, default=5_000, help="steady publish rate (default 5000/s)")
    parser.add_argument("--seconds", type=float, default=60, help="steady publishing time (default 60)")
    parser.add_argument("--trigger", default="1 second", help="processingTime trigger (default '1 second')")
    parser.add_argument(
        "--max-offsets-per-trigger", type=int, default=None, help="micro-batch bound (default: the profile's)"
    )
    parser.add_argument("--validation", action="store_true", help="label the section as a small validation run")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(args.messages, args.rate, args.seconds, args.trigger, args.max_offsets_per_trigger)
    print(f"[bench] total: {time.monotonic() - started:.1f} s", file=sys.stderr)
    body = section(result, args.validation)
    write_section("bronze", body)
    print(body)


if __name__ == "__main__":
    main()

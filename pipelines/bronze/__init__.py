"""Bronze: exactly-once streaming ingestion from Kafka into bronze.events and bronze.quarantine.

Every message Kafka delivers ends up in exactly one of the two tables, once:

* Spark's own Kafka source (``format("kafka")``) reads every configured topic; offsets live in the
  streaming checkpoint (``Lake.checkpoint(query_name)``), ``maxOffsetsPerTrigger`` bounds a micro-batch
  and ``failOnDataLoss`` stops the query when Kafka deleted offsets it had not read yet;
* each micro-batch (``foreachBatch``) is parsed ONCE (``mapInArrow``, kept while the batch is written):
  executors validate every message against the schema registry and route it to events or quarantine;
* routing is a pure function of the batch: the timestamp limits are checked against the batch's own time
  (``current_timestamp()`` in a stream is the batch timestamp Spark records in its offset log), so a batch
  replayed after a crash routes every message exactly as the first attempt did and gets the same
  ``ingested_at``;
* delta-spark then appends to bronze.events, bronze.quarantine and last ops.bronze_progress, each write
  tagged with Delta's transaction id (``txnAppId`` = the streaming query id, ``txnVersion`` = batch id).
  A batch Spark replays after a crash is skipped by the tables that already hold it, so a kill at any
  point neither loses nor doubles rows.

Duplicates are kept (bronze equals what Kafka delivered); silver deduplicates.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
from pyspark.sql.streaming import StreamingQueryListener

from pipelines.config import Settings
from pipelines.contracts.events import HEADER_TRACE_ID
from pipelines.contracts.schemas import SchemaRegistry, Violation
from pipelines.platform.lake import (
    BRONZE_EVENTS_PARTITIONS,
    BRONZE_EVENTS_SCHEMA,
    BRONZE_QUARANTINE_PARTITIONS,
    BRONZE_QUARANTINE_SCHEMA,
    Lake,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

ROUTE = "_route"
ROUTE_EVENT = "event"
ROUTE_QUARANTINE = "quarantine"
INGESTED_AT = "ingested_at"  # added to the Kafka rows: the micro-batch's timestamp from the offset log

# What the executors emit: one row per Kafka message, with the columns of both tables.
_QUARANTINE_ONLY = [f for f in BRONZE_QUARANTINE_SCHEMA if f.name not in BRONZE_EVENTS_SCHEMA.names]
PARSED_SCHEMA = pa.schema([pa.field(ROUTE, pa.string()), *BRONZE_EVENTS_SCHEMA, *_QUARANTINE_ONLY])

PROGRESS_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("batch_id", pa.int64()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("min_offset", pa.int64()),
        ("max_offset", pa.int64()),
        ("events", pa.int64()),
        ("quarantined", pa.int64()),
        ("max_occurred_at", pa.timestamp("us", tz="UTC")),
        ("max_kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("max_ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
LAG_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("batch_id", pa.int64()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("committed_offset", pa.int64()),
        ("latest_offset", pa.int64()),
        ("lag", pa.int64()),
        ("reported_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class TimestampLimits:
    """Events whose occurred_at is absurd relative to ingest time are quarantined, not stored."""

    max_age: dt.timedelta
    max_future_skew: dt.timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> TimestampLimits:
        return cls(
            dt.timedelta(days=settings.bronze.max_event_age_days),
            dt.timedelta(minutes=settings.bronze.max_future_skew_minutes),
        )


# --- executor side: parse, validate, write files ---------------------------------------------------------


_SORTED_JSON = msgspec.json.Encoder(order="sorted")
_NON_FINITE = (b"NaN", b"Infinity")  # json-only literals; msgspec would write null


def _json_or_none(value: Any, raw: bytes) -> str | None:
    """Compact sorted-key JSON of a parsed sub-document (msgspec: ~5x json.dumps on this hot path).

    Same JSON values as ``json.dumps(sort_keys=True)``; float spelling can differ (1e16 vs 1e+16).
    Messages with NaN/Infinity literals or unencodable strings (lone surrogates) take json.dumps.
    """
    if value is None:
        return None
    if not any(literal in raw for literal in _NON_FINITE):
        try:
            return _SORTED_JSON.encode(value).decode()
        except (msgspec.EncodeError, UnicodeEncodeError, OverflowError, TypeError):
            pass
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _headers_json(headers: list[dict[str, Any]] | None) -> str | None:
    if not headers:
        return None
    return json.dumps(
        [
            {"key": h["key"], "value": None if h["value"] is None else h["value"].decode("utf-8", "backslashreplace")}
            for h in headers
        ],
        ensure_ascii=False,
    )


def _trace_id(headers: list[dict[str, Any]] | None) -> str | None:
    for header in headers or ():
        if header["key"] == HEADER_TRACE_ID and header["value"] is not None:
            return header["value"].decode("utf-8", "replace")
    return None


def _parse_occurred_at(text: str) -> dt.datetime:
    # The registry already checked RFC 3339 and UTC; fromisoformat handles "Z" and "+00:00".
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def _summary(violations: list[Violation]) -> str:
    first = violations[0]
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"{first.path}: {first.message}{more}"


def make_parser(
    registry: SchemaRegistry, limits: TimestampLimits
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function of one micro-batch: Kafka rows in, routed rows with both tables' columns out."""

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield parse_batch(batch, registry, limits)

    return parse


def parse_batch(batch: pa.RecordBatch, registry: SchemaRegistry, limits: TimestampLimits) -> pa.RecordBatch:
    """Validate every message of one Arrow batch of Kafka rows; never drops a row.

    The rows carry the micro-batch's timestamp in ``ingested_at`` (one value for the whole batch, from the
    offset log): the reference time of the timestamp limits.
    """
    if batch.num_rows == 0:
        return pa.RecordBatch.from_pylist([], schema=PARSED_SCHEMA)
    ingested = batch.column(INGESTED_AT).cast(pa.timestamp("us", tz="UTC"))
    ingested_at = ingested[0].as_py()
    values = batch.column("value").to_pylist()
    keys = batch.column("key").to_pylist()
    headers = batch.column("headers").to_pylist()
    oldest, newest = ingested_at - limits.max_age, ingested_at + limits.max_future_skew
    columns: dict[str, list[Any]] = {name: [] for name in PARSED_SCHEMA.names}
    for index, value in enumerate(values):
        violations: list[Violation]
        event: dict[str, Any] | None = None
        if value is None:
            violations = [Violation("$", "message has no value (null or tombstone)")]
        else:
            event, violations = registry.validate_json(value)
        occurred = None
        if event is not None and not violations:
            occurred = _parse_occurred_at(event["occurred_at"])
            if occurred < oldest:
                violations = [Violation("$.occurred_at", f"absurd timestamp: older than {limits.max_age.days} days")]
            elif occurred > newest:
                violations = [Violation("$.occurred_at", f"absurd timestamp: more than {limits.max_future_skew} ahead")]
        row_headers = headers[index]
        if violations:
            best = event if isinstance(event, dict) else {}
            event_type, tenant = best.get("event_type"), best.get("tenant_id")
            _append_quarantine(
                columns,
                key=keys[index],
                headers=_headers_json(row_headers),
                errors=json.dumps([{"path": v.path, "message": v.message} for v in violations], ensure_ascii=False),
                summary=_summary(violations),
                event_type=event_type if isinstance(event_type, str) else None,
                tenant=tenant if isinstance(tenant, str) else None,
                ingest_date=ingested_at.date(),
            )
        else:
            assert event is not None and occurred is not None
            _append_event(columns, event, occurred, value, _trace_id(row_headers))
    coordinates = {
        "topic": batch.column("topic"),
        "partition": batch.column("partition"),
        "offset": batch.column("offset"),
        "kafka_timestamp": batch.column("timestamp").cast(pa.timestamp("us", tz="UTC")),
        "raw_value": batch.column("value"),  # every row keeps its bytes as received, in either table
        "ingested_at": ingested,
    }
    arrays = [
        coordinates[field.name].cast(field.type)
        if field.name in coordinates
        else pa.array(columns[field.name], type=field.type)
        for field in PARSED_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=PARSED_SCHEMA)


_EVENT_FIELDS = ("event_id", "event_type", "version", "tenant_id", "user_id", "anonymous_id", "session_id")


def _append_event(
    columns: dict[str, list[Any]], event: dict[str, Any], occurred: dt.datetime, raw: bytes, trace_id: str | None
) -> None:
    columns[ROUTE].append(ROUTE_EVENT)
    for name in _EVENT_FIELDS:
        columns[name].append(event.get(name))
    columns["occurred_at"].append(occurred)
    columns["event_date"].append(occurred.date())
    columns["properties"].append(_json_or_none(event.get("properties"), raw))
    columns["context"].append(_json_or_none(event.get("context"), raw))
    columns["trace_id"].append(trace_id)
    for name in ("raw_key", "headers", "errors", "error_summary", "ingest_date"):
        columns[name].append(None)


def _append_quarantine(columns: dict[str, list[Any]], **row: Any) -> None:
    columns[ROUTE].append(ROUTE_QUARANTINE)
    for name in (*_EVENT_FIELDS, "occurred_at", "event_date", "properties", "context", "trace_id"):
        columns[name].append(None)
    columns["event_type"][-1] = row["event_type"]
    columns["tenant_id"][-1] = row["tenant"]
    columns["raw_key"].append(row["key"])
    columns["headers"].append(row["headers"])
    columns["errors"].append(row["errors"])
    columns["error_summary"].append(row["summary"])
    columns["ingest_date"].append(row["ingest_date"])


# --- driver side: tables, micro-batches, the query ---------------------------------------------


def ensure_tables(spark: SparkSession, settings: Settings) -> None:
    """Create the bronze and ops tables on first run and name them in the catalog (no-op afterwards)."""
    from pipelines.platform.catalog import ensure_table

    for (layer, name), schema, partitions in (
        (("bronze", "events"), BRONZE_EVENTS_SCHEMA, BRONZE_EVENTS_PARTITIONS),
        (("bronze", "quarantine"), BRONZE_QUARANTINE_SCHEMA, BRONZE_QUARANTINE_PARTITIONS),
        (("ops", "bronze_progress"), PROGRESS_SCHEMA, ["topic"]),
        (("ops", "bronze_lag"), LAG_SCHEMA, ["topic"]),
    ):
        ensure_table(spark, settings, layer, name, schema, partitions)


class BatchWriter:
    """The foreachBatch function: one parse of the micro-batch, then three idempotent Delta appends.

    Every write carries Delta's transaction id (``txnAppId`` = the streaming query id, ``txnVersion`` = the
    batch id): when Spark replays a batch after a crash, each table that already committed it skips the
    write, and the others write it - so a kill between two commits neither loses nor doubles a row. The
    progress rows go last: a progress row means both data commits of its batch are in.
    """

    def __init__(self, settings: Settings, checkpoint: str, registry: SchemaRegistry, limits: TimestampLimits) -> None:
        self.lake = Lake(settings)
        self.checkpoint = checkpoint
        self.registry = registry
        self.limits = limits
        self._query_id: str | None = None

    def query_id(self, spark: SparkSession) -> str:
        """The query's id from its checkpoint (stable across restarts, new with a new checkpoint)."""
        if self._query_id is None:
            text = spark.read.text(f"{self.checkpoint}/metadata").first()
            if text is None:
                raise RuntimeError(f"streaming checkpoint {self.checkpoint} has no metadata file")
            self._query_id = str(json.loads(text[0])["id"])
        return self._query_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        spark = batch.sparkSession
        parsed = batch.mapInArrow(make_parser(self.registry, self.limits), _spark_schema(PARSED_SCHEMA))
        parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)  # parsed once, read by three writes
        try:
            is_event = F.col(ROUTE) == ROUTE_EVENT
            progress = (
                parsed.groupBy("topic", "partition")
                .agg(
                    F.min("offset").alias("min_offset"),
                    F.max("offset").alias("max_offset"),
                    F.sum(is_event.cast("long")).alias("events"),
                    F.sum((~is_event).cast("long")).alias("quarantined"),
                    F.max("occurred_at").alias("max_occurred_at"),
                    F.max("kafka_timestamp").alias("max_kafka_timestamp"),
                    F.max("ingested_at").alias("max_ingested_at"),
                )
                .orderBy("topic", "partition")
                .collect()
            )
            if not progress:
                return
            txn = {"txnAppId": self.query_id(spark), "txnVersion": str(batch_id)}
            # One file per table partition and batch: rows of a (tenant, day, type) arrive from every Kafka
            # partition, so without the shuffle each reading task wrote its own small file into each of them.
            events = parsed.where(is_event).select(BRONZE_EVENTS_SCHEMA.names)
            self._append(events.repartition(*BRONZE_EVENTS_PARTITIONS), self.lake.bronze_events, txn)
            quarantine = parsed.where(~is_event).select(BRONZE_QUARANTINE_SCHEMA.names)
            self._append(quarantine.repartition(*BRONZE_QUARANTINE_PARTITIONS), self.lake.bronze_quarantine, txn)
            rows = [(txn["txnAppId"], batch_id, *row) for row in progress]
            self._append(spark.createDataFrame(rows, _spark_schema(PROGRESS_SCHEMA)), self.lake.bronze_progress, txn)
        finally:
            parsed.unpersist()
        counted = sum(r["events"] + r["quarantined"] for r in progress)
        log.info("bronze batch %d: %d messages from %d partitions", batch_id, counted, len(progress))

    @staticmethod
    def _append(df: DataFrame, path: str, txn: dict[str, str]) -> None:
        df.write.format("delta").mode("append").options(**txn).save(path)


def kafka_options(settings: Settings, bootstrap_servers: str) -> dict[str, str]:
    """Spark Kafka source options for every configured domain topic, from the earliest offset.

    Security settings in the profile use librdkafka's names (the producer is confluent-kafka); the JVM
    client gets the equivalent Java settings (``pipelines.kafka.security.java_client_settings``).
    """
    from pipelines.kafka.security import java_client_settings

    options = {
        "kafka.bootstrap.servers": bootstrap_servers,
        "subscribe": ",".join(settings.kafka.topics),
        "startingOffsets": "earliest",
        "failOnDataLoss": "true",
        "maxOffsetsPerTrigger": str(settings.bronze.max_offsets_per_trigger),
        "includeHeaders": "true",
    }
    for key, value in java_client_settings(settings.kafka.client_settings()).items():
        options[f"kafka.{key}"] = value
    return options


def start_bronze(
    spark: SparkSession, settings: Settings, bootstrap_servers: str, once: bool = False
) -> tuple[StreamingQuery, LagRecorder]:
    """Start the bronze query; ``once`` = catch up with Trigger.AvailableNow and stop.

    Returns the query and its lag listener (when done: ``recorder.detach(spark)``).
    """
    lake = Lake(settings)
    ensure_tables(spark, settings)
    checkpoint = lake.checkpoint(settings.bronze.query_name)
    writer = BatchWriter(
        settings, checkpoint, SchemaRegistry.load(settings.schemas_dir), TimestampLimits.from_settings(settings)
    )
    from pyspark.sql import functions as F

    stream = (
        spark.readStream.format("kafka")
        .options(**kafka_options(settings, bootstrap_servers))
        .load()
        .withColumn(INGESTED_AT, F.current_timestamp())  # the batch timestamp, fixed in the offset log
        .writeStream.queryName(settings.bronze.query_name)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(writer)
    )
    if once:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=settings.bronze.trigger_interval)
    recorder = LagRecorder(lake)
    spark.streams.addListener(recorder)
    query = stream.start()
    recorder.query_id = str(query.id)
    return query, recorder


def _spark_schema(schema: pa.Schema) -> StructType:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def run_bronze(spark: SparkSession, settings: Settings, bootstrap_servers: str, once: bool = False) -> StreamingQuery:
    """Run until caught up (``once``) or until SIGTERM/Ctrl-C, which stops the query between commits.

    Stopping mid-batch abandons that batch: its commits are either complete or absent, and the
    restart replays it from the checkpoint (tables that already hold it skip it).
    """
    query, recorder = start_bronze(spark, settings, bootstrap_servers, once=once)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping the bronze query", signum)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while query.isActive and not stop_requested.is_set():
            query.awaitTermination(0.5)
            recorder.flush(spark)
        if query.isActive:
            query.stop()
        if query.exception() is not None:
            raise query.exception()  # type: ignore[misc]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        recorder.detach(spark)
    return query


# --- freshness and lag ---------------------------------------------------------------------------


class LagRecorder(StreamingQueryListener):
    """Per Kafka partition and batch, the committed and latest offsets (the lag), appended to ops.bronze_lag.

    Spark calls ``onQueryProgress`` on its listener thread; the listener only queues the rows, and the thread
    that runs the query writes them with Spark (``flush``). So no Spark job runs on the listener thread and no
    second Delta writer (native threads) lives in the streaming process.
    """

    def __init__(self, lake: Lake) -> None:
        self.path = lake.table("ops", "bronze_lag")
        self.query_id: str | None = None  # set once the query has started; other queries are ignored
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, ...]] = []
        self._closed = False
        self._terminated = threading.Event()

    def detach(self, spark: SparkSession, timeout_s: float = 5.0) -> None:
        """Stop listening, then write what was still queued. Spark delivers the query's last progress report
        before its termination event, so when the query has ended this waits (briefly) for that event."""
        if all(str(q.id) != self.query_id for q in spark.streams.active):  # the query has ended
            self._terminated.wait(timeout_s)
        spark.streams.removeListener(self)
        with self._lock:
            self._closed = True
        self.flush(spark)

    def flush(self, spark: SparkSession) -> int:
        """Append the queued rows to ops.bronze_lag; returns how many. Lag is advisory: a failed write is
        logged and never breaks ingestion."""
        with self._lock:
            rows, self._pending = self._pending, []
        if rows:
            try:
                frame = spark.createDataFrame(rows, _spark_schema(LAG_SCHEMA))
                frame.write.format("delta").mode("append").save(self.path)
            except Exception:
                log.exception("could not record bronze lag")
        return len(rows)

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        if str(event.id) == self.query_id:
            self._terminated.set()

    def onQueryProgress(self, event: Any) -> None:
        progress = event.progress
        if str(progress.id) != self.query_id:
            return
        rows = lag_rows(str(progress.id), progress.batchId, progress.sources)
        with self._lock:
            if not self._closed:
                self._pending.extend(tuple(row[name] for name in LAG_SCHEMA.names) for row in rows)


def _offsets(text: str | None) -> dict[str, dict[str, int]]:
    """A source's offsets from a progress report; {} when Spark reports none (e.g. "null" or "None")."""
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def lag_rows(query_id: str, batch_id: int, sources: Any) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    rows = []
    for source in sources:
        end = _offsets(source.endOffset)
        latest = _offsets(source.latestOffset)
        for topic, partitions in latest.items():
            for partition, latest_offset in partitions.items():
                committed = end.get(topic, {}).get(partition, 0)
                rows.append(
                    {
                        "query_id": query_id,
                        "batch_id": batch_id,
                        "topic": topic,
                        "partition": int(partition),
                        "committed_offset": committed,
                        "latest_offset": latest_offset,
                        "lag": max(latest_offset - committed, 0),
                        "reported_at": now,
                    }
                )
    return rows


def freshness(spark: SparkSession, settings: Settings) -> list[dict[str, Any]]:
    """Per Kafka partition: highest event time and ingest time committed to bronze, and the last lag.

    What downstream jobs and Airflow sensors read to decide whether bronze is complete enough. Spark
    aggregates the progress tables, so the driver holds one row per Kafka partition whatever their size.
    """
    from pyspark.sql import functions as F

    from pipelines.platform.batch import table_exists

    lake = Lake(settings)
    if not table_exists(settings, lake.bronze_progress):
        return []
    fresh = (
        spark.read.format("delta")
        .load(lake.bronze_progress)
        .groupBy("topic", "partition")
        .agg(
            (F.max("max_offset") + 1).alias("committed_offset"),
            F.max("max_occurred_at").alias("max_occurred_at"),
            F.max("max_ingested_at").alias("max_ingested_at"),
            F.sum("events").alias("events"),
            F.sum("quarantined").alias("quarantined"),
        )
    )
    lag_path = lake.table("ops", "bronze_lag")
    if table_exists(settings, lag_path):
        latest = (
            spark.read.format("delta")
            .load(lag_path)
            .groupBy("topic", "partition")
            .agg(F.max_by("lag", "reported_at").alias("lag"))
        )
        fresh = fresh.join(latest, ["topic", "partition"], "left")
    else:
        fresh = fresh.withColumn("lag", F.lit(None).cast("long"))
    return [row.asDict() for row in fresh.orderBy("topic", "partition").collect()]


def table_counts(spark: SparkSession, settings: Settings, path: str, columns: list[str]) -> dict[tuple, int]:
    """Row counts grouped by ``columns`` (aggregated by Spark): for summaries and reconciliation."""
    from pipelines.platform.batch import table_exists

    if not table_exists(settings, path):
        return {}
    grouped = spark.read.format("delta").load(path).groupBy(*columns).count().collect()
    return {tuple(row[c] for c in columns): row["count"] for row in grouped}

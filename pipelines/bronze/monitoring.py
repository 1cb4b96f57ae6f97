"""Monitoring of the bronze query: consumer lag per Kafka partition, freshness and row counts.

``LagRecorder`` listens to the query's progress reports, appends the lag to ops.bronze_lag and each batch's
figures to ops.job_metrics (history that survives restarts), and feeds the live ``StreamMetrics``; ``freshness``
combines that with ops.bronze_progress (written by ``pipelines.bronze.ingest``) into the signal downstream
jobs and Airflow sensors read; ``table_counts`` feeds summaries and reconciliation; ``checkpoint_offsets`` reads
what the query has committed straight from its checkpoint (for ``status`` and idle catch-up runs).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from pyspark.sql.streaming import StreamingQueryListener

from pipelines.bronze.metrics import StreamMetrics
from pipelines.bronze.parse import _spark_schema
from pipelines.config import Settings
from pipelines.platform.lake import Lake
from pipelines.platform.registry import JOB_METRICS_SCHEMA, LAG_SCHEMA
from pipelines.platform.spark import local_frame

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The lag rows of the progress reports are appended (ops.bronze_lag, ops.job_metrics: two commits) at most this
# often. Flushed after every report, a stream that is never idle paid those commits on every micro-batch, on
# the CPUs its batches need; lag is advisory, and a freshness rule's limit is minutes. Stopping flushes the rest.
LAG_FLUSH_SECONDS = 5.0

log = logging.getLogger(__name__)


class LagRecorder(StreamingQueryListener):
    """Per Kafka partition and batch, the committed and latest offsets (the lag), appended to ops.bronze_lag.

    Spark calls ``onQueryProgress`` on its listener thread; the listener only queues the rows, and the thread
    that runs the query writes them with Spark (``flush``). So no Spark job runs on the listener thread and no
    second Delta writer (native threads) lives in the streaming process.
    """

    def __init__(
        self, settings: Settings, metrics: StreamMetrics | None = None, catch_up_started: dt.datetime | None = None
    ) -> None:
        lake = Lake(settings)
        self.settings = settings
        self.path = lake.table("ops", "bronze_lag")
        self.query_name = settings.bronze.query_name
        self.metrics_path = lake.table("ops", "job_metrics")
        self.metrics = metrics
        self.query_id: str | None = None  # set when the query named query_name starts; others are ignored
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, ...]] = []
        self._pending_metrics: list[tuple[Any, ...]] = []
        self._last_report: list[dict[str, Any]] = []  # per partition, for idle triggers
        self.reported = False  # a progress report (not only idle triggers) arrived
        self.catch_up_started = catch_up_started  # a catch-up (AvailableNow) run: when it started
        self._closed = False
        self._next_flush = 0.0  # time.monotonic() from which flush_when_due writes again
        self._terminated = threading.Event()

    def detach(self, spark: SparkSession, timeout_s: float = 5.0, error: str | None = None) -> None:
        """Stop listening, then write what was still queued and mark the stream stopped (or failed with
        ``error``). Spark delivers the query's last progress report before its termination event, so when the
        query has ended this waits (briefly) for that event."""
        if all(str(q.id) != self.query_id for q in spark.streams.active):  # the query has ended
            self._terminated.wait(timeout_s)
        spark.streams.removeListener(self)
        if self.catch_up_started is not None and not self.reported and error is None:
            self.caught_up(self.catch_up_started)
        with self._lock:
            self._closed = True
        self.flush(spark)
        if self.metrics is not None:
            self.metrics.stopped(error)

    def flush(self, spark: SparkSession) -> int:
        """Append the queued rows to ops.bronze_lag; returns how many. Lag is advisory: a failed write is
        logged and never breaks ingestion."""
        with self._lock:
            rows, self._pending = self._pending, []
            metric_rows, self._pending_metrics = self._pending_metrics, []
        for pending, schema, path in (
            (rows, LAG_SCHEMA, self.path),
            (metric_rows, JOB_METRICS_SCHEMA, self.metrics_path),
        ):
            if pending:
                try:
                    local_frame(spark, pending, _spark_schema(schema)).write.format("delta").mode("append").save(path)
                except Exception:
                    log.exception("could not record the bronze stream's %s", path.rsplit("/", 1)[-1])
        return len(rows)

    def flush_when_due(self, spark: SparkSession) -> None:
        """``flush`` at most every ``LAG_FLUSH_SECONDS``: what the thread running the query calls while it waits."""
        if time.monotonic() >= self._next_flush:
            self.flush(spark)
            self._next_flush = time.monotonic() + LAG_FLUSH_SECONDS

    def onQueryStarted(self, event: Any) -> None:
        """Learn the query's id from its start event: Spark delivers it before any report, while ``start()``
        may return after a short catch-up run has already reported (its reports were lost before)."""
        if event.name == self.query_name:
            self.query_id = str(event.id)

    def caught_up(self, at: dt.datetime) -> None:
        """Record zero lag at ``at`` on every partition the checkpoint has committed: for a catch-up run whose
        reports said nothing (Spark posts a batch that found nothing new as idle, not as progress), which was
        caught up when it started."""
        with self._lock:
            rows = self._committed_rows(at)
            self._pending.extend(tuple(row[name] for name in LAG_SCHEMA.names) for row in rows)

    def _committed_rows(self, at: dt.datetime) -> list[dict[str, Any]]:
        offsets = checkpoint_offsets(self.settings)
        return [
            {
                "query_id": self.query_id,
                "batch_id": -1,
                "topic": topic,
                "partition": int(partition),
                "committed_offset": offset,
                "latest_offset": offset,
                "lag": 0,
                "reported_at": at,
            }
            for topic, partitions in sorted(offsets.items())
            for partition, offset in sorted(partitions.items())
        ]

    def onQueryIdle(self, event: Any) -> None:
        """Spark reports an idle trigger (no new offset on any partition) here instead of a progress report, every
        ``spark.sql.streaming.noDataProgressEventInterval``: the stream is caught up, so its lag is zero now -
        what freshness, the sensor and ``status`` need to tell an idle stream from a stopped one. A stream
        restarted with nothing new has no report yet: its partitions come from the checkpoint."""
        if str(event.id) != self.query_id:
            return
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            if self._last_report:
                caught_up = [
                    row | {"committed_offset": row["latest_offset"], "lag": 0, "reported_at": now}
                    for row in self._last_report
                ]
            else:
                caught_up = self._committed_rows(now)
            self._last_report = caught_up
            if not self._closed:
                self._pending.extend(tuple(row[name] for name in LAG_SCHEMA.names) for row in caught_up)
        if self.metrics is not None:
            self.metrics.idle(caught_up)

    def onQueryTerminated(self, event: Any) -> None:
        if str(event.id) == self.query_id:
            self._terminated.set()

    def onQueryProgress(self, event: Any) -> None:
        progress = event.progress
        if str(progress.id) != self.query_id:
            return
        rows = lag_rows(str(progress.id), progress.batchId, progress.sources)
        if self.metrics is not None:
            self.metrics.progress(progress, rows)
        with self._lock:
            self._last_report = rows
            self.reported = True
            if not self._closed:
                self._pending.extend(tuple(row[name] for name in LAG_SCHEMA.names) for row in rows)
                if progress.numInputRows:
                    self._pending_metrics.extend(batch_metric_rows(progress, rows))


def batch_metric_rows(progress: Any, lag: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """ops.job_metrics rows of one micro-batch that read rows: its size, duration, rates and lag."""
    at = dt.datetime.now(dt.UTC)
    values = {
        "input_rows": progress.numInputRows,
        "batch_duration_seconds": (progress.durationMs or {}).get("triggerExecution", 0) / 1000,
        "input_rows_per_second": progress.inputRowsPerSecond,
        "processed_rows_per_second": progress.processedRowsPerSecond,
        "offsets_behind": sum(row["lag"] for row in lag),
    }
    labels = json.dumps({"batch_id": progress.batchId})
    return [
        (at, "bronze run", str(progress.id), name, labels, float(value))
        for name, value in values.items()
        if value is not None and value == value
    ]


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


def checkpoint_offsets(settings: Settings) -> dict[str, dict[str, int]]:
    """{topic: {partition: next offset}} the bronze query has committed, from its checkpoint ({}: none yet).

    Spark writes ``offsets/<batch>`` (each source's end offsets) before a batch runs and ``commits/<batch>``
    once its sink committed, so the offsets of the newest committed batch are what bronze holds.
    """
    filesystem, root = _filesystem(settings, Lake(settings).checkpoint(settings.bronze.query_name))
    from pyarrow.fs import FileSelector, FileType

    if filesystem.get_file_info(f"{root}/commits").type != FileType.Directory:
        return {}
    committed = [
        int(info.base_name)
        for info in filesystem.get_file_info(FileSelector(f"{root}/commits"))
        if info.base_name.isdigit()
    ]
    if not committed:
        return {}
    with filesystem.open_input_stream(f"{root}/offsets/{max(committed)}") as stream:
        lines = stream.read().decode().splitlines()
    offsets: dict[str, dict[str, int]] = {}
    for line in lines[2:]:  # "v1", the batch's metadata, then one line per source
        if line.strip().startswith("{"):
            for topic, partitions in json.loads(line).items():
                offsets.setdefault(topic, {}).update({str(p): int(o) for p, o in partitions.items()})
    return offsets


def _filesystem(settings: Settings, uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for a local folder or an s3:// (s3a://) URI with the lake's credentials."""
    from pyarrow import fs

    if "://" not in uri or uri.startswith("file://"):
        return fs.LocalFileSystem(), uri.removeprefix("file://")
    scheme, path = uri.split("://", 1)
    if scheme not in ("s3", "s3a"):
        raise ValueError(f"{uri}: status reads local and s3:// checkpoints only")
    options = settings.lake_storage_options()
    endpoint = options.get("AWS_ENDPOINT_URL") or options.get("AWS_ENDPOINT")
    filesystem = fs.S3FileSystem(
        access_key=options.get("AWS_ACCESS_KEY_ID"),
        secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
        region=options.get("AWS_REGION", "us-east-1"),
        endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
        scheme="http" if endpoint and endpoint.startswith("http://") else "https",
    )
    return filesystem, path

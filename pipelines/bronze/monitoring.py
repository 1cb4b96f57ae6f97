"""Monitoring of the bronze query: consumer lag per Kafka partition, freshness and row counts.

``LagRecorder`` listens to the query's progress reports and appends the lag to ops.bronze_lag; ``freshness``
combines that with ops.bronze_progress (written by ``pipelines.bronze.ingest``) into the signal downstream
jobs and Airflow sensors read; ``table_counts`` feeds summaries and reconciliation.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from pyspark.sql.streaming import StreamingQueryListener

from pipelines.bronze.parse import _spark_schema
from pipelines.config import Settings
from pipelines.platform.lake import Lake
from pipelines.platform.registry import LAG_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


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

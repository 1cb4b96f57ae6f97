"""The micro-batch commit: one parse of each Kafka micro-batch, then idempotent appends to the bronze tables.

``BatchWriter`` is the query's ``foreachBatch`` function. Each Delta append names the streaming query and batch
in its commit, so a batch Spark replays after a crash is skipped by the tables that already hold it
(``pipelines.bronze.replay``): a kill between two commits neither loses nor doubles a row. ``ensure_tables``
creates the tables it writes (and ops.bronze_lag and ops.job_metrics, see ``pipelines.bronze.monitoring``) before
the query starts.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from pipelines.bronze.parse import PARSED_SCHEMA, ROUTE, ROUTE_EVENT, TimestampLimits, _spark_schema, make_parser
from pipelines.bronze.replay import ReplayCheck, batch_marker
from pipelines.config import Settings
from pipelines.contracts.registry import SchemaRegistry
from pipelines.platform.lake import Lake
from pipelines.platform.registry import table
from pipelines.platform.spark import local_frame, persist_for_reuse

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from pipelines.bronze.metrics import StreamMetrics

log = logging.getLogger(__name__)

EVENTS, QUARANTINE = table("bronze", "events"), table("bronze", "quarantine")
PROGRESS, LAG = table("ops", "bronze_progress"), table("ops", "bronze_lag")
JOB_METRICS = table("ops", "job_metrics")


# Delta writes a checkpoint of a table's whole state every 10th commit by default (checkpointInterval). The
# stream commits to these tables every micro-batch, all in step, so every 10th batch paid for up to five
# checkpoints at once: 8.4-8.7 s batches against a median of 3.5 s on the 2-CPU bench, growing with the files.
# Every 100th commit keeps readers' log replay short (at most 99 small JSON commits after the checkpoint).
STREAM_TABLE_PROPERTIES = {"delta.checkpointInterval": "100"}
# Parquet tries a dictionary for every column of a file and falls back to plain encoding once the dictionary
# outgrows its page: on columns whose values are all different (each message's bytes, its JSON, its id) the
# attempt is pure cost - 8% of the stream's JVM samples (JFR). A 200,000-row bronze.events append measured alone:
# 2.94 s without these dictionaries against 3.48 s (median of 3), files 1.2% larger. Delta hands a table's
# configuration to the Parquet writer of each write to it, so compaction's rewrites follow it too.
UNIQUE_VALUE_COLUMNS = ("raw_value", "properties", "context", "event_id", "trace_id")
NO_DICTIONARY_PROPERTIES = {f"parquet.enable.dictionary#{column}": "false" for column in UNIQUE_VALUE_COLUMNS}
# Delta keeps min/max/null-count statistics of the first 32 columns of every file it writes - for bronze.events every
# column, the JSON documents and random ids (event, session, trace) included, whose ranges span nearly every value so
# no reader can skip a file by them. Statistics are kept for what readers filter on besides the partition columns:
# ingest, event and Kafka times (silver's late-data lookback reads by ingested_at), Kafka coordinates, the person ids
# (erasure). A 195,083-row append measured alone: 2.53 s against 2.77 s (median of 5). Files written earlier keep
# the statistics they have.
FILTERED_EVENT_COLUMNS = (
    "ingested_at",
    "occurred_at",
    "kafka_timestamp",
    "topic",
    "partition",
    "offset",
    "user_id",
    "anonymous_id",
    "version",
)
EVENT_STATISTICS_PROPERTIES = {"delta.dataSkippingStatsColumns": ",".join(FILTERED_EVENT_COLUMNS)}


def ensure_tables(spark: SparkSession, settings: Settings) -> None:
    """Create the bronze and ops tables on first run and name them in the catalog (no-op afterwards)."""
    from pipelines.platform.catalog import ensure_table

    bronze_properties = {
        EVENTS: NO_DICTIONARY_PROPERTIES | EVENT_STATISTICS_PROPERTIES,
        QUARANTINE: NO_DICTIONARY_PROPERTIES,
    }
    for spec in (EVENTS, QUARANTINE, PROGRESS, LAG, JOB_METRICS):
        properties = STREAM_TABLE_PROPERTIES | bronze_properties.get(spec, {})
        ensure_table(spark, settings, spec.layer, spec.name, spec.schema, list(spec.partitioned_by), properties)


class BatchWriter:
    """The foreachBatch function: one parse of the micro-batch, then three idempotent Delta appends.

    Every commit names its query and batch (``userMetadata``). A batch that directly follows one this writer
    completed cannot be a replay and is appended as is; any other batch is checked table by table
    (``ReplayCheck``) and written, where missing, with Delta's transaction id too (``txnAppId`` = the streaming
    query id, ``txnVersion`` = the batch id) - so a kill between two commits neither loses nor doubles a row,
    and the steady stream skips Delta's per-commit lookup of that id (see ``pipelines.bronze.replay``). The
    progress rows go last: a progress row means both data commits of its batch are in.
    """

    def __init__(
        self,
        settings: Settings,
        checkpoint: str,
        registry: SchemaRegistry,
        limits: TimestampLimits,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.lake = Lake(settings)
        self.checkpoint = checkpoint
        self.registry = registry
        self.limits = limits
        self.metrics = metrics
        self._query_id: str | None = None
        self._completed: int | None = None  # the last batch this writer wrote in full, None after a failure

    def query_id(self, spark: SparkSession) -> str:
        """The query's id from its checkpoint (stable across restarts, new with a new checkpoint)."""
        if self._query_id is None:
            text = spark.read.text(f"{self.checkpoint}/metadata").first()
            if text is None:
                raise RuntimeError(f"streaming checkpoint {self.checkpoint} has no metadata file")
            self._query_id = str(json.loads(text[0])["id"])
        return self._query_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        spark = batch.sparkSession
        may_be_replay = self._completed != batch_id - 1
        self._completed = None
        parsed = batch.mapInArrow(make_parser(self.registry, self.limits), _spark_schema(PARSED_SCHEMA))
        parsed = persist_for_reuse(parsed)  # parsed once, read by three writes
        try:
            is_event = F.col(ROUTE) == ROUTE_EVENT
            # sorted here, not by Spark: an orderBy would add a sampling job to every micro-batch
            progress = sorted(
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
                .collect(),
                key=lambda row: (row["topic"], row["partition"]),
            )
            if not progress:
                self._completed = batch_id
                return
            query_id = self.query_id(spark)
            options = {"userMetadata": batch_marker(query_id, batch_id)}
            replay = None
            if may_be_replay:
                options |= {"txnAppId": query_id, "txnVersion": str(batch_id)}
                replay = ReplayCheck(spark, self.checkpoint, query_id, batch_id)
            # One file per table partition and batch: rows of a (tenant, day, type) arrive from every Kafka
            # partition, so without the shuffle each reading task wrote its own small file into each of them.
            # A table the batch has no rows for gets no commit (a replay finds nothing to add there either).
            if any(row["events"] for row in progress):
                events = parsed.where(is_event).select(EVENTS.schema.names)
                self._write(events.repartition(*EVENTS.partitioned_by), self.lake.bronze_events, options, replay)
            if any(row["quarantined"] for row in progress):
                quarantine = parsed.where(~is_event).select(QUARANTINE.schema.names)
                quarantine = quarantine.repartition(*QUARANTINE.partitioned_by)
                self._write(quarantine, self.lake.bronze_quarantine, options, replay)
            rows = [(query_id, batch_id, *row) for row in progress]
            progress_df = local_frame(spark, rows, _spark_schema(PROGRESS.schema))
            self._write(progress_df, self.lake.bronze_progress, options, replay)
            self._completed = batch_id
        finally:
            parsed.unpersist()
        if self.metrics is not None:
            self.metrics.routed(sum(r["events"] for r in progress), sum(r["quarantined"] for r in progress))
        counted = sum(r["events"] + r["quarantined"] for r in progress)
        log.info("bronze batch %d: %d messages from %d partitions", batch_id, counted, len(progress))

    def _write(self, df: DataFrame, path: str, options: dict[str, str], replay: ReplayCheck | None) -> None:
        if replay is None or not replay.holds(path):
            self._append(df, path, options)

    @staticmethod
    def _append(df: DataFrame, path: str, options: dict[str, str]) -> None:
        df.write.format("delta").mode("append").options(**options).save(path)

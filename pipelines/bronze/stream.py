"""The bronze query's lifecycle: Kafka source options, starting the stream, and running it until stopped.

``start_bronze`` wires Spark's Kafka source to ``pipelines.bronze.ingest.BatchWriter`` (offsets in the
streaming checkpoint) and attaches the lag listener from ``pipelines.bronze.monitoring``; ``run_bronze``
drives it until caught up or until SIGTERM/Ctrl-C, stopping only between commits.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from pipelines.bronze.ingest import BatchWriter, ensure_tables
from pipelines.bronze.metrics import StreamMetrics
from pipelines.bronze.monitoring import LagRecorder
from pipelines.bronze.parse import INGESTED_AT, TimestampLimits
from pipelines.config import Settings
from pipelines.contracts.registry import SchemaRegistry
from pipelines.platform.lake import Lake

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)


# Settings of the Java consumers inside Spark's Kafka source (one per Kafka partition, kept across micro-batches),
# measured with its per-task log (KafkaDataConsumer, INFO) on the 2-CPU bench:
# - fetch.max.wait.ms: every micro-batch seeks the kept consumer, whose read-ahead fetch past the partition's end
#   is still held by the broker for up to this long (500 ms by default) when no new message came; only then does
#   the batch's fetch go out. A partition that got few or no messages held its task 0.46-0.52 s per batch, waiting
#   (the two system.events partitions, every batch); at 50 ms, 0.06-0.09 s.
# - max.poll.records, max.partition.fetch.bytes: Spark asks the broker for the partition's offset range after
#   every poll, and a poll returned 500 records (the default): 50 polls for a 23,000-message backlog task. At
#   10,000 records and 8 MiB per fetch, 3 polls. The fetch buffer of each consumer grows to 8 MiB at most.
CONSUMER_DEFAULTS = {
    "fetch.max.wait.ms": "50",
    "max.poll.records": "10000",
    "max.partition.fetch.bytes": str(8 * 2**20),
}


def kafka_options(settings: Settings, bootstrap_servers: str) -> dict[str, str]:
    """Spark Kafka source options for every configured domain topic, from the earliest offset.

    Consumer settings: ``CONSUMER_DEFAULTS`` under the profile's ``bronze.consumer``. Security settings in the
    profile use librdkafka's names (the producer is confluent-kafka); the JVM client gets the equivalent Java
    settings (``pipelines.kafka.security.java_client_settings``).
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
    consumer = CONSUMER_DEFAULTS | settings.bronze.consumer | java_client_settings(settings.kafka.client_settings())
    for key, value in consumer.items():
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
    metrics = StreamMetrics(settings, serve=not once)  # a catch-up run is too short-lived to be scraped
    writer = BatchWriter(
        settings,
        checkpoint,
        SchemaRegistry.load(settings.schemas_dir),
        TimestampLimits.from_settings(settings),
        metrics,
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
    recorder = LagRecorder(settings, metrics, catch_up_started=dt.datetime.now(dt.UTC) if once else None)
    spark.streams.addListener(recorder)
    query = stream.start()
    recorder.query_id = str(query.id)
    return query, recorder


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
    error: str | None = "interrupted"
    try:
        while query.isActive and not stop_requested.is_set():
            query.awaitTermination(0.5)
            recorder.flush_when_due(spark)
        if query.isActive:
            query.stop()
        failure = query.exception()
        error = str(failure).strip().splitlines()[0][:500] if failure is not None else None
        if failure is not None:
            raise failure  # type: ignore[misc]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        recorder.detach(spark, error=error)
    return query

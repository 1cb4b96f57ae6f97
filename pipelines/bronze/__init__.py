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
* delta-spark then appends to bronze.events, bronze.quarantine and last ops.bronze_progress, each commit
  naming the streaming query and batch. A batch Spark replays after a crash is skipped by the tables that
  already hold it (``replay``), so a kill at any point neither loses nor doubles rows.

Duplicates are kept (bronze equals what Kafka delivered); silver deduplicates.

Modules:

* ``parse``: executor side - validate and route the Kafka rows of a batch (``parse_batch``, ``TimestampLimits``).
* ``ingest``: the micro-batch commit - ``BatchWriter`` (foreachBatch) and ``ensure_tables``.
* ``replay``: whether a table already holds a batch Spark may be replaying (``ReplayCheck``).
* ``stream``: the query's lifecycle - Kafka source options, ``start_bronze``, ``run_bronze``.
* ``monitoring``: the lag listener (ops.bronze_lag), ``freshness`` and ``table_counts``.
"""

from pipelines.bronze.ingest import BatchWriter, ensure_tables
from pipelines.bronze.monitoring import freshness, lag_rows, table_counts
from pipelines.bronze.stream import run_bronze, start_bronze

__all__ = ["BatchWriter", "ensure_tables", "freshness", "lag_rows", "run_bronze", "start_bronze", "table_counts"]

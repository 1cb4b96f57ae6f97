"""Driver-side Delta table chores over delta-spark: idempotent creation, properties, small upserts,
compaction, vacuum and history.

Every function takes the job's SparkSession (Delta extensions on, see ``pipelines.platform.spark``) and a table
path; storage credentials come from the session (S3A), so a path is the same string everywhere. Jobs
write their data with ``df.write.format("delta")``; these helpers cover the table work around it.
Checkpoints need no helper: Delta writes one every ``delta.checkpointInterval`` commits (10 by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines.platform.spark import session_conf

if TYPE_CHECKING:
    import pandas as pd
    from delta.tables import DeltaTable
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
# VACUUM lists the table's folders in this many tasks; Spark's default (10000) is sized for clusters listing
# huge trees and costs minutes of task scheduling on a laptop. vacuum() uses the session's parallelism.
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


class TableError(ValueError):
    """A table utility could not do what was asked; the message names the table and the reason."""


def delta_identifier(path: str) -> str:
    """``delta.`<path>``` for SQL commands on a table by path (backticks in the path doubled)."""
    return "delta.`" + path.replace("`", "``") + "`"


def sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def _table(spark: SparkSession, path: str) -> DeltaTable:
    from delta.tables import DeltaTable

    if not _exists(spark, path):
        raise TableError(f"no Delta table at {path!r}")
    return DeltaTable.forPath(spark, path)


def _spark_schema(schema: pa.Schema | StructType) -> StructType:
    if isinstance(schema, pa.Schema):
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(schema)
    return schema


def _comparable(schema: StructType) -> list[tuple[str, str]]:
    """Names and types, not nullability: Delta stores DataFrame-written columns as nullable."""
    return [(f.name.lower(), f.dataType.simpleString()) for f in schema.fields]


def _frame(spark: SparkSession, source: DataFrame | pa.Table | pd.DataFrame) -> DataFrame:
    from pyspark.sql import DataFrame

    if isinstance(source, DataFrame):
        return source
    table = source if isinstance(source, pa.Table) else pa.Table.from_pandas(source, preserve_index=False)
    return spark.createDataFrame(table)


def table_version(spark: SparkSession, path: str) -> int | None:
    """Latest version, or None when there is no table yet (lets jobs branch on first runs)."""
    if not _exists(spark, path):
        return None
    return _latest_version(_table(spark, path))


def _latest_version(table: DeltaTable) -> int:
    return int(table.history(1).select("version").first()[0])


def create_table(
    spark: SparkSession,
    path: str,
    schema: pa.Schema | StructType,
    partition_by: Sequence[str] = (),
    properties: Mapping[str, str] | None = None,
    description: str | None = None,
) -> int:
    """Create the table if missing and return its version; re-running with the same definition is a no-op.

    An existing table with a different schema or partitioning is an error rather than silently kept:
    a job deploying a new table definition must not run against the old one unnoticed.
    """
    from delta.tables import DeltaTable

    wanted = _spark_schema(schema)
    if not _exists(spark, path):
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(wanted)
        if partition_by:
            builder = builder.partitionedBy(*partition_by)
        if description:
            builder = builder.comment(description)
        for key, value in (properties or {}).items():
            builder = builder.property(key, value)
        builder.execute()  # a concurrent creator wins; the comparison below still guards the definition
    table = DeltaTable.forPath(spark, path)
    existing = table.toDF().schema
    partitions = list(table.detail().select("partitionColumns").first()[0])
    problems = []
    if _comparable(existing) != _comparable(wanted):
        problems.append(f"schema is {existing.simpleString()}")
    if partitions != list(partition_by):
        problems.append(f"partitioned by {partitions}")
    if problems:
        raise TableError(f"table {path!r} exists with a different definition: " + "; ".join(problems))
    return _latest_version(table)


def set_properties(spark: SparkSession, path: str, properties: Mapping[str, str]) -> None:
    """Change table properties (e.g. delta.logRetentionDuration) in one commit."""
    _table(spark, path)
    if not properties:
        return
    pairs = ", ".join(f"{sql_literal(key)} = {sql_literal(value)}" for key, value in properties.items())
    spark.sql(f"ALTER TABLE {delta_identifier(path)} SET TBLPROPERTIES ({pairs})")


def merge(
    spark: SparkSession,
    path: str,
    source: DataFrame | pa.Table | pd.DataFrame,
    predicate: str,
    *,
    source_alias: str = "s",
    target_alias: str = "t",
    update: bool = True,
    insert: bool = True,
) -> dict[str, int]:
    """Upsert ``source`` in one MERGE commit; returns Delta's counts (num_affected_rows, num_updated_rows,
    num_deleted_rows, num_inserted_rows).

    ``update=False`` makes it insert-only (rows whose key exists are left alone), which Delta runs as one
    anti join plus an append.
    """
    if not (update or insert):
        raise TableError("merge needs update and/or insert")
    table = _table(spark, path)
    merger = table.alias(target_alias).merge(_frame(spark, source).alias(source_alias), predicate)
    if update:
        merger = merger.whenMatchedUpdateAll()
    if insert:
        merger = merger.whenNotMatchedInsertAll()
    row = merger.execute().first()
    return {} if row is None else {name: int(value or 0) for name, value in row.asDict().items()}


def compact(spark: SparkSession, path: str, where: str | None = None) -> dict[str, Any]:
    """``OPTIMIZE``: bin-pack small files (streaming micro-batches leave many); returns Delta's metrics.

    ``where`` limits it to partitions (a predicate on partition columns only). Safe while writers append:
    compaction rewrites, it never changes rows, and conflicts are detected at commit.
    """
    _table(spark, path)
    condition = f" WHERE {where}" if where else ""
    row = spark.sql(f"OPTIMIZE {delta_identifier(path)}{condition}").first()
    return {} if row is None else row["metrics"].asDict(recursive=True)


def vacuum(
    spark: SparkSession,
    path: str,
    retention_hours: float | None = None,
    dry_run: bool = True,
    enforce_retention_duration: bool = True,
    full: bool = True,
) -> list[str]:
    """Files no version within the retention needs (dry run, the default) or that were deleted.

    ``full`` (Delta's default) lists the table's directory, so it also finds files no commit ever
    referenced: orphans of writes that died before their commit (a killed driver, a failed task on a lost
    executor); ``full=False`` is ``VACUUM LITE``, which only looks at files the log removed. A retention
    shorter than the table's (``delta.deletedFileRetentionDuration``, 7 days by default) can break
    running queries and time travel, so Delta refuses it unless ``enforce_retention_duration=False``
    (Delta's ``retentionDurationCheck``, switched off for this call only). When files are deleted, the
    list is the dry run taken just before. The directory listing runs in the session's default parallelism.
    """
    _table(spark, path)
    command = f"VACUUM {delta_identifier(path)}" + ("" if full else " LITE")
    if retention_hours is not None:
        hours = int(retention_hours) if float(retention_hours).is_integer() else float(retention_hours)
        command += f" RETAIN {hours} HOURS"
    overrides = {LISTING_PARALLELISM: str(max(1, spark.sparkContext.defaultParallelism))}
    if not enforce_retention_duration:
        overrides[RETENTION_CHECK] = "false"
    with session_conf(spark, overrides):
        files = sorted(row["path"] for row in spark.sql(command + " DRY RUN").collect())
        if not dry_run:
            spark.sql(command).collect()
    return files


def history(spark: SparkSession, path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Commit infos, newest first (version, timestamp, operation, operationParameters, operationMetrics, ...)."""
    return [row.asDict(recursive=True) for row in _table(spark, path).history(limit).collect()]


def arrow_dataset(path: str, storage_options: Mapping[str, str] | None = None) -> Any:
    """The current files of the Delta table at ``path`` as a pyarrow dataset, for short-lived processes.

    delta-rs' own ``to_pyarrow_dataset()`` reads through a Rust filesystem whose native threads abort the process
    when they are finalized at interpreter teardown ("terminate called without an active exception", exit 134,
    a few runs in a hundred even after a gc). A local table is read here with pyarrow's own filesystem instead
    (delta-rs only lists the snapshot's files); a remote one keeps delta-rs' reader.
    """
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    table = DeltaTable(path, storage_options=dict(storage_options) if storage_options else None)
    if "://" in path and not path.startswith("file://"):
        return table.to_pyarrow_dataset()
    schema = pa.schema(table.schema().to_arrow())
    partition_columns = table.metadata().partition_columns
    files = [uri.removeprefix("file://") for uri in table.file_uris()]
    partitioning = ds.partitioning(pa.schema([schema.field(c) for c in partition_columns]), flavor="hive")
    root = path.removeprefix("file://")
    return ds.dataset(files, schema=schema, format="parquet", partitioning=partitioning, partition_base_dir=root)

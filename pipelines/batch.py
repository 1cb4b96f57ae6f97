"""Plumbing the silver and gold batch jobs share: date ranges, partition predicates, connector reads,
atomic partition replacement and partition listing.

Every job reads only the partitions it needs (the connector's ``filter`` option prunes by partition
values) and replaces exactly the partitions it owns in ONE Delta commit (``replaceWhere``), so a run can
be repeated or replayed and a reader never sees half of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING

from pipelines.config import Settings
from pipelines.connectors.delta import SHORT_NAME, spark_options

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class BatchJobError(ValueError):
    """A batch job cannot run as asked; the message says which table, range or input is wrong."""


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last`` inclusive; refuses reversed ranges instead of doing nothing."""
    if last < first:
        raise BatchJobError(f"date range is reversed: --from {first} is after --to {last}")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str | date]) -> str:
    items = sorted({str(v) for v in values})
    if not items:
        raise BatchJobError(f"empty value list for {column}")
    return f"{column} IN ({', '.join(sql_string(v) for v in items)})"


def partition_predicate(tenants: Sequence[str] | None, date_column: str, days: Iterable[date]) -> str:
    """``tenant_id IN (...) AND <date> ...``: a contiguous run of days becomes a range, anything else an IN list.

    ``tenants=None`` means every tenant. The same text serves as read filter and as replaceWhere, so a
    job replaces exactly what it was asked to rebuild.
    """
    ordered = sorted(set(days))
    if not ordered:
        raise BatchJobError("no days to read or replace")
    contiguous = (ordered[-1] - ordered[0]).days + 1 == len(ordered)
    if contiguous:
        dates = f"{date_column} >= '{ordered[0]}' AND {date_column} <= '{ordered[-1]}'"
    else:
        dates = sql_in(date_column, ordered)
    return dates if tenants is None else f"{sql_in('tenant_id', tenants)} AND {dates}"


def table_exists(settings: Settings, path: str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(path, settings.lake_storage_options() or None)


def read_table(
    spark: SparkSession,
    settings: Settings,
    path: str,
    filter_text: str | None = None,
    columns: Sequence[str] | None = None,
) -> DataFrame:
    """A pruned read through the project's Delta connector (the filter is exact SQL, not a hint).

    ``columns`` prunes columns: pyspark 4.3 gives Python data sources no column-pruning hook, but a reader
    built with a user-specified schema reads only that schema's columns from the parquet files. The schema is
    taken from the table itself, so types stay exactly the table's.
    """
    if not table_exists(settings, path):
        raise BatchJobError(f"no Delta table at {path}; build the layer that produces it first")
    reader = spark.read.format(SHORT_NAME).options(**spark_options(settings.lake_storage_options()))
    if filter_text:
        reader = reader.option("filter", filter_text)
    if columns is None:
        return reader.load(path)
    from pyspark.sql.types import StructType

    table_schema = reader.load(path).schema
    missing = [name for name in columns if name not in table_schema.names]
    if missing:
        raise BatchJobError(f"Delta table at {path} has no column(s) {missing}; it has {table_schema.names}")
    return reader.schema(StructType([table_schema[name] for name in columns])).load(path)


def replace_partitions(
    df: DataFrame, settings: Settings, path: str, predicate: str, partition_by: Sequence[str], description: str
) -> None:
    """Atomically swap every partition matching ``predicate`` for the rows of ``df`` (one commit).

    The connector refuses rows outside the predicate, so a bug cannot leak into partitions the job does
    not own; an empty ``df`` removes the matching partitions (the source had nothing there).
    """
    (
        df.write.format(SHORT_NAME)
        .mode("overwrite")
        .options(**spark_options(settings.lake_storage_options()))
        .option("replaceWhere", predicate)
        .option("partitionBy", ",".join(partition_by))
        .option("userMetadata", description)
        .save(path)
    )


def table_partitions(settings: Settings, path: str, columns: Sequence[str]) -> set[tuple]:
    """Distinct partition values of the latest snapshot, from the Delta log only (no data files read)."""
    from deltalake import DeltaTable

    if not table_exists(settings, path):
        return set()
    import pyarrow as pa

    actions = pa.table(
        DeltaTable(path, storage_options=settings.lake_storage_options() or None).get_add_actions(flatten=True)
    )
    if actions.num_rows == 0:
        return set()
    values = [actions.column(f"partition.{column}").to_pylist() for column in columns]
    return set(zip(*values, strict=True))

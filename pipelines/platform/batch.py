"""Plumbing the silver and gold batch jobs share: date ranges, partition predicates, Delta reads,
atomic partition replacement, catalog names and partition listing.

Every job reads only the partitions it needs (a filter on partition columns prunes files from the Delta
log; data skipping uses the files' column statistics) and replaces exactly the partitions it owns in ONE
Delta commit (``replaceWhere``), so a run can be repeated or replayed and a reader never sees half of it.
Every table a job writes is then named in the catalog (``<layer>.<name>``, ``pipelines.platform.catalog``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from pipelines.config import Settings
from pipelines.platform.lake import Lake
from pipelines.platform.registry import LAYERS

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, Observation, SparkSession


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
    """Whether ``path`` holds a Delta table (reads the log's listing only; no JVM needed)."""
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(path, settings.lake_storage_options() or None)


def read_rows(settings: Settings, path: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table | None:
    """The rows of the Delta table at ``path`` as an Arrow table (None: no table there), read without a JVM -
    for commands, sensors and exporters that look at ops and gold tables (``platform.tables.arrow_dataset``)."""
    from pipelines.platform.tables import arrow_dataset

    if not table_exists(settings, path):
        return None
    return arrow_dataset(path, settings.lake_storage_options() or None).to_table(columns=columns, filter=filter)


def read_table(
    spark: SparkSession,
    settings: Settings,
    path: str,
    filter_text: str | None = None,
    columns: Sequence[str] | None = None,
) -> DataFrame:
    """The Delta table at ``path``, filtered by the SQL ``filter_text`` and cut to ``columns``.

    The filter is applied before the column selection, so it may use columns the caller does not keep.
    Delta prunes partitions and skips files from it; parquet reads only the selected columns.
    """
    if not table_exists(settings, path):
        raise BatchJobError(f"no Delta table at {path}; build the layer that produces it first")
    df = spark.read.format("delta").load(path)
    if columns is not None:
        missing = [name for name in columns if name not in df.columns]
        if missing:
            raise BatchJobError(f"Delta table at {path} has no column(s) {missing}; it has {df.columns}")
    if filter_text:
        df = df.where(filter_text)
    return df if columns is None else df.select(*columns)


def observed(observation: Observation) -> dict[str, Any]:
    """The metrics an ``Observation`` collected, without ``Observation.get``'s unbounded wait.

    Spark completes an observation in the thread that ran a query over the observed frame, as that query
    ends; so once the job's actions have returned it is complete, or it never will be (no action covered the
    frame, or the plan lost its CollectMetrics node). ``get`` would then block forever - a hung job, and in a
    test run a Py4J call interrupted mid-answer that breaks every later call. A clear error instead.
    """
    # PySpark has no non-blocking check: ask the JVM Observation's future (a public member of the Scala class).
    if observation._jo is None or not observation._jo.future().isCompleted():
        raise BatchJobError(
            f"the {observation._name or 'job'} metrics were never collected: no finished query covered the "
            "observed rows; the rows written are in the table's Delta history"
        )
    return observation.get


def catalog_name(settings: Settings, path: str) -> tuple[str, str] | None:
    """(layer, name) of a table path of the profile's lake (``<root>/<layer>/<name>``), else None."""
    root = Lake(settings).root
    relative = path.rstrip("/")
    if not relative.startswith(root + "/"):
        return None
    parts = relative[len(root) + 1 :].split("/")
    if len(parts) != 2 or parts[0] not in LAYERS:
        return None
    return parts[0], parts[1]


def register_table(spark: SparkSession, settings: Settings, path: str) -> bool:
    """Name the lake table at ``path`` in the catalog (``silver.events``, ...); True when the catalog changed.

    Paths outside the lake's ``<layer>/<name>`` layout stay unnamed (read them by path).
    """
    from pipelines.platform.catalog import register

    name = catalog_name(settings, path)
    return False if name is None else register(spark, settings, name[0], name[1], path)


def replace_partitions(
    df: DataFrame, settings: Settings, path: str, predicate: str, partition_by: Sequence[str], description: str
) -> None:
    """Atomically swap every partition matching ``predicate`` for the rows of ``df`` (one commit).

    Delta refuses rows outside the predicate (replaceWhere's constraint check), so a bug cannot leak into
    partitions the job does not own; an empty ``df`` removes the matching partitions (the source had
    nothing there). The first write creates the table. The table is then named in the catalog.
    """
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("userMetadata", description)
        .partitionBy(*partition_by)
        .save(path)
    )
    register_table(df.sparkSession, settings, path)


def table_partitions(settings: Settings, path: str, columns: Sequence[str]) -> set[tuple]:
    """Distinct partition values of the latest snapshot, from the Delta log only (no data files read)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    if not table_exists(settings, path):
        return set()
    import pyarrow as pa

    try:
        actions = pa.table(
            DeltaTable(path, storage_options=settings.lake_storage_options() or None).get_add_actions(flatten=True)
        )
    except DeltaError as exc:  # a damaged log: say which table, not delta-rs' Rust backtrace
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BatchJobError(
            f"cannot read the Delta table at {path}: {cause}; its _delta_log needs repair, or rebuild the table"
        ) from None
    if actions.num_rows == 0:
        return set()
    values = [actions.column(f"partition.{column}").to_pylist() for column in columns]
    return set(zip(*values, strict=True))


def known_tenants(settings: Settings, path: str) -> list[str]:
    """Tenants the table at ``path`` holds rows of (partition values in its Delta log; no data read)."""
    return sorted(tenant for (tenant,) in table_partitions(settings, path, ["tenant_id"]))


def check_tenants(requested: Sequence[str] | None, known: Sequence[str], source: str) -> list[str] | None:
    """``requested`` sorted and unique (None: every tenant); a tenant ``source`` holds no rows of is a typo or a
    tenant without data, and an error that lists the known ones - never a build that silently does nothing."""
    if not requested:
        return None
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise BatchJobError(
            f"unknown tenant(s) {', '.join(unknown)}: {source} holds {', '.join(known) or 'no tenants yet'}"
        )
    return sorted(set(requested))

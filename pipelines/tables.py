"""Driver-side Delta table utilities: thin, typed wrappers over delta-rs.

They run in the driver / orchestrator process (never inside Spark executors: delta-rs panics in forked
processes). Spark jobs read and write through the ``lakehouse_delta`` connector; these helpers cover
the table chores around them: idempotent creation, small upserts, compaction, vacuum, checkpoints and
history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines.connectors.delta import TableLocation, arrow_filesystem

if TYPE_CHECKING:
    import pandas as pd
    from deltalake import DeltaTable
    from pyspark.sql.types import StructType


class TableError(ValueError):
    """A table utility could not do what was asked; the message names the table and the reason."""


def _table(path: str, storage_options: Mapping[str, str] | None) -> DeltaTable:
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(path, dict(storage_options or {}) or None):
        raise TableError(f"no Delta table at {path!r}")
    return DeltaTable(path, storage_options=dict(storage_options or {}) or None)


def _arrow_schema(schema: pa.Schema | StructType) -> pa.Schema:
    if isinstance(schema, pa.Schema):
        return schema
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def table_version(path: str, storage_options: Mapping[str, str] | None = None) -> int | None:
    """Latest version, or None when there is no table yet (lets jobs branch on first runs)."""
    from deltalake import DeltaTable

    options = dict(storage_options or {}) or None
    if not DeltaTable.is_deltatable(path, options):
        return None
    return DeltaTable(path, storage_options=options).version()


def _comparable(schema: pa.Schema) -> list[tuple[str, str]]:
    from deltalake import Schema

    canonical = pa.schema(Schema.from_arrow(schema).to_arrow())
    return [(f.name.lower(), str(f.type)) for f in canonical]


def create_table(
    path: str,
    schema: pa.Schema | StructType,
    partition_by: Sequence[str] = (),
    properties: Mapping[str, str] | None = None,
    storage_options: Mapping[str, str] | None = None,
    description: str | None = None,
) -> int:
    """Create the table if missing and return its version; re-running with the same definition is a no-op.

    An existing table with a different schema or partitioning is an error rather than silently kept:
    a job deploying a new table definition must not run against the old one unnoticed.
    """
    from deltalake import DeltaTable, Schema

    arrow = _arrow_schema(schema)
    options = dict(storage_options or {}) or None
    if not DeltaTable.is_deltatable(path, options):
        DeltaTable.create(
            path,
            Schema.from_arrow(arrow),
            mode="ignore",  # a concurrent creator wins; the comparison below still guards the definition
            partition_by=list(partition_by) or None,
            description=description,
            configuration=dict(properties or {}) or None,
            storage_options=options,
        )
    table = DeltaTable(path, storage_options=options)
    existing = pa.schema(table.schema().to_arrow())
    problems = []
    if _comparable(existing) != _comparable(arrow):
        problems.append(f"schema is {existing.to_string(show_schema_metadata=False)}")
    if list(table.metadata().partition_columns) != list(partition_by):
        problems.append(f"partitioned by {table.metadata().partition_columns}")
    if problems:
        raise TableError(f"table {path!r} exists with a different definition: " + "; ".join(problems))
    return table.version()


def set_properties(path: str, properties: Mapping[str, str], storage_options: Mapping[str, str] | None = None) -> None:
    """Change table properties (e.g. delta.logRetentionDuration) in one commit."""
    _table(path, storage_options).alter.set_table_properties(dict(properties), raise_if_not_exists=False)


def merge(
    path: str,
    source: pa.Table | pd.DataFrame,
    predicate: str,
    *,
    source_alias: str = "s",
    target_alias: str = "t",
    update: bool = True,
    insert: bool = True,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Upsert a small source (dimension rows, corrections) in one MERGE commit; returns delta-rs metrics.

    Large sources belong in Spark; this runs on the driver and holds the source in memory.
    """
    if not (update or insert):
        raise TableError("merge needs update and/or insert")
    data = source if isinstance(source, pa.Table) else pa.Table.from_pandas(source, preserve_index=False)
    merger = _table(path, storage_options).merge(
        source=data, predicate=predicate, source_alias=source_alias, target_alias=target_alias
    )
    if update:
        merger = merger.when_matched_update_all()
    if insert:
        merger = merger.when_not_matched_insert_all()
    return merger.execute()


def compact(
    path: str,
    target_size: int | None = None,
    partition_filters: list[tuple[str, str, Any]] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Bin-pack small files (streaming micro-batches leave many) into ~target_size files; returns metrics."""
    return _table(path, storage_options).optimize.compact(partition_filters=partition_filters, target_size=target_size)


def vacuum(
    path: str,
    retention_hours: int | None = None,
    dry_run: bool = True,
    enforce_retention_duration: bool = True,
    full: bool = False,
    storage_options: Mapping[str, str] | None = None,
) -> list[str]:
    """Delete unreferenced files older than the retention; dry-run by default, returns the files.

    ``full=True`` also lists files no commit ever referenced: orphans of writes that died before their
    commit (a killed driver, a failed task on a lost executor). A retention shorter than the longest
    running query or time-travel need breaks those readers, hence enforce_retention_duration by default.
    """
    return _table(path, storage_options).vacuum(
        retention_hours=retention_hours,
        dry_run=dry_run,
        enforce_retention_duration=enforce_retention_duration,
        full=full,
    )


def last_checkpoint_version(path: str, storage_options: Mapping[str, str] | None = None) -> int | None:
    """Version of the newest checkpoint (from ``_delta_log/_last_checkpoint``), None if there is none."""
    filesystem, root = arrow_filesystem(TableLocation.of(path, storage_options))
    try:
        with filesystem.open_input_stream(f"{root}/_delta_log/_last_checkpoint") as handle:
            return int(json.loads(handle.read())["version"])
    except FileNotFoundError:
        return None


def maybe_checkpoint(path: str, every: int, storage_options: Mapping[str, str] | None = None) -> bool:
    """Write a checkpoint when ``every`` commits have passed since the last one; True if one was written.

    Streaming tables gain a commit per micro-batch; a checkpoint keeps snapshot loading (every read and
    every commit) from replaying thousands of JSON commits.
    """
    if every < 1:
        raise TableError(f"maybe_checkpoint: every must be >= 1, got {every}")
    table = _table(path, storage_options)
    last = last_checkpoint_version(path, storage_options)
    if table.version() - (last if last is not None else -1) < every:
        return False
    table.create_checkpoint()
    return True


def history(path: str, limit: int | None = None, storage_options: Mapping[str, str] | None = None) -> list[dict]:
    """Commit infos, newest first (operation, parameters, metrics, version, timestamp)."""
    return _table(path, storage_options).history(limit)

"""Driver-side table utilities (pipelines.tables) on real delta-rs tables in tmp_path."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipelines import tables

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("day", pa.string())])


def test_table_version_is_none_until_created(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    assert tables.table_version(path) is None
    assert tables.create_table(path, SCHEMA, partition_by=["day"], properties={"delta.appendOnly": "false"}) == 0
    assert tables.table_version(path) == 0


def test_create_table_is_idempotent_and_guards_the_definition(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    tables.create_table(path, SCHEMA, partition_by=["day"], description="events by day")
    write_deltalake(path, pa.table({"id": [1], "name": ["a"], "day": ["d1"]}, schema=SCHEMA), mode="append")
    # Same definition (also as a Spark schema): no new commit.
    spark_schema = StructType(
        [StructField("id", LongType()), StructField("name", StringType()), StructField("day", StringType())]
    )
    assert tables.create_table(path, spark_schema, partition_by=["day"]) == 1
    assert DeltaTable(path).metadata().description == "events by day"
    with pytest.raises(tables.TableError, match=r"different definition.*partitioned by"):
        tables.create_table(path, SCHEMA, partition_by=["name"])
    with pytest.raises(tables.TableError, match="different definition"):
        tables.create_table(path, pa.schema([("id", pa.int32())]), partition_by=["day"])


def test_merge_upserts_small_sources(tmp_path: Path) -> None:
    path = str(tmp_path / "dim")
    write_deltalake(path, pa.table({"id": [1, 2], "name": ["a", "b"], "day": ["d", "d"]}, schema=SCHEMA))
    source = pd.DataFrame({"id": [2, 3], "name": ["B", "c"], "day": ["d", "d"]})
    metrics = tables.merge(path, source, "t.id = s.id")
    assert metrics["num_target_rows_updated"] == 1 and metrics["num_target_rows_inserted"] == 1
    result = DeltaTable(path).to_pyarrow_table().sort_by("id").to_pylist()
    assert [(r["id"], r["name"]) for r in result] == [(1, "a"), (2, "B"), (3, "c")]
    tables.merge(path, pa.table({"id": [4], "name": ["x"], "day": ["d"]}, schema=SCHEMA), "t.id = s.id", insert=False)
    assert DeltaTable(path).to_pyarrow_table().num_rows == 3
    with pytest.raises(tables.TableError, match="no Delta table"):
        tables.merge(str(tmp_path / "missing"), source, "t.id = s.id")


def test_compact_then_vacuum(tmp_path: Path) -> None:
    path = str(tmp_path / "small_files")
    for i in range(6):
        write_deltalake(path, pa.table({"id": [i], "name": [str(i)], "day": ["d"]}, schema=SCHEMA), mode="append")
    before = DeltaTable(path).to_pyarrow_table().sort_by("id")
    metrics = tables.compact(path)
    assert metrics["numFilesRemoved"] == 6 and metrics["numFilesAdded"] == 1
    assert DeltaTable(path).to_pyarrow_table().sort_by("id").equals(before)
    assert len(DeltaTable(path).file_uris()) == 1

    # An orphan from a write that died before its commit is removed too.
    orphan = Path(path) / "part-orphan-c000.snappy.parquet"
    orphan.write_bytes(b"not committed")
    assert len(tables.vacuum(path, retention_hours=0, enforce_retention_duration=False)) == 6  # tombstones only
    dry = tables.vacuum(path, retention_hours=0, enforce_retention_duration=False, full=True)
    assert len(dry) == 7 and any("orphan" in f for f in dry)
    assert len(glob.glob(os.path.join(path, "*.parquet"))) == 8  # dry run deleted nothing
    with pytest.raises(Exception, match="retention"):
        tables.vacuum(path, retention_hours=0, dry_run=False)  # below the table's retention: refused
    tables.vacuum(path, retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
    assert len(glob.glob(os.path.join(path, "*.parquet"))) == 1
    assert DeltaTable(path).to_pyarrow_table().sort_by("id").equals(before)


def test_maybe_checkpoint_every_n_commits(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    write_deltalake(path, pa.table({"id": [0], "name": ["0"], "day": ["d"]}, schema=SCHEMA))
    assert tables.last_checkpoint_version(path) is None
    assert tables.maybe_checkpoint(path, every=3) is False  # versions 0: one commit so far
    for i in range(1, 3):
        write_deltalake(path, pa.table({"id": [i], "name": [str(i)], "day": ["d"]}, schema=SCHEMA), mode="append")
    assert tables.maybe_checkpoint(path, every=3) is True
    assert tables.last_checkpoint_version(path) == 2
    assert tables.maybe_checkpoint(path, every=3) is False
    assert DeltaTable(path).to_pyarrow_table().num_rows == 3  # readable from the checkpoint
    with pytest.raises(tables.TableError, match="every must be >= 1"):
        tables.maybe_checkpoint(path, every=0)


def test_history_and_properties(tmp_path: Path) -> None:
    path = str(tmp_path / "h")
    write_deltalake(path, pa.table({"id": [1], "name": ["a"], "day": ["d"]}, schema=SCHEMA))
    write_deltalake(path, pa.table({"id": [2], "name": ["b"], "day": ["d"]}, schema=SCHEMA), mode="append")
    tables.set_properties(path, {"delta.logRetentionDuration": "interval 7 days"})
    entries = tables.history(path, limit=2)
    assert [e["version"] for e in entries] == [2, 1]
    assert entries[0]["operation"] == "SET TBLPROPERTIES"
    assert DeltaTable(path).metadata().configuration["delta.logRetentionDuration"] == "interval 7 days"

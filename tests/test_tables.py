"""Driver-side table utilities (pipelines.platform.tables) over delta-spark, on tables in tmp_path.

Results are checked with delta-rs as well: every table the platform writes must stay readable by it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipelines.platform import tables

pytestmark = pytest.mark.integration

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("day", pa.string())])


def append(spark, path: str, *rows: tuple[int, str, str]) -> None:
    """One commit, one data file (Spark's task 0 would also leave an empty, uncommitted file behind)."""
    frame = spark.createDataFrame(list(rows), "id bigint, name string, day string").coalesce(1)
    frame.write.format("delta").mode("append").save(path)


def data_files(path: str) -> list[Path]:
    return [p for p in Path(path).rglob("*.parquet") if "_delta_log" not in p.parts]


def test_create_table_is_idempotent_and_guards_the_definition(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    assert tables.table_version(spark, path) is None
    created = tables.create_table(
        spark, path, SCHEMA, partition_by=["day"], properties={"delta.appendOnly": "false"}, description="by day"
    )
    assert created == 0 and tables.table_version(spark, path) == 0
    append(spark, path, (1, "a", "d1"))
    # Same definition (also as a Spark schema): no new commit.
    spark_schema = StructType(
        [StructField("id", LongType()), StructField("name", StringType()), StructField("day", StringType())]
    )
    assert tables.create_table(spark, path, spark_schema, partition_by=["day"]) == 1
    metadata = DeltaTable(path).metadata()
    assert metadata.description == "by day" and metadata.partition_columns == ["day"]
    assert metadata.configuration["delta.appendOnly"] == "false"
    with pytest.raises(tables.TableError, match=r"different definition.*partitioned by \['day'\]"):
        tables.create_table(spark, path, SCHEMA, partition_by=["name"])
    with pytest.raises(tables.TableError, match="different definition: schema is"):
        tables.create_table(spark, path, pa.schema([("id", pa.int32())]), partition_by=["day"])
    assert tables.table_version(spark, path) == 1


def test_merge_upserts_and_inserts_only(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "dim")
    append(spark, path, (1, "a", "d"), (2, "b", "d"))
    source = pd.DataFrame({"id": [2, 3], "name": ["B", "c"], "day": ["d", "d"]})
    metrics = tables.merge(spark, path, source, "t.id = s.id")
    assert (metrics["num_updated_rows"], metrics["num_inserted_rows"]) == (1, 1)
    rows = DeltaTable(path).to_pyarrow_table().sort_by("id").to_pylist()
    assert [(r["id"], r["name"]) for r in rows] == [(1, "a"), (2, "B"), (3, "c")]
    insert_only = pa.table({"id": [3, 4], "name": ["C", "x"], "day": ["d", "d"]}, schema=SCHEMA)
    metrics = tables.merge(spark, path, insert_only, "t.id = s.id", update=False)
    assert (metrics["num_updated_rows"], metrics["num_inserted_rows"]) == (0, 1)
    names = dict(spark.read.format("delta").load(path).select("id", "name").collect())
    assert names == {1: "a", 2: "B", 3: "c", 4: "x"}  # 3 kept its name: insert-only
    with pytest.raises(tables.TableError, match="no Delta table"):
        tables.merge(spark, str(tmp_path / "missing"), source, "t.id = s.id")
    with pytest.raises(tables.TableError, match="update and/or insert"):
        tables.merge(spark, path, source, "t.id = s.id", update=False, insert=False)


def test_compact_then_vacuum(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "small_files")
    for i in range(6):
        append(spark, path, (i, str(i), "d"))
    before = sorted(spark.read.format("delta").load(path).collect())
    assert len(DeltaTable(path).file_uris()) == 6

    metrics = tables.compact(spark, path)
    assert (metrics["numFilesRemoved"], metrics["numFilesAdded"]) == (6, 1)
    assert sorted(spark.read.format("delta").load(path).collect()) == before
    assert len(DeltaTable(path).file_uris()) == 1
    assert DeltaTable(path).to_pyarrow_table().num_rows == 6  # delta-rs reads the compacted table
    assert tables.compact(spark, path)["numFilesAdded"] == 0  # nothing left to compact

    # An orphan from a write that died before its commit is found too (VACUUM lists the directory).
    orphan = Path(path) / "part-orphan-c000.snappy.parquet"
    orphan.write_bytes(b"not committed")
    with pytest.raises(Exception, match="RETENTION_PERIOD_TOO_SHORT"):
        tables.vacuum(spark, path, retention_hours=0)  # below the table's 7 days: refused
    lite = tables.vacuum(spark, path, retention_hours=0, enforce_retention_duration=False, full=False)
    assert len(lite) == 6 and not any("orphan" in f for f in lite)  # removed by OPTIMIZE, from the log
    dry = tables.vacuum(spark, path, retention_hours=0, enforce_retention_duration=False)
    assert len(dry) == 7 and any(f.endswith(orphan.name) for f in dry)
    assert len(data_files(path)) == 8  # a dry run deletes nothing
    assert spark.conf.get(tables.RETENTION_CHECK) == "true"  # switched off for the call only

    deleted = tables.vacuum(spark, path, retention_hours=0, dry_run=False, enforce_retention_duration=False)
    assert deleted == dry
    assert len(data_files(path)) == 1
    assert sorted(spark.read.format("delta").load(path).collect()) == before
    assert [e["operation"] for e in tables.history(spark, path, limit=2)] == ["VACUUM END", "VACUUM START"]


def test_history_and_properties(spark, tmp_path: Path) -> None:
    path = str(tmp_path / "h")
    append(spark, path, (1, "a", "d"))
    append(spark, path, (2, "b", "d"))
    tables.set_properties(spark, path, {"delta.logRetentionDuration": "interval 7 days", "team": "it's ours"})
    entries = tables.history(spark, path, limit=2)
    assert [e["version"] for e in entries] == [2, 1]
    assert entries[0]["operation"] == "SET TBLPROPERTIES"
    assert entries[1]["operation"] == "WRITE" and entries[1]["operationMetrics"]["numOutputRows"] == "1"
    assert len(tables.history(spark, path)) == 3
    configuration = DeltaTable(path).metadata().configuration
    assert configuration["delta.logRetentionDuration"] == "interval 7 days" and configuration["team"] == "it's ours"
    with pytest.raises(tables.TableError, match="no Delta table"):
        tables.history(spark, str(tmp_path / "missing"))


def test_metrics_of_an_observation_no_query_covered_fail_fast_instead_of_hanging(spark) -> None:
    """Observation.get waits forever for metrics no query will collect; platform.batch.observed says so at once."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from pipelines.platform.batch import BatchJobError, observed

    observation = Observation("never_run")
    frame = spark.range(3).observe(observation, F.count(F.lit(1)).alias("rows"))
    with pytest.raises(BatchJobError, match="never_run metrics were never collected"):
        observed(observation)
    frame.collect()
    assert observed(observation) == {"rows": 3}

"""The ``lakehouse_delta`` connector against real Spark (shared session), real delta-rs and local tables.

Every table is written by the connector and, where it matters, cross-checked with delta-rs directly so a
bug cannot hide behind a symmetric read/write mistake.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, TableFeatures, write_deltalake
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    ByteType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from pipelines import tables
from pipelines.connectors.delta import PAUSE_BEFORE_COMMIT_ENV, SHORT_NAME, planned_files

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC


def write(df: DataFrame, path: Path | str, mode: str = "append", **options: str) -> None:
    df.write.format(SHORT_NAME).mode(mode).options(**options).save(str(path))


def read(spark: SparkSession, path: Path | str, **options: str) -> DataFrame:
    return spark.read.format(SHORT_NAME).options(**options).load(str(path))


def rows(df: DataFrame) -> list[tuple]:
    return sorted((tuple(r) for r in df.collect()), key=repr)


def files_on_disk(path: Path) -> set[str]:
    return {os.path.relpath(p, path) for p in glob.glob(str(path / "**" / "*.parquet"), recursive=True)}


def files_in_snapshot(path: Path) -> set[str]:
    return {uri[len(str(path)) + 1 :] for uri in DeltaTable(str(path)).file_uris()}


def commit_actions(path: Path, version: int) -> list[dict]:
    with open(path / "_delta_log" / f"{version:020d}.json") as handle:
        return [json.loads(line) for line in handle if line.strip()]


ALL_TYPES = StructType(
    [
        StructField("id", LongType()),
        StructField("b", ByteType()),
        StructField("s16", ShortType()),
        StructField("i", IntegerType()),
        StructField("f", FloatType()),
        StructField("d", DoubleType()),
        StructField("dec", DecimalType(10, 2)),
        StructField("big", DecimalType(38, 6)),
        StructField("name", StringType()),
        StructField("raw", BinaryType()),
        StructField("flag", BooleanType()),
        StructField("day", DateType()),
        StructField("ts", TimestampType()),
        StructField("ntz", TimestampNTZType()),
        StructField("tags", ArrayType(StringType())),
        StructField("attrs", MapType(StringType(), IntegerType())),
        StructField("geo", StructType([StructField("lat", DoubleType()), StructField("city", StringType())])),
    ]
)


def all_types_rows() -> list[tuple]:
    full = (
        1,
        -7,
        300,
        70000,
        1.5,
        2.25,
        Decimal("12.34"),
        Decimal("123456789012345678901234567890.123456"),
        "héllo wörld",
        b"\x00\x01",
        True,
        dt.date(2026, 11, 1),
        dt.datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC),
        dt.datetime(2026, 11, 1, 10, 0, 0, 654321),
        ["a", None, "c"],
        {"k": 1},
        (52.1, "Berlin"),
    )
    empty = (2, *([None] * (len(full) - 1)))
    return [full, empty]


def test_round_trip_all_types_with_nulls(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "types"
    source = spark.createDataFrame(all_types_rows(), ALL_TYPES)
    write(source.repartition(2), table)

    result = read(spark, table)
    assert result.schema.simpleString() == ALL_TYPES.simpleString()
    assert rows(result) == rows(source)
    # delta-rs sees the same table: standard types, stats and paths.
    delta = DeltaTable(str(table))
    arrow = delta.to_pyarrow_table().sort_by("id")
    assert arrow.column("ts")[0].as_py() == dt.datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert arrow.column("ntz")[0].as_py() == dt.datetime(2026, 11, 1, 10, 0, 0, 654321)
    assert arrow.column("big")[0].as_py() == Decimal("123456789012345678901234567890.123456")
    assert arrow.column("name").to_pylist() == ["héllo wörld", None]
    assert "timestampNtz" in (delta.protocol().reader_features or [])
    assert delta.count() == 2  # numRecords in the stats of every file


def test_partitioned_round_trip_with_awkward_partition_values(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "parts"
    values = ["plain", "with space", "colon:slash/", "ünï", "100%", None]
    data = [
        (i, v, dt.date(2026, 11, 1 + i % 2), dt.datetime(2026, 11, 1, 10, 30, 15, 250000, tzinfo=UTC))
        for i, v in enumerate(values)
    ]
    schema = "id long, tenant string, event_date date, hour_ts timestamp"
    source = spark.createDataFrame(data, schema)
    write(source, table, partitionBy="tenant,event_date,hour_ts")

    result = read(spark, table)
    assert result.schema.simpleString() == "struct<id:bigint,tenant:string,event_date:date,hour_ts:timestamp>"
    assert rows(result) == rows(source)
    delta = DeltaTable(str(table))
    assert delta.metadata().partition_columns == ["tenant", "event_date", "hour_ts"]
    by_id = {r["id"]: r for r in delta.to_pyarrow_table().to_pylist()}
    assert by_id[2]["tenant"] == "colon:slash/"
    assert by_id[5]["tenant"] is None
    assert by_id[0]["hour_ts"] == dt.datetime(2026, 11, 1, 10, 30, 15, 250000, tzinfo=UTC)
    # Filters on the awkward values prune to exactly their file.
    colon = read(spark, table, filter="tenant = 'colon:slash/'")
    assert rows(colon.select("id")) == [(2,)]
    assert len(planned_files(colon)) == 1
    assert rows(read(spark, table, filter="tenant = '100%'").select("id")) == [(4,)]
    assert rows(read(spark, table, filter="hour_ts = '2026-11-01 10:30:15.25'").select("id")) == [
        (i,) for i in range(6)
    ]
    assert rows(result.filter(F.col("tenant").isNull()).select("id")) == [(5,)]


def test_reads_tables_written_by_delta_rs(spark: SparkSession, tmp_path: Path) -> None:
    """Interop the other way: delta-rs' own paths, stats, partition encoding and schema evolution."""
    table = str(tmp_path / "by_delta_rs")
    first = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "tenant": ["a b", "c:d", None],
            "ts": pa.array([dt.datetime(2026, 11, 1, 10, tzinfo=UTC)] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(table, first, partition_by=["tenant"])
    second = first.append_column("extra", pa.array(["x", "y", "z"]))
    write_deltalake(table, second, mode="append", schema_mode="merge")

    result = read(spark, table)
    assert result.schema.simpleString() == "struct<id:bigint,ts:timestamp,tenant:string,extra:string>"
    expected = DeltaTable(table).to_pyarrow_table().to_pylist()
    assert rows(result) == sorted(
        ((r["id"], r["ts"].replace(tzinfo=None), r["tenant"], r["extra"]) for r in expected), key=repr
    )
    assert read(spark, table, filter="tenant = 'c:d'").count() == 2
    assert read(spark, table, filter="extra IS NULL").count() == 3


@pytest.fixture
def events_table(spark: SparkSession, tmp_path: Path) -> Path:
    """2 tenants x 3 days (+ null tenant), one file per partition, ids 0..59 spread over them."""
    table = tmp_path / "events"
    data = [
        (i, ["t1", "t2", None][i % 3], dt.date(2026, 11, 1 + (i // 3) % 3), f"user-{i:03d}", i if i % 7 else None)
        for i in range(60)
    ]
    df = spark.createDataFrame(data, "id long, tenant_id string, event_date date, user string, score long")
    write(df.coalesce(1), table, partitionBy="event_date,tenant_id")
    return table


def test_filter_option_prunes_partitions(spark: SparkSession, events_table: Path) -> None:
    all_files = planned_files(read(spark, events_table))
    assert len(all_files) == 9 and set(all_files) == files_in_snapshot(events_table)

    one = read(spark, events_table, filter="event_date = DATE '2026-11-01' AND tenant_id = 't1'")
    assert planned_files(one) == [f for f in all_files if f.startswith("event_date=2026-11-01/tenant_id=t1/")]
    assert sorted(r.id for r in one.collect()) == [i for i in range(60) if i % 3 == 0 and (i // 3) % 3 == 0]

    range_in = read(spark, events_table, filter="event_date >= '2026-11-02' AND tenant_id IN ('t1', 't2')")
    assert len(planned_files(range_in)) == 4
    assert range_in.count() == sum(1 for i in range(60) if i % 3 != 2 and (i // 3) % 3 >= 1)

    nulls = read(spark, events_table, filter="tenant_id IS NULL")
    assert len(planned_files(nulls)) == 3
    assert nulls.count() == 20


def test_reused_dataframe_gives_right_answers(spark: SparkSession, events_table: Path) -> None:
    """The query sequence that makes pyspark 4.3.0 replay a pushdown-planned scan (see the module doc)."""
    events = read(spark, events_table)
    assert events.filter("tenant_id IS NULL").count() == 20
    assert events.count() == 60
    assert events.filter("tenant_id = 't1' OR user = 'user-001'").count() == 21
    left = events.filter("tenant_id = 't1'").select("id")
    right = events.filter("event_date = DATE '2026-11-02'").select("id")
    assert left.join(right, "id").count() == sum(1 for i in range(60) if i % 3 == 0 and (i // 3) % 3 == 1)


def test_opt_in_spark_pushdown_prunes_fresh_dataframes(spark: SparkSession, events_table: Path) -> None:
    def pushed(condition: str) -> DataFrame:
        return read(spark, events_table, sparkFilterPushdown="true").filter(condition)

    one = pushed("event_date = DATE'2026-11-01' AND tenant_id = 't1'")
    assert len(planned_files(one)) == 1
    assert one.count() == 7
    assert len(planned_files(pushed("tenant_id IS NULL"))) == 3
    assert len(planned_files(pushed("user >= 'user-057'"))) == 3  # stats: only the files holding ids 57..59
    # Not pushable (OR across columns): every file is read and Spark filters.
    assert len(planned_files(pushed("tenant_id = 't1' OR user = 'user-001'"))) == 9


def test_stats_skip_files_and_respect_millisecond_truncation(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "stats"
    base = dt.datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
    data = [
        (i, f"name-{i:03d}", base + dt.timedelta(seconds=i, microseconds=500), None if i < 25 else i)
        for i in range(100)
    ]
    df = spark.createDataFrame(data, "id long, name string, ts timestamp, maybe long")
    write(df.coalesce(1).sortWithinPartitions("id"), table, maxRowsPerFile="25")
    assert len(files_in_snapshot(table)) == 4

    def where(condition: str) -> DataFrame:
        return read(spark, table, filter=condition)

    assert len(planned_files(where("id >= 80"))) == 1
    assert where("id >= 80").count() == 20
    assert len(planned_files(where("id = 30"))) == 1
    assert len(planned_files(where("id IN (3, 98)"))) == 2
    assert len(planned_files(where("name >= 'name-060' AND name < 'name-070'"))) == 1
    assert where("name >= 'name-060' AND name < 'name-070'").count() == 10
    assert len(planned_files(where("maybe IS NULL"))) == 1
    assert len(planned_files(where("maybe > 0"))) == 3
    assert where("maybe > 0").count() == 75
    # Timestamp stats are kept in milliseconds: the row at 10:00:24.000500 must survive ts >= 10:00:24.000400.
    assert sorted(r.id for r in where("ts >= '2026-11-01 10:00:24.000400'").collect())[:2] == [24, 25]
    assert where("ts > '2026-11-01T10:00:24.000499Z'").count() == 76
    assert len(planned_files(where("ts >= '2026-11-01 10:00:24.000400'"))) == 4  # the first file holds id 24
    assert len(planned_files(where("ts >= '2026-11-01 10:00:25'"))) == 3
    boundary = read(spark, table, sparkFilterPushdown="true").filter(
        F.col("ts") >= F.lit(dt.datetime(2026, 11, 1, 10, 0, 24, 400, tzinfo=UTC))
    )
    assert len(planned_files(boundary)) == 4
    assert boundary.count() == 76
    later = read(spark, table, sparkFilterPushdown="true").filter(
        F.col("ts") >= F.lit(dt.datetime(2026, 11, 1, 10, 0, 25, tzinfo=UTC))
    )
    assert len(planned_files(later)) == 3
    assert later.count() == 75


SPARK_FILTERS = [
    "tenant_id = 't1'",
    "tenant_id <> 't1'",
    "NOT (tenant_id = 't2')",
    "tenant_id IS NULL",
    "tenant_id IS NOT NULL",
    "tenant_id IN ('t1', NULL)",
    "tenant_id NOT IN ('t1', NULL)",
    "tenant_id <=> NULL",
    "tenant_id <=> 't2'",
    "tenant_id > 't1'",
    "tenant_id LIKE 't%'",
    "event_date < '2026-11-02'",
    "event_date BETWEEN '2026-11-02' AND '2026-11-03' AND tenant_id = 't2'",
    "score > 30",
    "score <=> NULL",
    "NOT (score = 14)",
    "score IN (1, 2, 70)",
    "user LIKE '%9'",
    "user LIKE 'user-05%'",
    "user >= 'user-050'",
]


def test_pushed_filters_never_change_results(spark: SparkSession, events_table: Path) -> None:
    """Same rows as Spark evaluating each filter itself on an in-memory copy (null semantics included)."""
    everything = read(spark, events_table)
    reference = spark.createDataFrame(everything.collect(), everything.schema).cache()
    for condition in SPARK_FILTERS:
        pushed = read(spark, events_table, sparkFilterPushdown="true").filter(condition)  # fresh DataFrame
        assert rows(pushed) == rows(reference.filter(condition)), condition


OPTION_FILTERS = [
    "tenant_id = 't1'",
    "tenant_id <> 't1'",
    "tenant_id IS NULL",
    "tenant_id IS NOT NULL",
    "tenant_id IN ('t1', 'zz')",
    "tenant_id NOT IN ('t1')",
    "event_date < '2026-11-02'",
    "event_date BETWEEN '2026-11-02' AND '2026-11-03' AND tenant_id = 't2'",
    "score > 30",
    "score IS NULL",
    "score <> 14",
    "score IN (1, 2, 70)",
    "score NOT IN (1, 2)",
    "user >= 'user-050' AND score IS NOT NULL",
    "(tenant_id = 't2') AND user < 'user-010'",
]


def test_filter_option_has_sql_semantics(spark: SparkSession, events_table: Path) -> None:
    everything = read(spark, events_table)
    reference = spark.createDataFrame(everything.collect(), everything.schema).cache()
    for condition in OPTION_FILTERS:
        assert rows(read(spark, events_table, filter=condition)) == rows(reference.filter(condition)), condition


def test_filter_option_refuses_what_it_cannot_do_exactly(spark: SparkSession, events_table: Path) -> None:
    for condition, reason in [
        ("tenant_id = 't1' OR score > 3", "OR is not supported"),
        ("nope = 1", "'nope' cannot be used in the filter option"),
        ("score = 'abc'", "does not fit column 'score'"),
    ]:
        with pytest.raises(PySparkException, match=reason):
            read(spark, events_table, filter=condition).collect()


def test_time_travel_by_version_and_timestamp(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "history"
    write(spark.createDataFrame([(1,)], "x long"), table)
    time.sleep(0.05)
    write(spark.createDataFrame([(2,)], "x long"), table)
    time.sleep(0.05)
    write(spark.createDataFrame([(3,)], "x long"), table, mode="overwrite")

    assert rows(read(spark, table)) == [(3,)]
    assert rows(read(spark, table, versionAsOf="0")) == [(1,)]
    assert rows(read(spark, table, versionAsOf="1")) == [(1,), (2,)]
    # A commit's time is its log file's modification time (the Delta protocol without in-commit timestamps),
    # which can trail commitInfo.timestamp by milliseconds: aim between the log files of versions 1 and 2.
    log = table / "_delta_log"
    mtimes = [(log / f"{version:020d}.json").stat().st_mtime for version in (1, 2)]
    between = dt.datetime.fromtimestamp(sum(mtimes) / 2, tz=UTC).isoformat()
    assert rows(read(spark, table, timestampAsOf=between)) == [(1,), (2,)]
    with pytest.raises(PySparkException, match="history"):
        read(spark, table, versionAsOf="9").collect()


def test_snapshot_is_pinned_when_dataframe_is_defined(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "pinned"
    write(spark.createDataFrame([(i,) for i in range(10)], "x long"), table)
    snapshot = read(spark, table)
    planned = planned_files(snapshot)  # planned: the file list is fixed now
    write(spark.createDataFrame([(i,) for i in range(10, 15)], "x long"), table)  # concurrent append

    assert planned_files(snapshot) == planned
    assert snapshot.count() == 10
    assert snapshot.filter("x >= 0").count() == 10  # a new query on the same DataFrame: same snapshot
    assert read(spark, table).count() == 15


def test_refuses_deletion_vectors_and_column_mapping(spark: SparkSession, tmp_path: Path) -> None:
    dv_table = tmp_path / "dv"
    write_deltalake(str(dv_table), pa.table({"x": [1, 2]}))
    DeltaTable(str(dv_table)).alter.add_feature(TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    with pytest.raises(PySparkException, match=r"deletionVectors.*wrong rows|deletionVectors") as error:
        read(spark, dv_table).collect()
    assert str(dv_table) in str(error.value)
    with pytest.raises(PySparkException, match="deletionVectors"):
        write(spark.createDataFrame([(3,)], "x long"), dv_table)

    # Column mapping: crafted protocol + metadata commit (delta-rs cannot create such tables).
    cm_table = tmp_path / "cm"
    write_deltalake(str(cm_table), pa.table({"x": [1]}))
    metadata = next(a["metaData"] for a in commit_actions(cm_table, 0) if "metaData" in a)
    metadata["configuration"] = {"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "1"}
    protocol = {"minReaderVersion": 2, "minWriterVersion": 5}
    with open(cm_table / "_delta_log" / f"{1:020d}.json", "w") as handle:
        handle.write(json.dumps({"protocol": protocol}) + "\n" + json.dumps({"metaData": metadata}) + "\n")
    with pytest.raises(PySparkException, match="columnMapping"):
        read(spark, cm_table).collect()


def test_append_then_overwrite(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "modes"
    write(spark.createDataFrame([(1, "a")], "id long, v string"), table)
    write(spark.createDataFrame([(2, "b")], "id long, v string"), table)
    assert rows(read(spark, table)) == [(1, "a"), (2, "b")]
    write(spark.createDataFrame([(3, "c")], "id long, v string"), table, mode="overwrite")
    assert rows(read(spark, table)) == [(3, "c")]
    delta = DeltaTable(str(table))
    assert delta.version() == 2
    assert [h["operation"] for h in delta.history()] == ["WRITE", "WRITE", "CREATE TABLE"]
    assert files_in_snapshot(table) < files_on_disk(table)  # old files stay for time travel until vacuum


def test_overwrite_schema_and_partition_by_option(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "reshape"
    write(spark.createDataFrame([(1, "a", "x")], "id long, name string, k string"), table, partitionBy="k")
    reshaped = spark.createDataFrame([("one", "x")], "id string, k string")
    with pytest.raises(PySparkException, match="column 'id': table has bigint, data has string"):
        write(reshaped, table, mode="overwrite")
    write(reshaped, table, mode="overwrite", overwriteSchema="true")
    result = read(spark, table)
    assert result.schema.simpleString() == "struct<id:string,k:string>"
    assert rows(result) == [("one", "x")]
    with pytest.raises(PySparkException, match="partitioning is fixed"):
        write(reshaped, table, partitionBy="id")
    # Spark itself rejects DataFrameWriter.partitionBy() for Python data sources: hence the option.
    with pytest.raises(PySparkException, match="partitioning"):
        reshaped.write.format(SHORT_NAME).mode("append").partitionBy("k").save(str(tmp_path / "other"))


def partitioned_days(spark: SparkSession, path: Path) -> None:
    data = [(f"{d}-{t}-old", dt.date(2026, 11, d), t) for d in (1, 2, 3) for t in ("t1", "t2")]
    write(
        spark.createDataFrame(data, "v string, event_date date, tenant_id string"),
        path,
        partitionBy="event_date,tenant_id",
    )


REPLACE = "event_date >= '2026-11-01' AND event_date <= '2026-11-02' AND tenant_id = 't1'"


def test_replace_where_swaps_matching_partitions_in_one_commit(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "replace"
    partitioned_days(spark, table)
    new = spark.createDataFrame(
        [("1-t1-new", dt.date(2026, 11, 1), "t1"), ("2-t1-new", dt.date(2026, 11, 2), "t1")],
        "v string, event_date date, tenant_id string",
    )
    write(new, table, mode="overwrite", replaceWhere=REPLACE)

    assert sorted(r.v for r in read(spark, table).collect()) == [
        "1-t1-new",
        "1-t2-old",
        "2-t1-new",
        "2-t2-old",
        "3-t1-old",
        "3-t2-old",
    ]
    delta = DeltaTable(str(table))
    assert delta.version() == 1  # one atomic commit: removes and adds together
    actions = commit_actions(table, 1)
    removed = sorted(a["remove"]["partitionValues"]["event_date"] for a in actions if "remove" in a)
    added = sorted(a["add"]["partitionValues"]["event_date"] for a in actions if "add" in a)
    assert removed == added == ["2026-11-01", "2026-11-02"]
    assert all(a["remove"]["partitionValues"]["tenant_id"] == "t1" for a in actions if "remove" in a)


def test_replace_where_rejects_rows_outside_predicate(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "replace_bad"
    partitioned_days(spark, table)
    before_disk = files_on_disk(table)
    bad = spark.createDataFrame(
        [
            ("ok", dt.date(2026, 11, 1), "t1"),
            ("outside", dt.date(2026, 11, 3), "t1"),
            ("t2", dt.date(2026, 11, 2), "t2"),
        ],
        "v string, event_date date, tenant_id string",
    )
    with pytest.raises(PySparkException, match="does not match replaceWhere") as error:
        write(bad, table, mode="overwrite", replaceWhere=REPLACE)
    assert "event_date=2026-11-03" in str(error.value) and "tenant_id=t2" in str(error.value)
    assert DeltaTable(str(table)).version() == 0
    assert files_on_disk(table) == before_disk  # the written files were removed again
    assert len(read(spark, table).collect()) == 6


def test_replace_where_only_on_partition_columns(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "replace_col"
    partitioned_days(spark, table)
    df = spark.createDataFrame([("x", dt.date(2026, 11, 1), "t1")], "v string, event_date date, tenant_id string")
    with pytest.raises(PySparkException, match="'v' is not a partition column"):
        write(df, table, mode="overwrite", replaceWhere="v = 'x'")
    with pytest.raises(PySparkException, match="OR is not supported"):
        write(df, table, mode="overwrite", replaceWhere="tenant_id = 't1' OR tenant_id = 't2'")
    with pytest.raises(PySparkException, match="needs mode"):
        write(df, table, mode="append", replaceWhere="tenant_id = 't1'")


def test_schema_mismatch_lists_every_column(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "strict"
    write(spark.createDataFrame([(1, "a", 1.0)], "id long, name string, score double"), table)
    bad = spark.createDataFrame([("1", "a", 2)], "id string, name string, extra int")
    with pytest.raises(PySparkException) as error:
        write(bad, table)
    message = str(error.value)
    assert "schema mismatch" in message
    assert "column 'id': table has bigint, data has string" in message
    assert "column 'extra' (int) is not in the table" in message
    assert DeltaTable(str(table)).version() == 0
    # Missing nullable columns and integer widening are fine (like Spark's Delta writer).
    write(spark.createDataFrame([(2, "b")], "id int, name string"), table)
    assert rows(read(spark, table)) == [(1, "a", 1.0), (2, "b", None)]


def test_merge_schema_adds_nullable_columns(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "evolve"
    write(spark.createDataFrame([(1, "a")], "id long, name string"), table)
    write(
        spark.createDataFrame([(2, "b", dt.date(2026, 11, 1))], "id long, name string, day date"),
        table,
        mergeSchema="true",
    )
    result = read(spark, table)
    assert result.schema.simpleString() == "struct<id:bigint,name:string,day:date>"
    assert rows(result) == [(1, "a", None), (2, "b", dt.date(2026, 11, 1))]
    assert all(f.nullable for f in result.schema.fields)


def test_idempotent_batch_write_with_txn_options(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "txn"
    df = spark.createDataFrame([(1,), (2,)], "x long")
    write(df, table, txnAppId="loader", txnVersion="7")
    write(df, table, txnAppId="loader", txnVersion="7")  # a retried job: skipped, its files removed
    write(df, table, txnAppId="loader", txnVersion="6")  # older: skipped too
    assert read(spark, table).count() == 2
    assert DeltaTable(str(table)).transaction_version("loader") == 7
    assert files_on_disk(table) == files_in_snapshot(table)


def test_table_properties_file_size_and_append_only(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "props"
    df = spark.range(1000).select(F.col("id"), F.lit("x").alias("pad"))
    write(df.coalesce(1), table, **{"delta.appendOnly": "true", "maxRowsPerFile": "300", "compression": "zstd"})
    delta = DeltaTable(str(table))
    assert delta.metadata().configuration["delta.appendOnly"] == "true"
    files = files_in_snapshot(table)
    assert len(files) == 4 and all(f.endswith(".zstd.parquet") for f in files)
    assert sorted(pq.ParquetFile(table / f).metadata.num_rows for f in files) == [100, 300, 300, 300]
    with pytest.raises(PySparkException, match="append-only"):
        write(df, table, mode="overwrite")
    with pytest.raises(PySparkException, match="unknown or unsupported table property"):
        write(df, tmp_path / "other", **{"delta.nonsense": "1"})


def test_file_size_target_and_read_partitions(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "sizes"
    df = spark.range(50_000).select("id", (F.col("id") * 7 % 1000).alias("v")).coalesce(1)
    write(df, table, targetFileSizeBytes="100000")
    files = files_in_snapshot(table)
    sizes = sorted(os.path.getsize(table / f) for f in files)
    assert len(files) >= 3
    assert all(size >= 100_000 for size in sizes[1:])  # only the task's last file may be smaller
    assert sum(pq.ParquetFile(table / f).metadata.num_rows for f in files) == 50_000

    assert read(spark, table).rdd.getNumPartitions() == 1  # a small table: one task
    one_file_each = read(spark, table, maxBytesPerPartition="1", openCostInBytes="0", minPartitions="1")
    assert one_file_each.rdd.getNumPartitions() == len(files)
    assert one_file_each.agg(F.sum("id")).first()[0] == sum(range(50_000))


def test_failed_write_leaves_no_files(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "failing"
    write(spark.createDataFrame([(0,)], "id long"), table)
    before = files_on_disk(table)

    @F.udf("long")
    def explode_on_77(x):  # no type hints: pyspark would try to read them as a pandas UDF signature
        if x == 77:
            raise ValueError("boom")
        return x

    bad = spark.range(100).repartition(2).select(explode_on_77("id").alias("id"))
    with pytest.raises(PySparkException, match="boom"):
        write(bad, table)
    assert DeltaTable(str(table)).version() == 0
    assert files_on_disk(table) == before


def run_file_stream(spark: SparkSession, source: Path, table: Path, checkpoint: Path) -> None:
    query = (
        spark.readStream.schema("id long, tenant string")
        .option("maxFilesPerTrigger", 1)
        .parquet(str(source))
        .writeStream.format(SHORT_NAME)
        .option("checkpointLocation", str(checkpoint))
        .option("partitionBy", "tenant")
        .trigger(availableNow=True)
        .start(str(table))
    )
    query.awaitTermination(120)
    assert query.exception() is None


def add_source_file(source: Path, index: int, ids: range) -> None:
    source.mkdir(parents=True, exist_ok=True)
    data = pa.table({"id": pa.array(list(ids), pa.int64()), "tenant": [f"t{i % 2}" for i in ids]})
    pq.write_table(data, source / f"part-{index:03d}.parquet")


def query_id(checkpoint: Path) -> str:
    return json.loads((checkpoint / "metadata").read_text())["id"]


def test_stream_sink_exactly_once_under_batch_replay(spark: SparkSession, tmp_path: Path) -> None:
    source, table, checkpoint = tmp_path / "src", tmp_path / "stream", tmp_path / "cp"
    for index in range(3):
        add_source_file(source, index, range(index * 10, index * 10 + 10))
    run_file_stream(spark, source, table, checkpoint)
    delta = DeltaTable(str(table))
    assert delta.transaction_version(query_id(checkpoint)) == 2
    version_before = delta.version()
    assert sorted(r.id for r in read(spark, table).collect()) == list(range(30))

    # Forget that batch 2 was committed: Spark re-executes it on restart and the sink must skip it.
    for name in ("2", ".2.crc"):
        (checkpoint / "commits" / name).unlink(missing_ok=True)
    run_file_stream(spark, source, table, checkpoint)

    assert DeltaTable(str(table)).version() == version_before
    assert sorted(r.id for r in read(spark, table).collect()) == list(range(30))
    assert files_on_disk(table) == files_in_snapshot(table)  # the replay's files were deleted

    add_source_file(source, 3, range(30, 35))
    run_file_stream(spark, source, table, checkpoint)
    assert sorted(r.id for r in read(spark, table).collect()) == list(range(35))
    assert DeltaTable(str(table)).transaction_version(query_id(checkpoint)) == 3


def test_stream_sink_complete_mode_replaces_the_table(spark: SparkSession, tmp_path: Path) -> None:
    source, table, checkpoint = tmp_path / "src", tmp_path / "totals", tmp_path / "cp"
    add_source_file(source, 0, range(0, 10))
    add_source_file(source, 1, range(10, 13))
    query = (
        spark.readStream.schema("id long, tenant string")
        .option("maxFilesPerTrigger", 1)
        .parquet(str(source))
        .groupBy("tenant")
        .count()
        .writeStream.format(SHORT_NAME)
        .outputMode("complete")
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start(str(table))
    )
    query.awaitTermination(120)
    assert query.exception() is None
    assert rows(read(spark, table)) == [("t0", 7), ("t1", 6)]
    delta = DeltaTable(str(table))
    assert delta.transaction_version(query_id(checkpoint)) == 1
    assert [h["operationParameters"].get("mode") for h in delta.history()][:1] == ["Overwrite"]


def test_stream_sink_needs_a_stable_app_id(spark: SparkSession, tmp_path: Path) -> None:
    """With the checkpoint root set in conf, the sink cannot see the query id: it must refuse."""
    spark.conf.set("spark.sql.streaming.checkpointLocation", str(tmp_path / "checkpoints"))
    try:
        with pytest.raises(PySparkException, match="txnAppId"):
            query = (
                spark.readStream.format("rate")
                .load()
                .writeStream.format(SHORT_NAME)
                .queryName("no_app_id")
                .start(str(tmp_path / "t"))
            )
            try:
                query.awaitTermination(60)
            finally:
                query.stop()
    finally:
        spark.conf.unset("spark.sql.streaming.checkpointLocation")


CRASHING_DRIVER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from pipelines.config import load_settings
    from pipelines.spark import build_spark
    spark = build_spark(load_settings(environ={{**os.environ, "LAKEHOUSE_PROFILE": "local",
                                               "LAKEHOUSE__SPARK__MASTER": "local[1]"}}), app_name="crash-test")
    query = (spark.readStream.schema("id long, tenant string").option("maxFilesPerTrigger", 1)
             .parquet({source!r}).writeStream.format("lakehouse_delta")
             .option("checkpointLocation", {checkpoint!r}).option("partitionBy", "tenant")
             .trigger(availableNow=True).start({table!r}))
    query.awaitTermination()
    """
)


@pytest.mark.slow
def test_driver_killed_between_write_and_commit(spark: SparkSession, tmp_path: Path) -> None:
    source, table, checkpoint = tmp_path / "src", tmp_path / "crash", tmp_path / "cp"
    add_source_file(source, 0, range(0, 10))
    run_file_stream(spark, source, table, checkpoint)  # batch 0 committed normally
    add_source_file(source, 1, range(10, 20))

    marker = tmp_path / "paused"
    script = tmp_path / "driver.py"
    script.write_text(
        CRASHING_DRIVER.format(root=str(PROJECT_ROOT), source=str(source), checkpoint=str(checkpoint), table=str(table))
    )
    env = {**os.environ, PAUSE_BEFORE_COMMIT_ENV: str(marker), "SPARK_LOCAL_IP": "127.0.0.1"}
    child = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-3000:] if child.stderr else "child died"
            assert time.monotonic() < deadline, "the child never reached the commit"
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the driver, its JVM and Python workers: one process group
        child.wait(30)
        if child.stderr:
            child.stderr.close()

    # Batch 1's files are on disk but not committed: invisible, and the table is still at batch 0.
    assert DeltaTable(str(table)).transaction_version(query_id(checkpoint)) == 0
    orphans = files_on_disk(table) - files_in_snapshot(table)
    assert orphans
    assert sorted(r.id for r in read(spark, table).collect()) == list(range(10))

    run_file_stream(spark, source, table, checkpoint)  # restart: Spark re-runs batch 1
    assert sorted(r.id for r in read(spark, table).collect()) == list(range(20))  # no loss, no duplicate
    assert DeltaTable(str(table)).transaction_version(query_id(checkpoint)) == 1
    assert orphans.isdisjoint(files_in_snapshot(table))
    # The dead attempt's files are what a full vacuum is for.
    removed = tables.vacuum(str(table), retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
    assert {os.path.relpath(p, table) if os.path.isabs(p) else p for p in removed} == orphans
    assert files_on_disk(table) == files_in_snapshot(table)


CONCURRENT_APPENDER = textwrap.dedent(
    """
    import sys
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType
    from pipelines.connectors.delta import DeltaBatchWriter, build_write_plan
    path, writer_id, commits = sys.argv[1], sys.argv[2], int(sys.argv[3])
    schema = StructType([StructField("writer", StringType()), StructField("seq", LongType())])
    for seq in range(commits):
        writer = DeltaBatchWriter(build_write_plan({{"path": path, "partitionBy": "writer"}}, schema, overwrite=False))
        batch = pa.record_batch({{"writer": [writer_id] * 3, "seq": [seq] * 3}})
        message = writer.write(iter([batch]))   # executor half (pyarrow)
        writer.commit([message])                 # driver half (delta-rs commit, retried on conflicts)
    """
)


def test_concurrent_appenders_lose_nothing(spark: SparkSession, tmp_path: Path) -> None:
    table = tmp_path / "concurrent"
    write(spark.createDataFrame([("seed", -1)], "writer string, seq long"), table, partitionBy="writer")
    script = tmp_path / "appender.py"
    script.write_text(CONCURRENT_APPENDER.format())
    writers = [
        subprocess.Popen([sys.executable, str(script), str(table), f"w{i}", "5"], stderr=subprocess.PIPE)
        for i in range(3)
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()[-2000:]

    delta = DeltaTable(str(table))
    assert delta.version() == 15
    counts = read(spark, table).groupBy("writer").agg(F.count("*").alias("n"), F.countDistinct("seq").alias("seqs"))
    assert sorted(tuple(r) for r in counts.collect()) == [("seed", 1, 1), ("w0", 15, 5), ("w1", 15, 5), ("w2", 15, 5)]
    assert files_on_disk(table) == files_in_snapshot(table)

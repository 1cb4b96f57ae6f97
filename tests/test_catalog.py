"""The catalog: tables named in a metastore that separate JVMs share, time travel by name, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import write_config

from pipelines.config import Settings
from pipelines.platform import catalog
from pipelines.platform.lake import Lake
from pipelines.platform.metastore import EmbeddedMetastore
from pipelines.platform.processes import pid_alive

pytestmark = pytest.mark.integration


def test_a_second_jvm_reads_tables_by_name_while_the_first_runs(spark, settings: Settings, tmp_path: Path) -> None:
    """The session's JVM holds the metastore open; a child process (another JVM) reads the same names."""
    lake = settings.lake.model_copy(update={"root": str(tmp_path / "lake")})
    local = settings.model_copy(update={"lake": lake})
    path = Lake(local).table("gold", "revenue")
    spark.range(10).selectExpr("id", "id * 2 AS amount").write.format("delta").save(path)
    spark.range(5).selectExpr("id + 10 AS id", "id AS amount").write.format("delta").mode("append").save(path)
    assert catalog.register(spark, local, "gold", "revenue", path) is True
    assert catalog.register(spark, local, "gold", "revenue", path) is False  # idempotent
    assert spark.table("gold.revenue").count() == 15

    config = write_config(local, tmp_path / "lakehouse.yaml")
    script = textwrap.dedent(
        """
        from pipelines.config import load_settings
        from pipelines.platform.spark import build_spark
        spark = build_spark(load_settings(), app_name="second-jvm")
        latest = spark.table("gold.revenue").count()
        first = spark.sql("SELECT count(*) AS n FROM gold.revenue VERSION AS OF 0").first()["n"]
        operations = [r["operation"] for r in spark.sql("DESCRIBE HISTORY gold.revenue").collect()]
        print("RESULT", latest, first, ",".join(operations))
        spark.stop()
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "LAKEHOUSE_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    result = next(line for line in child.stdout.splitlines() if line.startswith("RESULT"))
    assert result.split()[1:] == ["15", "10", "WRITE,WRITE"]


def test_registering_another_lake_repoints_the_name(spark, settings: Settings, tmp_path: Path) -> None:
    first, second = str(tmp_path / "a" / "ops" / "probe"), str(tmp_path / "b" / "ops" / "probe")
    spark.range(3).write.format("delta").save(first)
    spark.range(7).write.format("delta").save(second)
    catalog.register(spark, settings, "ops", "probe", first)
    assert spark.table("ops.probe").count() == 3
    assert catalog.register(spark, settings, "ops", "probe", second) is True
    assert spark.table("ops.probe").count() == 7
    assert os.path.isdir(first), "re-pointing an external table never deletes its data"


def test_stream_tables_checkpoint_every_100th_commit_also_when_created_before(
    spark, settings: Settings, tmp_path: Path
) -> None:
    """The stream's tables get their checkpoint interval on creation, and a table created before the setting
    existed gets it at the next start - schema, rows and partitioning untouched."""
    from deltalake import DeltaTable

    from pipelines.bronze import ensure_tables
    from pipelines.bronze.ingest import EVENTS, STREAM_TABLE_PROPERTIES

    isolated = settings.model_copy(update={"lake": settings.lake.model_copy(update={"root": str(tmp_path / "lake")})})
    lake = Lake(isolated)
    events = catalog.ensure_table(spark, isolated, "bronze", "events", EVENTS.schema, list(EVENTS.partitioned_by))
    assert "delta.checkpointInterval" not in DeltaTable(events).metadata().configuration
    ensure_tables(spark, isolated)
    for path in (
        lake.bronze_events,
        lake.bronze_quarantine,
        lake.bronze_progress,
        *(lake.table("ops", name) for name in ("bronze_lag", "job_metrics")),
    ):
        table = DeltaTable(path)
        assert table.metadata().configuration["delta.checkpointInterval"] == "100", path
        assert table.metadata().configuration.items() >= STREAM_TABLE_PROPERTIES.items()
    assert list(DeltaTable(events).metadata().partition_columns) == list(EVENTS.partitioned_by)
    version = DeltaTable(events).version()
    ensure_tables(spark, isolated)
    assert DeltaTable(events).version() == version, "a table already set is not written again"


def test_bronze_files_carry_no_dictionary_for_columns_of_unique_values(
    spark, settings: Settings, tmp_path: Path
) -> None:
    """Written through the table's properties: raw_value, properties and event_id are plain-encoded, columns of
    few values keep their dictionaries, and the rows read back unchanged."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from pipelines.bronze import ensure_tables
    from pipelines.bronze.ingest import NO_DICTIONARY_PROPERTIES
    from pipelines.synthetic.bronze import bronze_row, bronze_table, write_bronze

    isolated = settings.model_copy(update={"lake": settings.lake.model_copy(update={"root": str(tmp_path / "lake")})})
    lake = Lake(isolated)
    ensure_tables(spark, isolated)
    for path in (lake.bronze_events, lake.bronze_quarantine):
        assert DeltaTable(path).metadata().configuration.items() >= NO_DICTIONARY_PROPERTIES.items(), path
    event = {
        "event_id": "e",
        "event_type": "page_view",
        "version": 1,
        "occurred_at": "2026-11-02T10:00:00Z",
        "tenant_id": "acme",
        "properties": {"path": "/"},
    }
    rows = [bronze_row({**event, "event_id": f"e{index}"}, "2026-11-02T10:00:05Z", offset=index) for index in range(50)]
    write_bronze(spark, lake.bronze_events, bronze_table(rows))
    files = DeltaTable(lake.bronze_events).file_uris()
    assert files
    for file in files:
        metadata = pq.ParquetFile(file).metadata
        names = [metadata.schema.column(index).name for index in range(metadata.num_columns)]
        chunks = {name: metadata.row_group(0).column(index) for index, name in enumerate(names)}
        for name in ("raw_value", "properties", "event_id"):
            assert not chunks[name].has_dictionary_page, (name, file)
        assert chunks["topic"].has_dictionary_page, "other columns keep their dictionaries"
    assert sorted(r.event_id for r in spark.read.format("delta").load(lake.bronze_events).collect()) == sorted(
        row["event_id"] for row in rows
    )


def test_bronze_events_files_keep_statistics_only_for_filtered_columns(
    spark, settings: Settings, tmp_path: Path
) -> None:
    """Every file's statistics in the Delta log name the columns readers filter on (ingest time, Kafka
    coordinates, person ids) and none of the documents or random ids; a filter on ingested_at still skips files."""
    from pipelines.bronze import ensure_tables
    from pipelines.bronze.ingest import FILTERED_EVENT_COLUMNS
    from pipelines.synthetic.bronze import bronze_row, bronze_table, write_bronze

    isolated = settings.model_copy(update={"lake": settings.lake.model_copy(update={"root": str(tmp_path / "lake")})})
    lake = Lake(isolated)
    ensure_tables(spark, isolated)
    event = {
        "event_type": "page_view",
        "version": 1,
        "occurred_at": "2026-11-02T10:00:00Z",
        "tenant_id": "acme",
        "user_id": "u1",
        "properties": {"path": "/"},
    }
    for batch, ingested in enumerate(("2026-11-02T10:00:05Z", "2026-11-02T11:00:05Z")):
        rows = [bronze_row({**event, "event_id": f"e{batch}-{i}"}, ingested, offset=10 * batch + i) for i in range(10)]
        write_bronze(spark, lake.bronze_events, bronze_table(rows))
    statistics = [
        json.loads(action["add"]["stats"])
        for commit in sorted(Path(lake.bronze_events, "_delta_log").glob("*.json"))
        for action in map(json.loads, commit.read_text().splitlines())
        if "add" in action
    ]
    assert len(statistics) == 2
    for stats in statistics:
        assert stats["numRecords"] == 10
        assert set(stats["minValues"]) == set(FILTERED_EVENT_COLUMNS) - {"anonymous_id"}, (
            "statistics of the filtered columns only (anonymous_id, all null here, has no min)"
        )
        assert set(stats["nullCount"]) == set(FILTERED_EVENT_COLUMNS)
    table = spark.read.format("delta").load(lake.bronze_events)
    later = table.where("ingested_at > TIMESTAMP '2026-11-02 10:30:00'")
    assert len(table.inputFiles()) == 2
    assert len(later.inputFiles()) == 1, "the earlier file is skipped by its ingested_at range"
    assert later.count() == 10


def test_a_name_left_pointing_at_a_deleted_lake_is_repointed(spark, settings: Settings, tmp_path: Path) -> None:
    """A lake that was deleted (a test's temp folder, a moved project) must not break the next registration."""
    import shutil

    gone, fresh = str(tmp_path / "gone" / "ops" / "probe2"), str(tmp_path / "fresh" / "ops" / "probe2")
    spark.range(2).write.format("delta").save(gone)
    spark.range(5).write.format("delta").save(fresh)
    catalog.register(spark, settings, "ops", "probe2", gone)
    shutil.rmtree(tmp_path / "gone")
    catalog._registered.clear()  # a new process: nothing remembered
    assert catalog.register(spark, settings, "ops", "probe2", fresh) is True
    assert spark.table("ops.probe2").count() == 5


def test_bad_names_are_refused(spark, settings: Settings) -> None:
    with pytest.raises(catalog.CatalogError, match="layer must be one of"):
        catalog.register(spark, settings, "platinum", "x", "/tmp/nowhere")
    with pytest.raises(catalog.CatalogError, match="name"):
        catalog.register(spark, settings, "gold", "Drop Table", "/tmp/nowhere")


def test_metastore_starts_and_stops_by_pid(tmp_path: Path) -> None:
    metastore = EmbeddedMetastore(tmp_path / "ms")
    assert metastore.running() is None
    handle = metastore.start()
    try:
        assert metastore.start() == handle, "a second start returns the running server"
        assert pid_alive(handle.pid)
        assert handle.jdbc_url.startswith("jdbc:derby://127.0.0.1:")
    finally:
        assert metastore.stop() is True
    assert not pid_alive(handle.pid)
    assert metastore.running() is None and metastore.stop() is False

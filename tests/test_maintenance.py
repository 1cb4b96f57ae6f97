"""Maintenance: compaction keeps every row and reduces the files, retention drops exactly the expired days,
and each action is recorded in ops.maintenance_runs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable
from test_silver import fixture_rows, lake_settings

from pipelines.bronze import ensure_tables
from pipelines.platform.lake import Lake
from pipelines.platform.maintenance import run_maintenance
from pipelines.platform.registry import BRONZE_QUARANTINE_SCHEMA
from pipelines.synthetic.bronze import bronze_table, write_bronze

pytestmark = pytest.mark.integration
TODAY = date(2026, 12, 1)


def _quarantine_row(ingest_date: date, offset: int) -> tuple:
    at = datetime.combine(ingest_date, datetime.min.time(), tzinfo=UTC)
    return (b"k", b"{bad", None, "[]", "not JSON", None, None, "user.activity", 0, offset, at, at, ingest_date)


def _sorted_rows(spark, path: str) -> list[str]:
    return sorted(repr(sorted(row.asDict().items())) for row in spark.read.format("delta").load(path).collect())


def test_maintenance_compacts_applies_retention_and_records_its_actions(spark, tmp_path: Path) -> None:
    from pyspark.sql.pandas.types import from_arrow_schema

    settings = lake_settings(tmp_path, maintenance__retention_days='{"bronze.quarantine": 30}')
    lake = Lake(settings)
    rows = fixture_rows()
    for part in range(3):  # three appends: small files per partition, as micro-batches leave them
        write_bronze(spark, lake.bronze_events, bronze_table(rows[part::3]))
    ensure_tables(spark, settings)
    days = [date(2026, 10, 1), date(2026, 11, 1), date(2026, 11, 2), TODAY]  # 30 days up to TODAY start 11-02
    quarantine = [_quarantine_row(day, n) for n, day in enumerate(days)]
    spark.createDataFrame(quarantine, from_arrow_schema(BRONZE_QUARANTINE_SCHEMA)).write.format("delta").mode(
        "append"
    ).save(lake.bronze_quarantine)
    events_before = _sorted_rows(spark, lake.bronze_events)
    files_before = len(DeltaTable(lake.bronze_events).file_uris())

    actions = run_maintenance(spark, settings, today=TODAY)

    assert _sorted_rows(spark, lake.bronze_events) == events_before  # compaction changes files, never rows
    assert len(DeltaTable(lake.bronze_events).file_uris()) < files_before
    kept = sorted(row.ingest_date for row in spark.read.format("delta").load(lake.bronze_quarantine).collect())
    assert kept == [date(2026, 11, 2), TODAY]

    by_action = {(a.table, a.action): a for a in actions}
    assert by_action[("bronze.quarantine", "retention")].rows_deleted == 2
    assert 0 < by_action[("bronze.events", "compaction")].files_removed <= files_before
    assert ("bronze.events", "retention") not in by_action  # no retention configured: every day is kept
    assert {a.action for a in actions if a.table == "bronze.events"} == {"compaction", "vacuum"}
    recorded = spark.read.format("delta").load(lake.table("ops", "maintenance_runs")).collect()
    assert sorted((r.table, r.action) for r in recorded) == sorted(by_action)
    assert len({r.run_id for r in recorded}) == 1

"""Write-audit-publish in the builds: what a gate's action does to the published tables (real Spark, Delta, GX).

The gate engine itself (suite files, GX results, the exact row split) is tested in test_quality.py; here: a
failed gate leaves every target table at its Delta version (gold: all six, also when the fourth fails),
quarantine splits silver's candidates between silver.events and silver/quarantine, warn publishes and
records, escalation fails, and a skipped gate is recorded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_silver import D1, D5, fixture_rows, lake_settings

from pipelines import gold, silver
from pipelines.platform import tables
from pipelines.platform.lake import Lake
from pipelines.quality import GateFailed
from pipelines.synthetic.bronze import bronze_table, write_bronze

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).parents[1] / "expectations"


def _lake(spark, root: Path, suites: dict[str, str] | None = None):
    """A lake with the fixture bronze rows and its own expectations folder: the shipped suites, with
    ``suites`` (file name -> YAML) replacing or adding files."""
    expectations = root / "expectations"
    shutil.copytree(SHIPPED, expectations)
    for name, text in (suites or {}).items():
        (expectations / name).write_text(text)
    settings = lake_settings(
        root, quality__expectations_dir=str(expectations), quality__docs_dir=str(root / "docs"), catalog=False
    )
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(fixture_rows()))
    return settings


def _versions(spark, settings) -> dict[str, int | None]:
    lake = Lake(settings)
    paths = {f"gold.{name}": lake.table("gold", name) for name in gold.TABLES}
    paths["silver.events"] = silver.events_path(settings)
    return {name: tables.table_version(spark, path) for name, path in paths.items()}


def _results(spark, settings) -> list:
    return spark.read.format("delta").load(Lake(settings).table("ops", "quality_results")).collect()


IMPOSSIBLE_FUNNEL = """
table: gold.funnels
key_columns: [tenant_id, date, funnel, step_index]
expectations:
  - name: no_users_at_all
    type: expect_column_values_to_be_between
    kwargs: {column: users, max_value: 0}
    action: fail
    why: "a rule that every real funnel row breaks: the gate of the 4th table fails"
"""


def test_a_failed_gold_gate_publishes_no_gold_table(spark, tmp_path: Path) -> None:
    """gold.funnels is the fourth table built: its gate fails, and none of the six tables moves - not even the
    three built before it."""
    settings = _lake(spark, tmp_path)
    silver.build(spark, settings, D1, D5)
    gold.build(spark, settings, D1, D5)  # every gate passes: the tables exist
    before = _versions(spark, settings)
    assert all(version is not None for version in before.values())

    (Path(settings.quality.expectations_dir) / "gold.funnels.yaml").write_text(IMPOSSIBLE_FUNNEL)
    with pytest.raises(GateFailed, match=r"gold.funnels.*no_users_at_all") as failed:
        gold.build(spark, settings, D1, D5)
    assert gold.TABLES.index("funnels") == 3 and "unexpected" in str(failed.value)
    assert _versions(spark, settings) == before
    recorded = [r for r in _results(spark, settings) if r.table == "gold.funnels" and r.action == "fail"]
    assert recorded and recorded[0].unexpected_count > 0
    assert (tmp_path / "docs" / "index.html").exists()


QUARANTINE_LOGINS = """
table: silver.events
key_columns: [tenant_id, event_id]
expectations:
  - name: no_logins
    type: expect_column_values_to_not_be_in_set
    kwargs: {column: event_type, value_set: [login]}
    action: quarantine
    max_failure_pct: {pct}
    why: "test rule: logins are set aside"
  - name: page_views_have_a_url
    type: expect_column_values_to_not_be_null
    kwargs: {column: page_url, mostly: 1.0}
    where: "event_type = 'product_view'"
    action: warn
    why: "test rule: product views have no page_url, so this warns"
"""


def test_silver_quarantine_splits_the_candidates_and_warn_publishes(spark, tmp_path: Path) -> None:
    settings = _lake(spark, tmp_path, {"silver.events.yaml": QUARANTINE_LOGINS.replace("{pct}", "50")})
    result = silver.build(spark, settings, D1, D5)
    published = spark.read.format("delta").load(silver.events_path(settings))
    quarantined = spark.read.format("delta").load(silver.quarantine_path(settings))
    assert published.where("event_type = 'login'").count() == 0
    assert quarantined.count() == result.quarantined_rows > 0
    assert {row._rule for row in quarantined.select("_rule").collect()} == {"no_logins"}
    assert all("event_type=login" in row._reason for row in quarantined.select("_reason").collect())
    assert published.count() + quarantined.count() == result.events, "every candidate is in exactly one table"
    summary = {gate.table: gate for gate in result.gates}
    assert summary["silver.events"].outcome == "quarantined"
    assert summary["silver.events"].warned_rules == ["page_views_have_a_url"]
    actions = {(r.expectation, r.action) for r in _results(spark, settings) if r.table == "silver.events"}
    assert {("no_logins", "quarantine"), ("page_views_have_a_url", "warn")} <= actions

    # a rerun whose rule no longer rejects anything empties the quarantine partitions it rebuilds
    (Path(settings.quality.expectations_dir) / "silver.events.yaml").write_text(
        QUARANTINE_LOGINS.replace("[login]", "[no_such_type]").replace("{pct}", "50")
    )
    rerun = silver.build(spark, settings, D1, D5)
    assert rerun.quarantined_rows == 0
    assert spark.read.format("delta").load(silver.quarantine_path(settings)).count() == 0
    assert spark.read.format("delta").load(silver.events_path(settings)).count() == result.events


def test_quarantine_over_its_threshold_fails_and_publishes_nothing(spark, tmp_path: Path) -> None:
    settings = _lake(spark, tmp_path, {"silver.events.yaml": QUARANTINE_LOGINS.replace("{pct}", "0.5")})
    with pytest.raises(GateFailed, match=r"no_logins"):
        silver.build(spark, settings, D1, D5)
    assert tables.table_version(spark, silver.events_path(settings)) is None, "silver.events was never written"
    assert tables.table_version(spark, silver.quarantine_path(settings)) is None


def test_skipped_gates_are_recorded(spark, tmp_path: Path) -> None:
    settings = _lake(spark, tmp_path, {"silver.events.yaml": QUARANTINE_LOGINS.replace("{pct}", "0.5")})
    result = silver.build(spark, settings, D1, D5, skip_gates=True)  # the failing suite is not run
    audits = ["bronze.events", "bronze.quarantine_rate", "silver.events", "silver.reconciliation"]
    assert [(gate.table, gate.outcome) for gate in result.gates] == [(name, "skipped") for name in audits]
    recorded = {(r.table, r.action, r.run_id) for r in _results(spark, settings)}
    assert recorded == {(name, "skipped", result.run_id) for name in audits}
    assert spark.read.format("delta").load(silver.events_path(settings)).where("event_type = 'login'").count() > 0


def _validate(spark, table: str, rows: list[tuple], schema: str, settings):
    from pipelines.quality import load_suite, validate
    from pipelines.quality.audit import JobGates

    suite = load_suite(SHIPPED / f"{table}.yaml", JobGates(spark, settings, "test").params())
    return validate(spark.createDataFrame(rows, schema), suite, run_id="test")


def test_reconciliation_suites_catch_lost_rows_and_missing_tenants(spark, tmp_path: Path) -> None:
    settings = _lake(spark, tmp_path)
    with _validate(
        spark,
        "silver.reconciliation",
        [("t1", D1, 10, 10), ("t2", D1, 4, 3)],  # one of t2's kept bronze rows never reached silver
        "tenant_id string, event_date date, expected_rows long, silver_rows long",
        settings,
    ) as result:
        assert [(r.name, r.unexpected_count) for r in result.failures] == [("silver_rows_reconcile_with_bronze", 1)]
    with _validate(
        spark,
        "gold.reconciliation",
        [("t1", D1, 10, 9, 10, 3), ("t2", D1, 5, 5, 4, None), ("t3", D1, 2, 0, 2, None)],
        "tenant_id string, date date, silver_events long, silver_user_events long, gold_events long, dau long",
        settings,
    ) as result:
        # t2: counts short by one and no DAU row although it had user events; t3 (machine events only) is fine
        assert sorted((r.name, r.unexpected_count) for r in result.failures) == [
            ("active_tenant_has_dau_row", 1),
            ("event_counts_sum_to_silver_rows", 1),
        ]


def test_quarantine_rate_from_bronze_progress_fails_a_burst(spark, tmp_path: Path) -> None:
    from datetime import UTC, datetime, time

    settings = _lake(spark, tmp_path)
    at = datetime.combine(D1, time(12), tzinfo=UTC)
    progress = spark.createDataFrame(
        [("q", 0, "events", 0, 0, 89, 80, 10, at, at, at), ("q", 1, "events", 1, 0, 9, 10, 0, at, at, at)],
        "query_id string, batch_id long, topic string, partition int, min_offset long, max_offset long, "
        "events long, quarantined long, max_occurred_at timestamp, max_kafka_timestamp timestamp, "
        "max_ingested_at timestamp",
    )
    progress.write.format("delta").save(Lake(settings).bronze_progress)
    rate = silver.quarantine_rate(spark, settings, [D1]).collect()
    assert [(r.quarantined, r.messages, r.quarantine_rate) for r in rate] == [(10, 100, 0.1)]
    assert silver.quarantine_rate(spark, settings, [D5]).first().messages == 0  # another ingest day
    with pytest.raises(GateFailed, match=r"quarantine_rate_below_threshold"):
        silver.build(spark, settings, D1, D1)  # 10% > quality.max_quarantine_rate (5%)
    assert tables.table_version(spark, silver.events_path(settings)) is None

"""The whole chain on real parts: generator -> Kafka -> `bronze run` -> silver -> gold, reconciled exactly with the
generator's truth; and the fast synthetic bronze writer the batch tests use agrees with real bronze."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import publish
from test_gold import assert_reconciles_with_truth

from pipelines import gold, silver
from pipelines.bronze import run_bronze
from pipelines.config import Settings
from pipelines.platform.lake import Lake
from pipelines.platform.registry import BRONZE_EVENTS_SCHEMA
from pipelines.synthetic.bronze import bronze_rows_from_generated, bronze_table, write_bronze
from pipelines.synthetic.generator import GeneratorSpec
from pipelines.synthetic.users import sample_users, write_users_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What both bronze writers decide from an event (Kafka coordinates and ingest times are the broker's and clock's).
EVENT_COLUMNS = [
    name
    for name in BRONZE_EVENTS_SCHEMA.names
    if name not in {"topic", "partition", "offset", "kafka_timestamp", "ingested_at"}
]


def test_kafka_to_gold_reconciles_with_the_generators_truth(
    spark, isolated_settings: Settings, broker, tmp_path: Path
) -> None:
    settings = isolated_settings.model_copy(
        update={
            "catalog": isolated_settings.catalog.model_copy(update={"metastore": "none"}),
            "silver": isolated_settings.silver.model_copy(update={"dimensions_dir": str(tmp_path / "dims")}),
        }
    )
    spec = GeneratorSpec(
        seed=17, tenants=2, users_per_tenant=30, days=3, duplicate_rate=0.05, late_rate=0.05, malformed_rate=0.02
    )
    messages, truth = publish(settings, broker.bootstrap_servers, spec)
    (tmp_path / "dims").mkdir()
    write_users_file(sample_users(messages), tmp_path / "dims" / "users.csv")

    query = run_bronze(spark, settings, broker.bootstrap_servers, once=True)
    assert query.exception() is None
    lake = Lake(settings)
    assert spark.read.format("delta").load(lake.bronze_quarantine).count() == truth.malformed > 0
    last = spec.start_date + timedelta(days=spec.days - 1)
    built = silver.build(spark, settings, spec.start_date, last)
    gold.build(spark, settings, spec.start_date, last)
    assert_reconciles_with_truth(spark, settings, built, truth)

    # the synthetic writer (tests/benchmarks) produces the rows real bronze holds for the same messages
    synthetic = str(tmp_path / "synthetic_bronze")
    write_bronze(spark, synthetic, bronze_table(bronze_rows_from_generated(messages)))

    def rows(path: str) -> Counter:
        return Counter(tuple(r) for r in spark.read.format("delta").load(path).select(EVENT_COLUMNS).collect())

    real = rows(lake.bronze_events)
    assert sum(real.values()) == truth.unique_valid_events + truth.duplicates
    assert rows(synthetic) == real

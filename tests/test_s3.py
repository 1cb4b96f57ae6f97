"""The lake and the streaming checkpoints on S3 through S3A, against a real moto S3 server on 127.0.0.1.

One set of delta-rs style storage options (``lake.storage_options_env``) configures both engines: Spark reaches
``s3://`` through S3A (``pipelines.platform.spark.s3a_conf``), delta-rs readers use the options as they are, so a table
path is the same string for both. The shared test session was built before moto started, so the S3A settings
are applied at runtime, scoped to the test bucket (``pipelines.platform.spark.configure_s3a``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import publish
from deltalake import DeltaTable

from pipelines import silver
from pipelines.bronze import run_bronze
from pipelines.config import Settings
from pipelines.platform import tables
from pipelines.platform.lake import Lake
from pipelines.platform.registry import TABLES
from pipelines.platform.spark import configure_s3a
from pipelines.synthetic.generator import GeneratorSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# delta-rs option name -> the environment variable the profile names for it
STORAGE_ENV = {
    "AWS_ENDPOINT_URL": "LAKEHOUSE_TEST_S3_ENDPOINT",
    "AWS_ACCESS_KEY_ID": "LAKEHOUSE_TEST_S3_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "LAKEHOUSE_TEST_S3_SECRET",
    "AWS_REGION": "LAKEHOUSE_TEST_S3_REGION",
    "AWS_ALLOW_HTTP": "LAKEHOUSE_TEST_S3_ALLOW_HTTP",
}


@pytest.fixture
def s3_settings(
    spark, isolated_settings: Settings, s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Fresh topics, and a lake (tables and checkpoints) in a fresh bucket on the moto server."""
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3_client(s3_server).create_bucket(Bucket=bucket)
    for option, env_name in STORAGE_ENV.items():
        monkeypatch.setenv(env_name, s3_server[option])
    # a lake on an object store never uses the public development key (pipelines.silver.pii.hmac_key)
    monkeypatch.setenv(isolated_settings.pii.hmac_key_env, "s3-test-key")
    lake = isolated_settings.lake.model_copy(
        update={"root": f"s3://{bucket}/lake", "checkpoint_root": None, "storage_options_env": STORAGE_ENV}
    )
    settings = isolated_settings.model_copy(update={"lake": lake})
    applied = configure_s3a(spark, settings.lake_storage_options(), bucket=bucket)
    assert applied[f"fs.s3a.bucket.{bucket}.endpoint"] == s3_server["AWS_ENDPOINT_URL"]
    yield settings
    _forget_catalog_names(spark, f"s3://{bucket}/")


def s3_client(server: dict[str, str]):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server["AWS_ENDPOINT_URL"],
        aws_access_key_id=server["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server["AWS_SECRET_ACCESS_KEY"],
        region_name=server["AWS_REGION"],
    )


def _forget_catalog_names(spark, prefix: str) -> None:
    """Drop the catalog names this test pointed at the bucket (external tables: the data stays), so later
    processes sharing the test metastore never meet a location they hold no S3 settings for."""
    for layer, name in ((spec.layer, spec.name) for spec in TABLES):
        qualified = f"{layer}.{name}"
        if not spark.catalog.tableExists(qualified):
            continue
        try:
            location = spark.sql(f"DESCRIBE DETAIL {qualified}").first()["location"]
        except Exception:  # a name left pointing at a deleted temporary lake
            continue
        if location.replace("s3a://", "s3://").startswith(prefix):
            spark.sql(f"DROP TABLE {qualified}")


def delta_rs(path: str, settings: Settings) -> DeltaTable:
    return DeltaTable(path, storage_options=settings.lake_storage_options())


def columns(path: str, settings: Settings, names: list[str]) -> list[tuple]:
    """Rows of ``names`` read with delta-rs (the tables must stay readable outside Spark)."""
    table = delta_rs(path, settings).to_pyarrow_table(columns=names)
    return list(zip(*(table.column(name).to_pylist() for name in names), strict=True))


def coordinates(path: str, settings: Settings) -> list[tuple[str, int, int]]:
    return columns(path, settings, ["topic", "partition", "offset"])


def test_bronze_silver_and_table_chores_on_s3(spark, s3_settings: Settings, broker, s3_server) -> None:
    settings = s3_settings.model_copy(
        update={"bronze": s3_settings.bronze.model_copy(update={"max_offsets_per_trigger": 200})}
    )
    lake = Lake(settings)
    assert lake.bronze_events.startswith("s3://") and lake.checkpoint("bronze").startswith("s3://")
    spec = GeneratorSpec(seed=17, tenants=2, users_per_tenant=30, days=2, malformed_rate=0.05, duplicate_rate=0.05)
    messages, truth = publish(settings, broker.bootstrap_servers, spec)
    assert 300 <= len(messages) <= 1500 and len(messages) > 2 * 200, "a few hundred messages, several batches"

    # bronze: Kafka -> Delta on S3, checkpoint on S3
    query = run_bronze(spark, settings, broker.bootstrap_servers, once=True)
    assert query.exception() is None
    events = coordinates(lake.bronze_events, settings)
    quarantine = coordinates(lake.bronze_quarantine, settings)
    assert len(events) + len(quarantine) == len(messages), "bronze + quarantine == produced"
    assert len(set(events) | set(quarantine)) == len(messages), "no Kafka coordinate twice"
    assert len(quarantine) == truth.malformed > 0
    spark_events = spark.read.format("delta").load(lake.bronze_events)
    assert spark_events.count() == len(events)
    assert spark_events.select("topic", "partition", "offset").distinct().count() == len(events)
    batches = delta_rs(lake.bronze_progress, settings).to_pyarrow_table(columns=["batch_id"]).column("batch_id")
    assert len(set(batches.to_pylist())) >= 3, "max_offsets_per_trigger split the backlog"

    # the checkpoint is on S3 (offsets and commits written through S3A)
    bucket = lake.root.removeprefix("s3://").split("/")[0]
    listing = s3_client(s3_server).list_objects_v2(Bucket=bucket, Prefix="lake/_checkpoints/bronze/")
    keys = [item["Key"] for item in listing["Contents"]]
    assert any("/commits/" in k for k in keys) and any("/offsets/" in k for k in keys)

    # a second catch-up resumes from the S3 checkpoint: nothing new, nothing written twice
    version = delta_rs(lake.bronze_events, settings).version()
    run_bronze(spark, settings, broker.bootstrap_servers, once=True)
    assert len(coordinates(lake.bronze_events, settings)) == len(events)
    assert len(coordinates(lake.bronze_quarantine, settings)) == len(quarantine)
    assert delta_rs(lake.bronze_events, settings).version() == version

    # silver on S3: every (tenant_id, event_id) of the built days once
    bronze = columns(lake.bronze_events, settings, ["tenant_id", "event_id", "event_date"])
    days = sorted({day for _, _, day in bronze})
    result = silver.build(spark, settings, days[0], days[-1])
    built = set(result.days)
    expected = {(tenant, event_id) for tenant, event_id, day in bronze if day in built}
    silver_path = silver.events_path(settings)
    assert silver_path.startswith("s3://")
    silver_rows = columns(silver_path, settings, ["tenant_id", "event_id"])
    assert len(silver_rows) == len(expected) == result.events > 0
    assert set(silver_rows) == expected
    assert spark.read.format("delta").load(silver_path).count() == len(expected)
    assert spark.table("silver.events").count() == len(expected), "the catalog names the S3 table"

    # Delta table chores on S3: OPTIMIZE, VACUUM DRY RUN, DESCRIBE HISTORY; delta-rs still reads the table
    files_before = len(delta_rs(lake.bronze_events, settings).file_uris())
    metrics = tables.compact(spark, lake.bronze_events)
    assert metrics["numFilesRemoved"] > metrics["numFilesAdded"] > 0
    compacted = delta_rs(lake.bronze_events, settings)
    assert len(compacted.file_uris()) == files_before - metrics["numFilesRemoved"] + metrics["numFilesAdded"]
    removable = tables.vacuum(spark, lake.bronze_events, retention_hours=0, enforce_retention_duration=False)
    assert len(removable) == metrics["numFilesRemoved"]
    assert all(path.startswith(("s3://", "s3a://")) for path in removable)
    assert [h["operation"] for h in tables.history(spark, lake.bronze_events, limit=1)] == ["OPTIMIZE"]
    history = spark.sql(f"DESCRIBE HISTORY {tables.delta_identifier(lake.bronze_events)}").collect()
    assert history[0]["operation"] == "OPTIMIZE" and len(history) == compacted.version() + 1
    after = compacted.to_pyarrow_table(columns=["raw_value"]).column("raw_value").to_pylist()
    assert Counter(after) == Counter(m.value for m in messages if m.kind != "malformed")
    assert spark.read.format("delta").load(lake.bronze_events).count() == len(events)

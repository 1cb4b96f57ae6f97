"""Bronze and a silver build on a multi-process Spark standalone cluster (1 master + 2 workers on 127.0.0.1).

The driver runs in a child process (tests/cluster_job.py) with the test's settings and the cluster's master
URL; the pinned jars (Delta, Spark's Kafka source) reach the executors only through ``spark.jars``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest
from conftest import publish, write_config
from deltalake import DeltaTable

from pipelines import silver
from pipelines.config import Settings
from pipelines.platform.lake import Lake
from pipelines.synthetic.generator import GeneratorSpec
from tests.support.standalone import StandaloneCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster]

MAX_OFFSETS_PER_TRIGGER = 200


def columns(path: str, names: list[str]) -> list[tuple]:
    table = DeltaTable(path).to_pyarrow_table(columns=names)
    return list(zip(*(table.column(name).to_pylist() for name in names), strict=True))


def executor_logs(cluster_dir: Path, worker: str) -> str:
    """Every executor's stderr on one worker (<work dir>/app-*/<executor id>/stderr)."""
    return "\n".join(log.read_text(errors="replace") for log in sorted((cluster_dir / worker).glob("app-*/*/stderr")))


def test_bronze_and_silver_on_standalone_cluster(
    isolated_settings: Settings, broker, metastore, tmp_path: Path
) -> None:
    settings = isolated_settings.model_copy(
        update={
            "bronze": isolated_settings.bronze.model_copy(update={"max_offsets_per_trigger": MAX_OFFSETS_PER_TRIGGER})
        }
    )
    # the child attaches to the running test metastore and broker instead of starting its own
    assert settings.catalog.metastore == "embedded"
    assert settings.metastore_state_dir.resolve() == Path(metastore.home)
    messages, truth = publish(
        settings,
        broker.bootstrap_servers,
        GeneratorSpec(seed=29, tenants=2, users_per_tenant=40, days=2, malformed_rate=0.03, duplicate_rate=0.05),
    )
    assert len(messages) > 3 * MAX_OFFSETS_PER_TRIGGER, "several micro-batches"
    config = write_config(settings, tmp_path / "lakehouse.yaml")
    spark_work = Path(pyspark.__file__).parent / "work"
    had_spark_work = spark_work.exists()

    cluster_dir = tmp_path / "cluster"
    cluster = StandaloneCluster(cluster_dir, workers=2)
    master = cluster.start()
    try:
        result = subprocess.run(
            [sys.executable, str(Path(__file__).parent / "support" / "cluster_job.py")],
            capture_output=True,
            text=True,
            timeout=1500,
            cwd=tmp_path,  # nothing (derby.log, spark-warehouse) in the checkout
            env={
                **os.environ,
                "LAKEHOUSE_CONFIG": str(config),
                "LAKEHOUSE__SPARK__MASTER": master,
                "LAKEHOUSE_PII_HMAC_KEY": "cluster-test-key",  # the dumped profile is not `local`
                "SPARK_LOCAL_IP": "127.0.0.1",
            },
        )
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stderr[-6000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    outcome = json.loads(line.removeprefix("RESULT "))
    assert outcome["master"] == master

    # bronze: every Kafka coordinate exactly once in events or quarantine, in several micro-batches
    lake = Lake(settings)
    events = columns(lake.bronze_events, ["topic", "partition", "offset"])
    quarantine = columns(lake.bronze_quarantine, ["topic", "partition", "offset"])
    assert len(events) + len(quarantine) == len(messages), "bronze + quarantine == produced"
    assert len(set(events) | set(quarantine)) == len(messages), "no Kafka coordinate twice"
    assert len(quarantine) == truth.malformed > 0
    batches = {batch for (batch,) in columns(lake.bronze_progress, ["batch_id"])}
    assert len(batches) >= 4 and outcome["micro_batches"] >= len(batches), "maxOffsetsPerTrigger split the backlog"

    # silver: every (tenant_id, event_id) of the built days once
    built = set(outcome["silver_days"])
    bronze = columns(lake.bronze_events, ["tenant_id", "event_id", "event_date"])
    expected = {(tenant, event_id) for tenant, event_id, day in bronze if str(day) in built}
    silver_events = silver.events_path(settings)
    rows = columns(silver_events, ["tenant_id", "event_id"])
    assert len(rows) == len(set(rows)) == len(expected) == outcome["silver_events"] > 0
    assert set(rows) == expected
    assert {str(day) for (day,) in columns(silver_events, ["event_date"])} <= built

    # tasks ran in executor processes on both workers, which fetched the pinned jars from the driver (spark.jars)
    # and used them: Kafka reads and Delta's parquet writes happened in both executors (their INFO logs)
    assert outcome["driver_pid"] not in outcome["executor_pids"], "tasks ran in executor processes"
    assert outcome["worker_dirs"] == ["worker-0", "worker-1"], "tasks ran in executors on both workers"
    topic = next(iter(settings.kafka.topics))
    for worker in ("worker-0", "worker-1"):
        logs = executor_logs(cluster_dir, worker)
        for jar in ("delta-spark_", "spark-sql-kafka-0-10_"):
            assert f"/jars/{jar}" in logs, f"{worker}'s executor did not fetch {jar}*.jar"
        assert "KafkaDataConsumer: From Kafka topicPartition" in logs and topic in logs, f"no Kafka read on {worker}"
        assert "ParquetOutputFormat" in logs, f"no table file written on {worker}"
    # nothing written into the venv: work dirs are under the test's folder
    assert spark_work.exists() == had_spark_work
    assert not any(Path(sys.prefix).rglob("app-*")), "nothing written into the venv"

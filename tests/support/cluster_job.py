"""Runs in a child process against a standalone cluster (see test_cluster.py): bronze (Spark's Kafka source ->
Delta) and a silver build, with every task in executor processes on the workers.

The settings come from ``LAKEHOUSE_CONFIG`` (the test's isolated settings: its fresh topics, lake and the
running test broker and metastore) with ``LAKEHOUSE__SPARK__MASTER`` = the cluster's URL. Prints one
``RESULT <json>`` line.
"""

from __future__ import annotations

import json
import os

from deltalake import DeltaTable

from pipelines import silver
from pipelines.bronze import run_bronze
from pipelines.config import load_settings
from pipelines.platform.lake import Lake
from pipelines.platform.spark import build_spark


def _pid_and_cwd(batches):
    import pyarrow as pa

    for _ in batches:
        pass
    # an executor's Python workers run in that executor's work dir: <worker-N>/app-*/<executor id>
    yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "cwd": [os.getcwd()]})


def main() -> None:
    settings = load_settings()
    assert settings.spark.master.startswith("spark://"), settings.spark.master
    spark = build_spark(
        settings,
        app_name="cluster-test",
        extra_conf={"spark.driver.host": "127.0.0.1", "spark.executor.memory": "512m", "spark.cores.max": "2"},
    )
    lake = Lake(settings)
    query = run_bronze(spark, settings, settings.kafka.bootstrap_servers, once=True)

    dates = DeltaTable(lake.bronze_events).to_pyarrow_table(columns=["event_date"]).column("event_date").to_pylist()
    first, last = min(dates), max(dates)
    result = silver.build(spark, settings, first, last)

    seen = (
        spark.read.format("delta")
        .load(lake.bronze_events)
        .repartition(8)
        .mapInArrow(_pid_and_cwd, "pid long, cwd string")
        .collect()
    )
    outcome = {
        "query_id": str(query.id),
        "micro_batches": len(query.recentProgress),
        "silver_days": [str(day) for day in result.days],
        "silver_events": result.events,
        "silver_bronze_rows": result.bronze_rows,
        "executor_pids": sorted({r["pid"] for r in seen}),
        "worker_dirs": sorted({r["cwd"].split("/app-")[0].rsplit("/", 1)[-1] for r in seen}),
        "driver_pid": os.getpid(),
        "master": spark.sparkContext.master,
    }
    spark.stop()
    print("RESULT " + json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()

"""Runs in a child process against a standalone cluster (see test_cluster.py): Kafka -> Delta with
the project's connectors, batch and streaming, executors in separate worker processes."""

from __future__ import annotations

import json
import os
import sys

from pipelines.config import load_settings
from pipelines.spark import build_spark


def main(master: str, bootstrap: str, topic: str, lake: str) -> None:
    settings = load_settings("local", environ={**os.environ, "LAKEHOUSE__SPARK__MASTER": master})
    spark = build_spark(
        settings,
        app_name="cluster-test",
        extra_conf={"spark.driver.host": "127.0.0.1", "spark.executor.memory": "512m", "spark.cores.max": "2"},
    )
    source = (
        spark.read.format("lakehouse_kafka").option("kafka.bootstrap.servers", bootstrap).option("subscribe", topic)
    )
    rows = source.load()
    rows.selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition", "offset").write.format(
        "lakehouse_delta"
    ).mode("append").option("partitionBy", "partition").save(f"{lake}/batch")

    stream = (
        spark.readStream.format("lakehouse_kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", "300")
        .load()
        .selectExpr("CAST(value AS STRING) AS value", "partition", "offset")
        .writeStream.format("lakehouse_delta")
        .option("checkpointLocation", f"{lake}/_checkpoint")
        .trigger(availableNow=True)
        .start(f"{lake}/stream")
    )
    stream.awaitTermination()

    def pids(batches):
        import pyarrow as pa

        for _ in batches:
            pass
        # an executor's Python workers run in that executor's work dir: <worker-N>/app-*/<executor id>
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "cwd": [os.getcwd()]})

    seen = rows.repartition(8).mapInArrow(pids, "pid long, cwd string").collect()
    result = {
        "batch_rows": spark.read.format("lakehouse_delta").load(f"{lake}/batch").count(),
        "stream_rows": spark.read.format("lakehouse_delta").load(f"{lake}/stream").count(),
        "stream_distinct": spark.read.format("lakehouse_delta")
        .load(f"{lake}/stream")
        .select("partition", "offset")
        .distinct()
        .count(),
        "batches": len(stream.recentProgress),
        "executor_pids": sorted({r["pid"] for r in seen}),
        "worker_dirs": sorted({r["cwd"].split("/app-")[0].rsplit("/", 1)[-1] for r in seen}),
        "driver_pid": os.getpid(),
    }
    spark.stop()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:5])

"""The connector and table utilities on S3: a real moto S3 server on 127.0.0.1 (stopped by PID).

delta-rs 1.x commits on S3 with conditional PUT (If-None-Match), which moto enforces, so no
``AWS_S3_ALLOW_UNSAFE_RENAME`` or DynamoDB lock is needed; plain HTTP needs ``AWS_ALLOW_HTTP=true``.
Executors reach the same bucket through pyarrow's S3FileSystem built from the same storage options.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from pipelines import tables
from pipelines.broker import free_port
from pipelines.connectors.delta import SHORT_NAME, planned_files, spark_options

pytestmark = pytest.mark.integration

BUCKET = "lake"


@pytest.fixture(scope="module")
def s3_storage() -> Iterator[dict[str, str]]:
    """delta-rs style storage options for a fresh moto server with one bucket."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not open its port"
                time.sleep(0.1)
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        server.terminate()
        server.wait(10)


def test_write_read_replace_on_s3(spark: SparkSession, s3_storage: dict[str, str]) -> None:
    uri = f"s3://{BUCKET}/events"
    options = spark_options(s3_storage)
    day1 = spark.createDataFrame(
        [(i, f"t{i % 2}", dt.date(2026, 11, 1)) for i in range(10)], "id long, tenant string, event_date date"
    )
    day2 = spark.createDataFrame(
        [(i, f"t{i % 2}", dt.date(2026, 11, 2)) for i in range(10, 16)], "id long, tenant string, event_date date"
    )
    day1.coalesce(1).write.format(SHORT_NAME).mode("append").options(**options, partitionBy="event_date,tenant").save(
        uri
    )
    day2.coalesce(1).write.format(SHORT_NAME).mode("append").options(**options).save(uri)

    events = spark.read.format(SHORT_NAME).options(**options).load(uri)
    assert sorted(r.id for r in events.collect()) == list(range(16))
    one_day = spark.read.format(SHORT_NAME).options(**options, filter="event_date = '2026-11-02'").load(uri)
    assert len(planned_files(one_day)) == 2 and one_day.count() == 6
    delta = DeltaTable(uri, storage_options=s3_storage)
    assert delta.version() == 1
    assert sorted(delta.to_pyarrow_table().column("id").to_pylist()) == list(range(16))

    fix = spark.createDataFrame([(100, "t0", dt.date(2026, 11, 2))], "id long, tenant string, event_date date")
    fix.write.format(SHORT_NAME).mode("overwrite").options(**options, replaceWhere="event_date = '2026-11-02'").save(
        uri
    )
    after = spark.read.format(SHORT_NAME).options(**options).load(uri)
    assert sorted(r.id for r in after.collect()) == [*range(10), 100]
    assert tables.table_version(uri, s3_storage) == 2


def test_stream_sink_and_table_utilities_on_s3(spark: SparkSession, s3_storage: dict[str, str], tmp_path: Path) -> None:
    uri = f"s3://{BUCKET}/stream"
    source = tmp_path / "src"
    source.mkdir()
    for index in range(2):
        ids = list(range(index * 5, index * 5 + 5))
        pq.write_table(pa.table({"id": pa.array(ids, pa.int64())}), source / f"part-{index}.parquet")
    checkpoint = tmp_path / "cp"
    query = (
        spark.readStream.schema("id long")
        .option("maxFilesPerTrigger", 1)
        .parquet(str(source))
        .writeStream.format(SHORT_NAME)
        .options(**spark_options(s3_storage))
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start(uri)
    )
    query.awaitTermination(120)
    assert query.exception() is None
    delta = DeltaTable(uri, storage_options=s3_storage)
    assert sorted(delta.to_pyarrow_table().column("id").to_pylist()) == list(range(10))
    assert delta.transaction_version(query.id) == 1

    assert tables.maybe_checkpoint(uri, every=2, storage_options=s3_storage) is True
    assert tables.last_checkpoint_version(uri, s3_storage) == 1
    tables.compact(uri, storage_options=s3_storage)
    assert len(DeltaTable(uri, storage_options=s3_storage).file_uris()) == 1
    removable = tables.vacuum(uri, retention_hours=0, enforce_retention_duration=False, storage_options=s3_storage)
    assert len(removable) == 2
    assert [h["operation"] for h in tables.history(uri, limit=1, storage_options=s3_storage)] == ["OPTIMIZE"]

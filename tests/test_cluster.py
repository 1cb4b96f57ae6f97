"""The connectors on a multi-process Spark standalone cluster (1 master + 2 workers on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.standalone import StandaloneCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster]


def test_kafka_to_delta_on_standalone_cluster(broker, tmp_path: Path) -> None:
    topic = f"cluster-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
    for n in range(1500):
        producer.produce(topic, key=f"k{n % 31}".encode(), value=f"v{n}".encode())
    assert producer.flush(30) == 0

    cluster = StandaloneCluster(tmp_path / "cluster", workers=2)
    master = cluster.start()
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("cluster_job.py")),
                master,
                broker.bootstrap_servers,
                topic,
                str(tmp_path / "lake"),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
        )
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    outcome = json.loads(line.removeprefix("RESULT "))
    assert outcome["batch_rows"] == 1500
    assert outcome["stream_rows"] == outcome["stream_distinct"] == 1500, "exactly once through the Delta sink"
    assert outcome["batches"] >= 5, "maxOffsetsPerTrigger=300 split the backlog"
    assert outcome["driver_pid"] not in outcome["executor_pids"], "tasks ran in executor processes"
    assert outcome["worker_dirs"] == ["worker-0", "worker-1"], "tasks ran in executors on both workers"
    assert not any((Path(sys.prefix)).rglob("app-*")), "nothing written into the venv"

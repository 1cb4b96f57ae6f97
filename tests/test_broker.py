"""The embedded broker: start on a free loopback port, health, topics, stop exactly our PID."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from pipelines.broker import BrokerError, EmbeddedBroker, ensure_topics, resolve_bootstrap_servers, wait_until_healthy
from pipelines.config import load_settings

pytestmark = pytest.mark.integration


def test_start_status_stop(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "state")
    handle = broker.start()
    try:
        assert handle.bootstrap_servers.startswith("127.0.0.1:")
        assert broker.running() == handle, "state file records the running broker"
        assert broker.start() == handle, "start is idempotent: no second process"
        wait_until_healthy(handle.bootstrap_servers, timeout_s=5)
        # it listens on loopback only
        listening = Path("/proc/net/tcp").read_text().lower()
        assert f"0100007f:{handle.port:04x}" in listening
    finally:
        assert broker.stop() is True
    assert broker.running() is None
    assert not (tmp_path / "state" / "broker.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(handle.pid, 0)
    assert broker.stop() is False


def test_stale_state_file_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # a PID that cannot be ours (pid_max is below 2**22 on Linux)
    (state / "broker.json").write_text('{"pid": 4194303, "port": 1, "storage": "memory", "log_file": "x"}')
    broker = EmbeddedBroker(state)
    assert broker.running() is None
    assert broker.stop() is False


def test_topics_created_from_config(broker, settings) -> None:
    topics = ensure_topics(settings, broker.bootstrap_servers)
    for name, spec in settings.kafka.topics.items():
        assert topics[name] == spec.partitions
    assert topics[settings.kafka.dead_letter_topic] == 1
    assert ensure_topics(settings, broker.bootstrap_servers) == topics, "second call is a no-op"
    listed = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=5).topics
    assert set(topics) <= set(listed)


def test_external_profile_starts_nothing(tmp_path: Path) -> None:
    settings = load_settings(
        "local",
        environ={
            "LAKEHOUSE__KAFKA__BOOTSTRAP_SERVERS": "kafka.example:9092",
            "LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_path / "state"),
        },
    )
    assert resolve_bootstrap_servers(settings) == "kafka.example:9092"
    assert not (tmp_path / "state").exists()


def test_embedded_not_running_without_start(tmp_path: Path) -> None:
    settings = load_settings("local", environ={"LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_path / "state")})
    with pytest.raises(BrokerError, match="broker start"):
        resolve_bootstrap_servers(settings, start=False)


def test_unhealthy_address_fails_clearly() -> None:
    from pipelines.broker import free_port

    with pytest.raises(BrokerError, match="not healthy"):
        wait_until_healthy(f"127.0.0.1:{free_port()}", timeout_s=1)


@pytest.mark.slow
def test_s3_storage_survives_broker_kill(tmp_path: Path, s3_server: dict[str, str]) -> None:
    """Durable mode: messages acknowledged before a SIGKILL are there after a restart."""
    import signal
    import time
    import uuid

    import boto3
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    bucket = f"tansu-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server["AWS_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    broker = EmbeddedBroker(tmp_path / "state", storage="s3", s3_bucket=bucket, environ={**os.environ, **s3_server})
    handle = broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": handle.bootstrap_servers})
        admin.create_topics([NewTopic("durable", num_partitions=1, replication_factor=1)])["durable"].result(10)
        producer = Producer({"bootstrap.servers": handle.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
        for n in range(50):
            producer.produce("durable", value=f"m{n}".encode(), key=b"k")
        assert producer.flush(30) == 0
        os.kill(handle.pid, signal.SIGKILL)
        broker.stop()  # reaps the killed process and clears the record
        handle = broker.start()
        consumer = Consumer(
            {"bootstrap.servers": handle.bootstrap_servers, "group.id": "g", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition("durable", 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < 50 and time.monotonic() < deadline:
            values += [m.value() for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        consumer.close()
        assert values == [f"m{n}".encode() for n in range(50)]
    finally:
        broker.stop()


def test_s3_storage_without_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "state", storage="s3", environ={})
    with pytest.raises(BrokerError, match="AWS_ENDPOINT"):
        broker.start()

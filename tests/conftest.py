"""Shared fixtures: a real embedded broker and ONE SparkSession per test run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.config import Settings, load_settings
from pipelines.kafka.broker import BrokerHandle, EmbeddedBroker
from pipelines.platform.metastore import EmbeddedMetastore, MetastoreHandle
from pipelines.synthetic.generator import GeneratorSpec, Truth

# The checkout is the project directory of every test and of the commands tests start, whatever their cwd.
os.environ.setdefault("LAKEHOUSE_HOME", str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def tmp_session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def broker(tmp_session_dir: Path) -> Iterator[BrokerHandle]:
    """A real Apache Kafka broker (KRaft, one node) on 127.0.0.1 (free ports), stopped by PID at the end of the run."""
    embedded = EmbeddedBroker(tmp_session_dir / "broker")
    handle = embedded.start()
    yield handle
    embedded.stop()


@pytest.fixture(scope="session")
def settings(broker: BrokerHandle, metastore: MetastoreHandle, tmp_session_dir: Path) -> Settings:
    """The local profile pointed at the test broker, the test metastore and a temporary lake (child processes
    given these settings attach to the same broker and metastore instead of starting their own)."""
    environ = {
        **os.environ,
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "LAKEHOUSE__LAKE__ROOT": str(tmp_session_dir / "lake"),
        "LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_session_dir / "broker"),
        "LAKEHOUSE__SPARK__MASTER": "local[2]",
        "LAKEHOUSE__CATALOG__STATE_DIR": str(tmp_session_dir / "metastore"),
        "LAKEHOUSE__OPS__STATE_DIR": str(tmp_session_dir / "ops"),
        # The generator's data has fixed dates (2026-11 by default) and bronze quarantines by age against the
        # wall clock: a century keeps that data valid on any date. The limits are tested with events placed
        # relative to now (test_bronze.py).
        "LAKEHOUSE__BRONZE__MAX_EVENT_AGE_DAYS": "36500",
    }
    return load_settings(environ=environ)


@pytest.fixture
def isolated_settings(settings: Settings, broker: BrokerHandle, tmp_path: Path) -> Settings:
    """Fresh topics (created on the shared broker) and a fresh lake per test, so counts are exact."""
    from pipelines.kafka.topics import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    kafka = settings.kafka.model_copy(
        update={
            "topics": {f"{name}.{suffix}": spec for name, spec in settings.kafka.topics.items()},
            "dead_letter_topic": f"{settings.kafka.dead_letter_topic}.{suffix}",
        }
    )
    lake = settings.lake.model_copy(update={"root": str(tmp_path / "lake")})
    ops = settings.ops.model_copy(update={"state_dir": str(tmp_path / "ops")})
    isolated = settings.model_copy(update={"kafka": kafka, "lake": lake, "ops": ops})
    ensure_topics(isolated, broker.bootstrap_servers)
    return isolated


@pytest.fixture(scope="session")
def metastore(tmp_session_dir: Path) -> Iterator[MetastoreHandle]:
    """The catalog's Derby network server for the run (a temp folder), stopped by PID at the end."""
    embedded = EmbeddedMetastore(tmp_session_dir / "metastore")
    handle = embedded.start()
    yield handle
    embedded.stop()


@pytest.fixture(scope="session")
def spark(tmp_session_dir: Path, metastore: MetastoreHandle):
    """One SparkSession for the whole run (start-up costs ~15 s): Delta, jars and the test metastore."""
    from pipelines.platform.spark import build_spark

    environ = {
        **os.environ,
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__SPARK__MASTER": "local[2]",
        "LAKEHOUSE__LAKE__ROOT": str(tmp_session_dir / "lake"),
        "LAKEHOUSE__CATALOG__STATE_DIR": str(tmp_session_dir / "metastore"),
        # The generator's data has fixed dates (2026-11 by default) and bronze quarantines by age against the
        # wall clock: a century keeps that data valid on any date. The limits are tested with events placed
        # relative to now (test_bronze.py).
        "LAKEHOUSE__BRONZE__MAX_EVENT_AGE_DAYS": "36500",
    }
    # The one JVM serves ~500 tests and the Delta logs of their tables: at Spark's default 1 GiB heap its old
    # generation is full before a third of the run; 2 GiB leaves room on a slower CI machine.
    session = build_spark(
        load_settings(environ=environ), app_name="lakehouse-tests", extra_conf={"spark.driver.memory": "2g"}
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_session_dir: Path) -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto) on 127.0.0.1, stopped by PID.

    Yields the environment a client needs (endpoint, dummy credentials, region, plain HTTP).
    """
    import subprocess
    import sys
    import time
    import urllib.request

    from pipelines.platform.processes import free_port

    port = free_port()
    log = open(tmp_session_dir / "moto.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"moto server did not start; see {tmp_session_dir / 'moto.log'}") from None
            time.sleep(0.1)
    yield {
        "AWS_ENDPOINT": endpoint,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def write_config(settings: Settings, path: Path) -> Path:
    """Dump resolved settings as a one-profile config file, for CLI runs in child processes."""
    import yaml

    profile = settings.model_dump(mode="json", exclude={"profile", "source"})
    path.write_text(yaml.safe_dump({"default_profile": "test", "profiles": {"test": profile}}, sort_keys=False))
    return path


def publish(settings: Settings, bootstrap: str, spec: GeneratorSpec) -> tuple[list, Truth]:
    """Publish a generated stream as-is (malformed messages included) to the settings' topics."""
    from pipelines.kafka.producer import EventProducer
    from pipelines.synthetic.generator import generate

    messages, truth = generate(spec, settings.kafka.topic_for_event_type)
    with EventProducer(settings, bootstrap) as producer:
        for message in messages:
            producer.send(message.topic, message.value, message.key, message.headers)
    return messages, truth

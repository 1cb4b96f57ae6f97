"""`status`, alerts and Prometheus metrics on the real stack: the embedded Kafka with several partitions, the
bronze stream (shared SparkSession), real gate runs, Delta tables, a webhook receiver and exporters on 127.0.0.1.

Each alert condition is made for real - a burst of messages for lag, bad messages for the quarantine rate, a
stopped stream for staleness, a failing gate run - and must fire once, stay quiet while it holds, and resolve
once when it clears.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer
from conftest import publish, write_config

from pipelines.bronze import run_bronze
from pipelines.config import ConfigError, Settings
from pipelines.kafka.producer import producer_config
from pipelines.ops import alerts, status
from pipelines.synthetic.generator import GeneratorSpec
from tests.support.webhook import WebhookReceiver

pytestmark = pytest.mark.integration


def _produce(settings: Settings, bootstrap: str, per_partition: dict[tuple[str, int], int], value: bytes) -> None:
    """``per_partition[(topic, p)]`` copies of ``value`` to exactly that partition."""
    producer = Producer(producer_config(settings, bootstrap))
    for (topic, partition), count in per_partition.items():
        for _ in range(count):
            producer.produce(topic, value, partition=partition)
    assert producer.flush(30) == 0


DASHBOARD = Path(__file__).parents[1] / "infra" / "grafana" / "lakehouse.json"


def _dashboard_metrics(prefix: str, exclude: str | None = None) -> set[str]:
    """The metric names the Grafana dashboard's queries use (starting with ``prefix``)."""
    import re

    exprs = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    names = {name for expr in exprs for name in re.findall(r"lakehouse_[a-z_]+", expr)}
    return {n for n in names if n.startswith(prefix) and not (exclude and n.startswith(exclude))}


def _exposed(text: str) -> set[str]:
    """Metric names in a Prometheus exposition: with samples, or declared (# TYPE) with none yet."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split(" ")[2:4]
            names |= {name, f"{name}_total", f"{name}_bucket"} if kind in ("counter", "histogram") else {name}
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def _lag(snapshot: status.Status) -> dict[tuple[str, int], int]:
    return {(p.topic, p.partition): p.lag for p in snapshot.kafka}


def test_status_shows_the_exact_lag_per_partition_and_zero_after_catch_up(
    spark, isolated_settings: Settings, broker, tmp_path: Path
) -> None:
    settings, bootstrap = isolated_settings, broker.bootstrap_servers
    publish(settings, bootstrap, GeneratorSpec(seed=8, tenants=1, users_per_tenant=5, days=1, malformed_rate=0.0))
    run_bronze(spark, settings, bootstrap, once=True)
    assert set(_lag(status.collect(settings, bootstrap)).values()) == {0}

    topics = sorted(settings.kafka.topics)
    burst = {(topic, p): 3 * p + i + 1 for i, topic in enumerate(topics) for p in range(2)}  # 2 partitions each
    _produce(settings, bootstrap, burst, b"{}")
    snapshot = status.collect(settings, bootstrap)
    partitions = sum(spec.partitions for spec in settings.kafka.topics.values())
    assert len(snapshot.kafka) == partitions >= 10
    assert _lag(snapshot) == {key: burst.get(key, 0) for key in _lag(snapshot)}  # exact, partition by partition

    run_bronze(spark, settings, bootstrap, once=True)
    config = write_config(settings, tmp_path / "lakehouse.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "--config", str(config), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = json.loads(done.stdout)
    assert body["kafka_total_lag"] == 0 and {p["lag"] for p in body["kafka"]} == {0}
    assert body["stream"]["state"] == "stopped" and body["stream"]["input_rows"] == sum(burst.values())  # last batch
    assert body["quarantine"]["quarantined"] == sum(burst.values())  # "{}" lacks every envelope field
    fresh = {t["table"]: t for t in body["tables"]}
    assert fresh["bronze.events"]["age_minutes"] < 5 and fresh["bronze.events"]["newest_event"].startswith("2026-11-01")
    # the burst pushed the quarantine rate over the shipped 5% rule: the command says so and exits 1
    assert [a["rule"] for a in body["alerts"]] == ["quarantine_rate"] and done.returncode == 1, done.stderr

    shown = subprocess.run(
        [sys.executable, "-m", "pipelines", "--config", str(config), "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert shown.returncode == 1 and "gold" not in shown.stdout, shown.stderr  # no gold table yet: none shown
    for line in ("bronze.events", "bronze.quarantine", "quarantine_rate", f"{sum(burst.values())} of"):
        assert line in shown.stdout, shown.stdout

    exporter = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "--config", str(config), "metrics", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = exporter.stdout.readline().split("metrics: ", 1)[1].split(" ")[0]
        scraped = urllib.request.urlopen(url, timeout=60).read().decode()
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
    assert exporter.returncode == 0, exporter.stderr.read()
    first = sorted(settings.kafka.topics)[0]
    assert f'lakehouse_kafka_lag_offsets{{partition="0",topic="{first}"}} 0.0' in scraped
    assert (
        'lakehouse_alert_firing{rule="quarantine_rate",severity="warning",subject="bronze.quarantine"} 1.0' in scraped
    )
    assert 'lakehouse_job_input_rows{job="bronze run",outcome="",table=""}' in scraped  # from ops.job_metrics
    # every query of the Grafana dashboard but the stream's own (checked against the stream) names a metric;
    # the batch jobs' series appear once a job command has run (test_cli's main job checks them)
    missing = _dashboard_metrics("lakehouse_", exclude="lakehouse_bronze_") - _exposed(scraped)
    assert missing <= {"lakehouse_job_duration_seconds", "lakehouse_job_rows_written", "lakehouse_job_gate_rules"}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver()
    yield started
    started.close()


def _with_rules(settings: Settings, tmp_path: Path, rules: list[dict], webhook: str) -> Settings:
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump({"rules": rules}))
    ops = settings.ops.model_copy(update={"alert_rules": str(path), "webhook_url": webhook})
    return settings.model_copy(update={"ops": ops})


def _check(settings: Settings, bootstrap: str | None) -> list[alerts.Notification]:
    snapshot = status.collect(settings, bootstrap)
    return alerts.notify(settings, alerts.evaluate(settings, alerts.load_rules(settings), snapshot))


def test_lag_and_quarantine_alerts_fire_once_and_resolve(
    spark, isolated_settings: Settings, broker, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    rules = [
        {"name": "lag", "kind": "kafka_lag", "max_offsets": 10},
        {"name": "bad_input", "kind": "quarantine_rate", "max_pct": 5.0, "window_hours": 1},
    ]
    settings = _with_rules(isolated_settings, tmp_path, rules, receiver.url)
    publish(settings, bootstrap, GeneratorSpec(seed=9, tenants=1, users_per_tenant=10, days=1, malformed_rate=0.0))
    run_bronze(spark, settings, bootstrap, once=True)
    assert _check(settings, bootstrap) == [] and receiver.take() == []

    topic = sorted(settings.kafka.topics)[0]
    _produce(settings, bootstrap, {(topic, 0): 30}, b"not json")  # a burst of bad messages: lag 30
    _check(settings, bootstrap)
    assert receiver.take() == [("firing", f"lag:{topic}")]
    _check(settings, bootstrap)
    assert receiver.take() == []  # still behind: the incident is open, nothing is sent again

    run_bronze(spark, settings, bootstrap, once=True)  # caught up; the 30 bad messages are quarantined
    _check(settings, bootstrap)
    assert sorted(receiver.take()) == [("firing", "bad_input:bronze.quarantine"), ("resolved", f"lag:{topic}")]

    receiver.fail.set()  # a webhook that is down: the check fails, nothing is recorded as sent
    publish(settings, bootstrap, GeneratorSpec(seed=10, tenants=2, users_per_tenant=60, days=2, malformed_rate=0.0))
    run_bronze(spark, settings, bootstrap, once=True)  # enough good messages to bring the rate under 5%
    with pytest.raises(alerts.DeliveryError, match="503"):
        _check(settings, bootstrap)
    receiver.fail.clear()
    _check(settings, bootstrap)
    assert receiver.take() == [("resolved", "bad_input:bronze.quarantine")]
    assert alerts.open_incidents(settings) == {}


def test_a_stopped_stream_makes_bronze_stale_until_it_catches_up(
    spark, isolated_settings: Settings, broker, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    from pipelines.bronze import start_bronze

    bootstrap = broker.bootstrap_servers
    rules = [{"name": "stale", "kind": "freshness", "table": "bronze.events", "max_age_minutes": 0.25}]
    bronze = isolated_settings.bronze.model_copy(update={"trigger_interval": "1 second"})
    settings = _with_rules(isolated_settings.model_copy(update={"bronze": bronze}), tmp_path, rules, receiver.url)
    publish(settings, bootstrap, GeneratorSpec(seed=12, tenants=1, users_per_tenant=5, days=1))
    spark.conf.set("spark.sql.streaming.noDataProgressEventInterval", "1000")  # an idle stream reports each second
    try:
        query, recorder = start_bronze(spark, settings, bootstrap)
        try:
            running = status.stream_state(settings)
            assert running["state"] in ("starting", "running")
            deadline = time.monotonic() + 120
            while status.freshness(settings, datetime.now(UTC))[0].current_as_of is None:
                assert time.monotonic() < deadline, "the running stream never reported zero lag"
                query.awaitTermination(1)
                recorder.flush(spark)
            metrics_url = status.stream_state(settings)["metrics_url"]
            scraped = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
            assert _dashboard_metrics("lakehouse_bronze_") <= _exposed(scraped)
            assert 'lakehouse_bronze_messages_total{route="event"}' in scraped
            for _ in range(20):  # reports keep coming while it runs: fresh for seconds on end
                query.awaitTermination(1)
                recorder.flush(spark)
            assert _check(settings, bootstrap) == []
        finally:
            query.stop()
            recorder.detach(spark)
        assert status.stream_state(settings)["state"] == "stopped"
        time.sleep(16)  # past the 15 s limit with no report
        _check(settings, bootstrap)
        assert receiver.take() == [("firing", "stale:bronze.events")]
        _check(settings, bootstrap)
        assert receiver.take() == []
        run_bronze(spark, settings, bootstrap, once=True)  # a catch-up: current again
        _check(settings, bootstrap)
        assert receiver.take() == [("resolved", "stale:bronze.events")]
    finally:
        spark.conf.unset("spark.sql.streaming.noDataProgressEventInterval")


def test_a_failed_gate_alerts_until_a_run_passes(spark, isolated_settings, receiver: WebhookReceiver, tmp_path) -> None:
    from pipelines.platform.lake import Lake
    from pipelines.quality import GateFailed, load_suite, run_gate
    from pipelines.quality.audit import JobGates

    settings = _with_rules(isolated_settings, tmp_path, [{"name": "gate", "kind": "gate_failure"}], receiver.url)
    suite = load_suite(
        Path(__file__).parents[1] / "expectations" / "silver.reconciliation.yaml",
        JobGates(spark, settings, "test").params(),
    )
    schema = "tenant_id string, event_date date, expected_rows long, silver_rows long"
    results = Lake(settings).table("ops", "quality_results")
    with pytest.raises(GateFailed):  # one bronze row of t2 never reached silver
        run_gate(
            spark.createDataFrame([("t2", date(2026, 11, 1), 4, 3)], schema), suite, run_id="r1", results_path=results
        )
    _check(settings, None)
    assert receiver.take() == [("firing", "gate:silver.reconciliation")]
    passed = run_gate(
        spark.createDataFrame([("t2", date(2026, 11, 1), 4, 4)], schema), suite, run_id="r2", results_path=results
    )
    passed.release()
    _check(settings, None)
    assert receiver.take() == [("resolved", "gate:silver.reconciliation")]


def test_gold_anomaly_and_silent_tenant_alerts(spark, isolated_settings, receiver: WebhookReceiver, tmp_path) -> None:
    from pipelines.platform.lake import Lake

    rules = [
        {"name": "anomaly", "kind": "event_rate_anomaly", "severity": "warning"},
        {"name": "silent", "kind": "tenant_volume_zero", "lookback_days": 3},
    ]
    settings = _with_rules(isolated_settings, tmp_path, rules, receiver.url)
    lake, day = Lake(settings), date(2026, 11, 10)

    def publish_gold(counts: list[tuple], anomalies: list[tuple]) -> None:
        spark.createDataFrame(counts, "tenant_id string, date date, event_type string, events long").write.format(
            "delta"
        ).mode("overwrite").save(lake.table("gold", "event_counts"))
        spark.createDataFrame(
            anomalies, "tenant_id string, date date, event_type string, events long, score double, flagged boolean"
        ).write.format("delta").mode("overwrite").save(lake.table("gold", "event_rate_anomalies"))

    before = [("t1", day - timedelta(d), "page_view", 100) for d in (1, 2)] + [("t2", day - timedelta(1), "login", 5)]
    publish_gold(
        [*before, ("t1", day, "page_view", 900)],  # t2 went silent on the newest day; t1 spiked
        [("t1", day, "page_view", 900, 12.5, True), ("t1", day - timedelta(1), "page_view", 100, 0.0, False)],
    )
    _check(settings, None)
    assert sorted(receiver.take()) == [("firing", "anomaly:t1/page_view"), ("firing", "silent:t2")]
    publish_gold(
        [*before, ("t1", day, "page_view", 101), ("t2", day, "login", 4)], [("t1", day, "page_view", 101, 0.1, False)]
    )
    _check(settings, None)
    assert sorted(receiver.take()) == [("resolved", "anomaly:t1/page_view"), ("resolved", "silent:t2")]


def test_a_dead_stream_process_is_reported_and_rules_files_are_checked(isolated_settings, tmp_path: Path) -> None:
    from pipelines.bronze.metrics import status_path

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = status_path(isolated_settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state": "running", "pid": gone.pid, "host": socket.gethostname()}))
    assert status.stream_state(isolated_settings)["state"] == "dead"
    rules = alerts.AlertRules.model_validate({"rules": [{"name": "down", "kind": "stream_down"}]})
    found = alerts.evaluate(
        isolated_settings, rules, status.Status(datetime.now(UTC), stream={"state": "dead", "pid": 1})
    )
    assert [a.key for a in found] == ["down:stream"]

    bad = tmp_path / "alerts.yaml"
    bad.write_text(
        yaml.safe_dump({"rules": [{"name": "x", "kind": "freshness", "table": "gold.nope", "max_age_minutes": 5}]})
    )
    settings = isolated_settings.model_copy(
        update={"ops": isolated_settings.ops.model_copy(update={"alert_rules": str(bad)})}
    )
    with pytest.raises(ConfigError, match=r"(?s)alerts.yaml.*rules.0.freshness.table.*gold.nope"):
        alerts.load_rules(settings)

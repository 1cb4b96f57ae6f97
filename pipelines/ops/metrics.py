"""Prometheus metrics of the batch jobs and of the platform's state, and their history in ``ops.job_metrics``.

Batch jobs are short-lived: a scrape would miss them. So every job command records its run when it ends
(``record_job``: duration, outcome, rows it wrote per table from the Delta commits it made, its gate rules'
outcomes) in ``ops.job_metrics``, and ``python -m pipelines metrics serve`` - a long-running exporter on
127.0.0.1 - serves the newest value of each of those series together with the status snapshot (Kafka lag,
freshness, quarantine rate, gate failures, open alerts), computed at scrape time. The bronze stream serves
its own live metrics (``pipelines.bronze.metrics``). ``infra/grafana/lakehouse.json`` charts both.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipelines.config import Settings
from pipelines.ops.lineage import datasets
from pipelines.platform.batch import read_rows, table_exists
from pipelines.platform.lake import Lake
from pipelines.platform.registry import JOB_METRICS_SCHEMA

# The Delta operation metric of the rows a commit wrote into new files (WRITE/replaceWhere, MERGE, DELETE).
_ROWS_WRITTEN = "numOutputRows"
JOB_LABELS = ["job", "table", "outcome"]  # every label a job metric carries ("" where it does not apply)


def job_metric_rows(settings: Settings, command: str, run_id: str, started: datetime, code: int) -> list[dict]:
    """The ops.job_metrics rows of one job run that started at ``started`` and exited with ``code``."""
    from deltalake import DeltaTable

    now = datetime.now(UTC)
    rows = [
        ("duration_seconds", {}, (now - started).total_seconds()),
        ("succeeded", {}, 1.0 if code == 0 else 0.0),
    ]
    lake, options = Lake(settings), settings.lake_storage_options() or None
    for name in datasets(command)[1]:
        path = lake.table(*name.split("."))
        if not table_exists(settings, path):
            continue
        commits = [
            c
            for c in DeltaTable(path, storage_options=options).history(100)
            if c["timestamp"] / 1000 >= started.timestamp()
        ]
        if commits:
            written = sum(int((c.get("operationMetrics") or {}).get(_ROWS_WRITTEN, 0) or 0) for c in commits)
            rows.append(("rows_written", {"table": name}, float(written)))
            rows.append(("commits", {"table": name}, float(len(commits))))
    rows += _gate_outcomes(settings, started)
    return [
        {
            "at": now,
            "job": command,
            "run_id": run_id,
            "metric": metric,
            "labels": json.dumps(labels, sort_keys=True),
            "value": value,
        }
        for metric, labels, value in rows
    ]


def _gate_outcomes(settings: Settings, started: datetime) -> list[tuple[str, dict, float]]:
    """Gate rules this run checked, per table and outcome (passed, or the action a failing rule took)."""
    import pyarrow.dataset as ds

    checked = read_rows(
        settings,
        Lake(settings).table("ops", "quality_results"),
        columns=["table", "success", "action"],
        filter=ds.field("recorded_at") >= started,
    )
    if checked is None:
        return []
    counts: dict[tuple[str, str], int] = {}
    for row in checked.to_pylist():
        outcome = "passed" if row["success"] else row["action"]
        counts[(row["table"], outcome)] = counts.get((row["table"], outcome), 0) + 1
    return [("gate_rules", {"table": t, "outcome": o}, float(n)) for (t, o), n in sorted(counts.items())]


def record_job(settings: Settings, command: str, run_id: str, started: datetime, code: int) -> None:
    """Append the run's metrics to ops.job_metrics (delta-rs: no JVM, appends never conflict)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    rows = job_metric_rows(settings, command, run_id, started, code)
    write_deltalake(
        Lake(settings).table("ops", "job_metrics"),
        pa.Table.from_pylist(rows, schema=JOB_METRICS_SCHEMA),
        mode="append",
        storage_options=settings.lake_storage_options() or None,
    )


class OpsCollector(Collector):
    """Computes the exporter's metrics at scrape time (cached ``cache_s`` seconds: scrapers may be several)."""

    def __init__(self, settings: Settings, cache_s: float = 10.0) -> None:
        self.settings = settings
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.cache_s:
                self._cached = (time.monotonic(), self._families())
            families = self._cached[1]
        yield from families

    def _families(self) -> list[GaugeMetricFamily]:
        from pipelines.ops.alerts import check_now

        status, alerts = check_now(self.settings)
        families = _status_families(status)
        firing = GaugeMetricFamily(
            "lakehouse_alert_firing", "1 while an alert rule's condition holds", labels=["rule", "severity", "subject"]
        )
        for alert in alerts:
            firing.add_metric([alert.rule, alert.severity, alert.subject], 1.0)
        families.append(firing)
        families += _job_families(self.settings)
        return families


def _status_families(status: Any) -> list[GaugeMetricFamily]:
    lag = GaugeMetricFamily(
        "lakehouse_kafka_lag_offsets", "Offsets bronze is behind the broker (checkpoint)", labels=["topic", "partition"]
    )
    for p in status.kafka:
        lag.add_metric([p.topic, str(p.partition)], p.lag)
    up = GaugeMetricFamily("lakehouse_kafka_up", "1 when the broker answered the last scrape")
    up.add_metric([], 0.0 if status.kafka_error else 1.0)
    stream = GaugeMetricFamily("lakehouse_stream_running", "1 while the bronze stream runs", labels=["state"])
    stream.add_metric([status.stream.get("state", "unknown")], 1.0 if status.stream.get("state") == "running" else 0.0)
    age = GaugeMetricFamily("lakehouse_table_age_minutes", "Minutes since the table was last current", labels=["table"])
    version = GaugeMetricFamily("lakehouse_table_version", "The table's Delta version", labels=["table"])
    for table in status.tables:
        if table.age_minutes is not None:
            age.add_metric([table.table], table.age_minutes)
        version.add_metric([table.table], table.version)
    rate = GaugeMetricFamily("lakehouse_quarantine_rate_pct", "Quarantined share of bronze's recent messages")
    if status.quarantine is not None:
        rate.add_metric([], status.quarantine.pct)
    gates = GaugeMetricFamily(
        "lakehouse_gate_failed_rules", "Rules that failed the newest gate run, per action", labels=["table", "action"]
    )
    for gate in status.gates:
        for action, count in (("fail", gate.failed), ("warn", gate.warned), ("quarantine", gate.quarantined)):
            gates.add_metric([gate.table, action], count)
    return [lag, up, stream, age, version, rate, gates]


def _job_families(settings: Settings) -> list[GaugeMetricFamily]:
    """The newest value of every (job, metric, labels) series of ops.job_metrics, as lakehouse_job_<metric>."""
    recorded = read_rows(settings, Lake(settings).table("ops", "job_metrics"))
    if recorded is None:
        return []
    newest: dict[tuple[str, str, str], dict] = {}
    for row in recorded.to_pylist():
        key = (row["job"], row["metric"], row["labels"])
        if key not in newest or row["at"] >= newest[key]["at"]:
            newest[key] = row
    families: dict[str, GaugeMetricFamily] = {}
    for (job, metric, labels), row in sorted(newest.items()):
        extra = json.loads(labels)
        name = f"lakehouse_job_{metric}"
        if name not in families:
            families[name] = GaugeMetricFamily(name, f"Newest {metric} per job (ops.job_metrics)", labels=JOB_LABELS)
        families[name].add_metric([job, *(str(extra.get(label, "")) for label in JOB_LABELS[1:])], row["value"])
    return list(families.values())

"""The running bronze stream, seen from outside: Prometheus metrics on 127.0.0.1 and a status file.

A continuous stream is the platform's one long-running writer, so it serves its own metrics (messages routed,
batch duration, rates, lag and backpressure) on ``ops.metrics_host``/``ops.metrics_port`` while it runs.
Its status file (``<ops.state_dir>/stream-<query>.json``) says whether it runs, its process, its last batch and
where its metrics are: what ``python -m pipelines status`` reads without attaching to the query. The file is
replaced atomically on every progress report, so a reader never sees half of it; a stream killed with
SIGKILL leaves ``running`` with a dead PID, which ``status`` reports as ``dead``.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pipelines.config import Settings

# Micro-batch durations from a second to a quarter of an hour.
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900)


def status_path(settings: Settings) -> Path:
    return Path(settings.resolve_path(settings.ops.state_dir)) / f"stream-{settings.bronze.query_name}.json"


def read_status(settings: Settings) -> dict[str, Any] | None:
    """The stream's last written status, or None when no stream ever ran with this state folder."""
    try:
        return json.loads(status_path(settings).read_text())
    except FileNotFoundError:
        return None


class StreamMetrics:
    """The stream's Prometheus metrics (its own registry) and its status file.

    Spark calls the query listener on its own thread and ``foreachBatch`` on the query's: both only set
    metric values and rewrite a small local file here, never run a Spark job.
    """

    def __init__(self, settings: Settings, serve: bool) -> None:
        self.path = status_path(settings)
        self.max_offsets_per_trigger = settings.bronze.max_offsets_per_trigger
        self.registry = CollectorRegistry()
        labels = {"registry": self.registry}
        self.messages = Counter(
            "lakehouse_bronze_messages", "Kafka messages committed to bronze, by route", ["route"], **labels
        )
        self.batch_duration = Histogram(
            "lakehouse_bronze_batch_duration_seconds", "Micro-batch duration", buckets=DURATION_BUCKETS, **labels
        )
        self.input_rate = Gauge("lakehouse_bronze_input_rows_per_second", "Rows arriving per second", **labels)
        self.processed_rate = Gauge("lakehouse_bronze_processed_rows_per_second", "Rows processed per second", **labels)
        self.lag = Gauge(
            "lakehouse_bronze_lag_offsets", "Offsets behind the broker's latest", ["topic", "partition"], **labels
        )
        self.behind = Gauge("lakehouse_bronze_offsets_behind", "Offsets behind the broker, all partitions", **labels)
        self.rate_limit = Gauge(
            "lakehouse_bronze_max_offsets_per_trigger", "The rate limit: offsets one micro-batch may read", **labels
        )
        self.last_batch = Gauge("lakehouse_bronze_last_batch_id", "Id of the last micro-batch", **labels)
        self.last_progress = Gauge(
            "lakehouse_bronze_last_progress_timestamp_seconds", "When the stream last reported progress", **labels
        )
        self.rate_limit.set(self.max_offsets_per_trigger)
        self.url: str | None = None
        self._server: Any = None
        self._lock = threading.Lock()
        if serve:
            host, port = settings.ops.metrics_host, settings.ops.metrics_port
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
            self.url = f"http://{host}:{self._server.server_port}/metrics"
        self._state: dict[str, Any] = {
            "state": "starting",
            "query": settings.bronze.query_name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "metrics_url": self.url,
            "started_at": _now(),
        }
        self._write()

    def routed(self, events: int, quarantined: int) -> None:
        """Called by ``foreachBatch`` once a batch's commits are in."""
        self.messages.labels(route="event").inc(events)
        self.messages.labels(route="quarantine").inc(quarantined)

    def progress(self, progress: Any, lag: list[dict[str, Any]]) -> None:
        """Called by the listener with a progress report and its lag rows."""
        duration_ms = (progress.durationMs or {}).get("triggerExecution")
        if duration_ms is not None and progress.numInputRows:
            self.batch_duration.observe(duration_ms / 1000)
        self.input_rate.set(_number(progress.inputRowsPerSecond))
        self.processed_rate.set(_number(progress.processedRowsPerSecond))
        for row in lag:
            self.lag.labels(topic=row["topic"], partition=str(row["partition"])).set(row["lag"])
        behind = sum(row["lag"] for row in lag)
        self.behind.set(behind)
        self.last_batch.set(progress.batchId)
        self.last_progress.set(datetime.now(UTC).timestamp())
        self._update(
            state="running",
            batch_id=progress.batchId,
            input_rows=progress.numInputRows,
            duration_ms=duration_ms,
            input_rows_per_second=_number(progress.inputRowsPerSecond),
            processed_rows_per_second=_number(progress.processedRowsPerSecond),
            offsets_behind=behind,
            reported_at=_now(),
        )

    def idle(self, lag: list[dict[str, Any]]) -> None:
        """Called by the listener when a trigger found nothing new: caught up, nothing processed."""
        for row in lag:
            self.lag.labels(topic=row["topic"], partition=str(row["partition"])).set(0)
        self.behind.set(0)
        self.input_rate.set(0)
        self.processed_rate.set(0)
        self.last_progress.set(datetime.now(UTC).timestamp())
        self._update(state="running", offsets_behind=0, reported_at=_now())

    def stopped(self, error: str | None = None) -> None:
        """The query ended: ``failed`` with its error, else ``stopped``; the metrics endpoint closes."""
        self._update(state="failed" if error else "stopped", error=error, stopped_at=_now())
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _update(self, **values: Any) -> None:
        with self._lock:
            self._state.update(values)
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".stream-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(self._state, out, default=str)
        os.replace(temporary, self.path)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _number(value: Any) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return 0.0
    return result if result == result else 0.0  # NaN (no rows yet) -> 0

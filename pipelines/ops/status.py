"""One snapshot of the platform's health: what ``python -m pipelines status`` prints and alerts are judged on.

Every figure comes from its source of truth, read without a JVM so a cron job or a sensor can ask every
minute: Kafka lag is the broker's latest offsets minus the offsets the stream's checkpoint has committed
(exact, on the embedded broker and on a cluster alike); the stream's state and last batch come from the
status file the running stream rewrites (``pipelines.bronze.metrics``); freshness, gate results and the
quarantine rate come from the Delta tables' logs and the ops tables.

Freshness says how current a table is, not when data last arrived: bronze is current as of the newest
progress report in which the stream was behind by zero offsets on every partition (messages published before
it are all in bronze - the rule the medallion DAG's sensor uses); a silver or gold table as of its last
publication (Delta commit).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.bronze.metrics import read_status
from pipelines.bronze.monitoring import checkpoint_offsets
from pipelines.config import Settings
from pipelines.platform.batch import read_rows, table_exists
from pipelines.platform.lake import Lake
from pipelines.platform.registry import TABLES, TableSpec

SERVED_LAYERS = ("bronze", "silver", "gold")
LAG_REPORT_HORIZON = timedelta(days=7)  # bronze freshness looks at lag reports this far back


@dataclass
class PartitionLag:
    topic: str
    partition: int
    latest_offset: int  # the broker's high watermark
    committed_offset: int  # the next offset bronze will read (the checkpoint's, else the earliest)
    lag: int


@dataclass
class TableFreshness:
    table: str
    version: int
    published_at: datetime  # the last commit
    current_as_of: datetime | None  # see the module docstring
    newest_event: str | None  # newest occurred_at (file statistics) or newest day partition
    age_minutes: float | None  # now - current_as_of


@dataclass
class GateRun:
    table: str
    run_id: str
    recorded_at: datetime
    rules: int
    failed: int  # rules whose action `fail` stopped the publication
    warned: int
    quarantined: int
    failing_rules: list[str]


@dataclass
class QuarantineRate:
    window_hours: int
    messages: int
    quarantined: int

    @property
    def pct(self) -> float:
        return 100.0 * self.quarantined / self.messages if self.messages else 0.0


@dataclass
class Status:
    taken_at: datetime
    kafka: list[PartitionLag] = field(default_factory=list)
    kafka_error: str | None = None
    stream: dict[str, Any] = field(default_factory=dict)
    tables: list[TableFreshness] = field(default_factory=list)
    gates: list[GateRun] = field(default_factory=list)
    quarantine: QuarantineRate | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.quarantine is not None:
            data["quarantine"]["pct"] = round(self.quarantine.pct, 4)
        data["kafka_total_lag"] = sum(p.lag for p in self.kafka)
        return json.loads(json.dumps(data, default=_iso))


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def collect(settings: Settings, bootstrap_servers: str | None, quarantine_window_hours: int = 24) -> Status:
    """The snapshot; ``bootstrap_servers`` None: the broker could not be resolved (kafka_error says why)."""
    now = datetime.now(UTC)
    status = Status(taken_at=now)
    if bootstrap_servers is not None:
        try:
            status.kafka = kafka_lag(settings, bootstrap_servers)
        except Exception as exc:  # an unreachable broker is a finding, not a crash
            status.kafka_error = f"Kafka at {bootstrap_servers}: {exc}"
    status.stream = stream_state(settings)
    status.tables = freshness(settings, now)
    status.gates = latest_gates(settings, now)
    status.quarantine = quarantine_rate(settings, now, quarantine_window_hours)
    return status


def kafka_lag(settings: Settings, bootstrap_servers: str) -> list[PartitionLag]:
    """Per partition of every configured topic: the broker's latest offset, bronze's committed one, the lag."""
    from confluent_kafka import Consumer, TopicPartition

    committed = checkpoint_offsets(settings)
    consumer = Consumer(
        {
            **settings.kafka.client_settings(),
            "bootstrap.servers": bootstrap_servers,
            "group.id": "lakehouse-status",  # never joins: only reads watermarks
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        rows = []
        for topic in sorted(settings.kafka.topics):
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                raise RuntimeError(f"topic {topic} is not on the broker ({described.error if described else 'absent'})")
            for partition in sorted(described.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                done = committed.get(topic, {}).get(str(partition), low)  # never read: from the earliest
                rows.append(PartitionLag(topic, partition, high, done, max(high - done, 0)))
        return rows
    finally:
        consumer.close()


def stream_state(settings: Settings) -> dict[str, Any]:
    """The stream's status file, with ``state`` corrected to ``dead`` when its process is gone."""
    state = read_status(settings)
    if state is None:
        return {"state": "never started"}
    if state.get("state") in ("running", "starting") and state.get("host") == socket.gethostname():
        try:
            os.kill(int(state["pid"]), 0)
        except ProcessLookupError:
            state["state"] = "dead"
        except PermissionError:
            pass  # alive, another user's
    return state


def _spec_exists(settings: Settings, spec: TableSpec) -> str | None:
    path = Lake(settings).table(spec.layer, spec.name)
    return path if table_exists(settings, path) else None


def freshness(settings: Settings, now: datetime) -> list[TableFreshness]:
    from deltalake import DeltaTable

    options = settings.lake_storage_options() or None
    bronze_as_of = bronze_current_as_of(settings, now)
    found = []
    for spec in TABLES:
        if spec.layer not in SERVED_LAYERS or (path := _spec_exists(settings, spec)) is None:
            continue
        table = DeltaTable(path, storage_options=options)
        last = table.history(1)[0]
        published = datetime.fromtimestamp(last["timestamp"] / 1000, UTC)
        current = bronze_as_of if spec.layer == "bronze" else published
        age = (now - current).total_seconds() / 60 if current else None
        found.append(
            TableFreshness(spec.full_name, table.version(), published, current, _newest_event(table, spec), age)
        )
    return found


def _newest_event(table: Any, spec: TableSpec) -> str | None:
    """Newest occurred_at from the files' statistics, else the newest day partition: no data file is read."""
    import pyarrow as pa
    import pyarrow.compute as pc

    actions = pa.table(table.get_add_actions(flatten=True))  # delta-rs hands over an Arrow C stream
    for column in ("max.occurred_at", f"partition.{spec.day_column}" if spec.day_column else None):
        if column and column in actions.column_names and actions.num_rows:
            newest = pc.max(actions.column(column)).as_py()
            return _iso(newest) if newest is not None else None
    return None


def bronze_current_as_of(settings: Settings, now: datetime) -> datetime | None:
    """The newest lag report in which every partition was behind by zero offsets (None: none in a week)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    reports = read_rows(
        settings,
        Lake(settings).table("ops", "bronze_lag"),
        columns=["reported_at", "lag"],
        filter=ds.field("reported_at") >= now - LAG_REPORT_HORIZON,
    )
    if reports is None or reports.num_rows == 0:
        return None
    per_report = reports.group_by("reported_at").aggregate([("lag", "max")])
    caught_up = per_report.filter(pc.equal(per_report["lag_max"], 0))
    return pc.max(caught_up["reported_at"]).as_py() if caught_up.num_rows else None


def latest_gates(settings: Settings, now: datetime, horizon: timedelta = timedelta(days=30)) -> list[GateRun]:
    """The newest gate run of every table validated within ``horizon``."""
    import pyarrow.dataset as ds

    found = read_rows(
        settings,
        Lake(settings).table("ops", "quality_results"),
        columns=["run_id", "table", "expectation", "action", "success", "recorded_at"],
        filter=ds.field("recorded_at") >= now - horizon,
    )
    rows = found.to_pylist() if found is not None else []
    newest: dict[str, tuple[datetime, str]] = {}
    for row in rows:
        if row["table"] not in newest or row["recorded_at"] > newest[row["table"]][0]:
            newest[row["table"]] = (row["recorded_at"], row["run_id"])
    runs = []
    for name, (recorded_at, run_id) in sorted(newest.items()):
        rules = [row for row in rows if row["table"] == name and row["run_id"] == run_id]
        failing = [row for row in rules if not row["success"]]
        runs.append(
            GateRun(
                table=name,
                run_id=run_id,
                recorded_at=recorded_at,
                rules=len(rules),
                failed=sum(row["action"] == "fail" for row in failing),
                warned=sum(row["action"] == "warn" for row in failing),
                quarantined=sum(row["action"] == "quarantine" for row in failing),
                failing_rules=sorted(row["expectation"] for row in failing),
            )
        )
    return runs


def quarantine_rate(settings: Settings, now: datetime, window_hours: int) -> QuarantineRate | None:
    """Messages bronze committed in the last ``window_hours`` and how many of them went to quarantine."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    recent = read_rows(
        settings,
        Lake(settings).bronze_progress,
        columns=["events", "quarantined"],
        filter=ds.field("max_ingested_at") >= now - timedelta(hours=window_hours),
    )
    if recent is None:
        return None
    events = pc.sum(recent["events"]).as_py() or 0
    quarantined = pc.sum(recent["quarantined"]).as_py() or 0
    return QuarantineRate(window_hours, events + quarantined, quarantined)

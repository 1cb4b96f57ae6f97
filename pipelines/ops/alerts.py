"""Alerts: rules from ``conf/alerts.yaml`` judged on a status snapshot, notified once per incident.

``evaluate`` turns a :class:`pipelines.ops.status.Status` (plus the newest gold day, for the anomaly and
silent-tenant rules) into the conditions that hold now, each keyed by rule and subject (a topic, a table, a
tenant). ``notify`` compares them with the open incidents - the keys whose newest row in ``ops.alert_events``
is ``firing`` - and sends ``firing`` for a new key and ``resolved`` for an open key that no longer holds, to the
log and to the webhook; only what was delivered is recorded. So an alert fires once per incident however often
the rules are evaluated, a resolve follows when the condition clears, and a webhook that is down gets the
same notifications at the next evaluation. The incident state lives in the lake, not in one machine's files:
any Airflow worker can evaluate.
"""

from __future__ import annotations

import json
import logging
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from tenacity import Retrying, stop_after_attempt, wait_exponential

from pipelines.config import ConfigError, Settings, _format_errors, read_yaml_mapping
from pipelines.ops.status import Status, collect
from pipelines.platform.batch import read_rows
from pipelines.platform.lake import Lake
from pipelines.platform.registry import ALERT_EVENTS_SCHEMA, TABLES

log = logging.getLogger(__name__)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")
    severity: Literal["critical", "warning"] = "critical"


class KafkaLagRule(_Rule):
    kind: Literal["kafka_lag"]
    max_offsets: int = Field(ge=0)  # per topic


class StreamDownRule(_Rule):
    kind: Literal["stream_down"]


class FreshnessRule(_Rule):
    kind: Literal["freshness"]
    table: str
    max_age_minutes: float = Field(gt=0)

    @field_validator("table")
    @classmethod
    def _declared(cls, name: str) -> str:
        declared = sorted(spec.full_name for spec in TABLES if spec.layer in ("bronze", "silver", "gold"))
        if name not in declared:
            raise ValueError(f"{name!r} is not a bronze, silver or gold table ({', '.join(declared)})")
        return name


class QuarantineRateRule(_Rule):
    kind: Literal["quarantine_rate"]
    max_pct: float = Field(ge=0, le=100)
    window_hours: int = Field(default=24, ge=1)


class GateFailureRule(_Rule):
    kind: Literal["gate_failure"]


class EventRateAnomalyRule(_Rule):
    kind: Literal["event_rate_anomaly"]


class TenantVolumeZeroRule(_Rule):
    kind: Literal["tenant_volume_zero"]
    lookback_days: int = Field(default=7, ge=1)


Rule = Annotated[
    KafkaLagRule
    | StreamDownRule
    | FreshnessRule
    | QuarantineRateRule
    | GateFailureRule
    | EventRateAnomalyRule
    | TenantVolumeZeroRule,
    Field(discriminator="kind"),
]


class AlertRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule]

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[Any]) -> list[Any]:
        names = [rule.name for rule in rules]
        if duplicated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"rule names must be unique: {', '.join(duplicated)}")
        return rules

    def quarantine_window_hours(self) -> int:
        return max((r.window_hours for r in self.rules if isinstance(r, QuarantineRateRule)), default=24)


def load_rules(settings: Settings) -> AlertRules:
    path = Path(settings.resolve_path(settings.ops.alert_rules))
    raw = read_yaml_mapping(path, "alert rules (ops.alert_rules)", ConfigError, "a mapping with a 'rules' list")
    try:
        return AlertRules.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: str
    subject: str  # what it is about: a topic, a table, a tenant, "stream"
    message: str
    value: float | None = None

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.subject}"


def check_now(settings: Settings) -> tuple[Status, list[Alert]]:
    """A status snapshot now and the alert conditions it shows (what `status` prints and `alerts check` sends)."""
    from pipelines.kafka.broker import BrokerError
    from pipelines.kafka.topics import resolve_bootstrap_servers

    rules = load_rules(settings)
    try:
        bootstrap: str | None = resolve_bootstrap_servers(settings, start=False)
        error = None
    except BrokerError as exc:
        bootstrap, error = None, str(exc)
    status = collect(settings, bootstrap, rules.quarantine_window_hours())
    status.kafka_error = status.kafka_error or error
    return status, evaluate(settings, rules, status)


def evaluate(settings: Settings, rules: AlertRules, status: Status) -> list[Alert]:
    """The conditions that hold in ``status`` (plus the newest gold day), one per rule and subject."""
    found: list[Alert] = []
    for rule in rules.rules:
        if isinstance(rule, KafkaLagRule):
            found += _lag(rule, status)
        elif isinstance(rule, StreamDownRule):
            state = status.stream.get("state")
            if state in ("failed", "dead"):
                detail = status.stream.get("error") or f"pid {status.stream.get('pid')} is gone"
                found.append(Alert(rule.name, rule.severity, "stream", f"the bronze stream is {state}: {detail}"))
        elif isinstance(rule, FreshnessRule):
            found += _freshness(rule, status)
        elif isinstance(rule, QuarantineRateRule):
            rate = status.quarantine
            if rate is not None and rate.messages and rate.pct > rule.max_pct:
                message = (
                    f"{rate.quarantined} of {rate.messages} messages quarantined in the last {rate.window_hours} h "
                    f"({rate.pct:.2f}% > {rule.max_pct}%): see bronze.quarantine's error_summary"
                )
                found.append(Alert(rule.name, rule.severity, "bronze.quarantine", message, rate.pct))
        elif isinstance(rule, GateFailureRule):
            for gate in status.gates:
                if gate.failed:
                    message = (
                        f"gate of {gate.table} failed (run {gate.run_id}): {', '.join(gate.failing_rules)}; "
                        "nothing was published - see ops.quality_results and the Data Docs"
                    )
                    found.append(Alert(rule.name, rule.severity, gate.table, message, float(gate.failed)))
        elif isinstance(rule, EventRateAnomalyRule):
            found += _anomalies(settings, rule)
        elif isinstance(rule, TenantVolumeZeroRule):
            found += _silent_tenants(settings, rule)
    return found


def _lag(rule: KafkaLagRule, status: Status) -> list[Alert]:
    if status.kafka_error:
        return [Alert(rule.name, rule.severity, "kafka", f"lag unknown: {status.kafka_error}")]
    per_topic: dict[str, int] = {}
    for partition in status.kafka:
        per_topic[partition.topic] = per_topic.get(partition.topic, 0) + partition.lag
    return [
        Alert(rule.name, rule.severity, topic, f"bronze is {lag} offsets behind on {topic} (> {rule.max_offsets})", lag)
        for topic, lag in sorted(per_topic.items())
        if lag > rule.max_offsets
    ]


def _freshness(rule: FreshnessRule, status: Status) -> list[Alert]:
    table = next((t for t in status.tables if t.table == rule.table), None)
    if table is None:
        return []  # not created yet: nothing to be stale (a stuck first build shows as a gate or DAG failure)
    if table.age_minutes is None or table.age_minutes > rule.max_age_minutes:
        since = table.current_as_of.isoformat(timespec="seconds") if table.current_as_of else "never (no report)"
        message = f"{rule.table} is stale: current as of {since}, older than {rule.max_age_minutes:g} min"
        return [Alert(rule.name, rule.severity, rule.table, message, table.age_minutes)]
    return []


def _gold_rows(settings: Settings, name: str, columns: list[str], since: date | None = None) -> list[dict]:
    import pyarrow.dataset as ds

    condition = ds.field("date") >= since if since else None
    rows = read_rows(settings, Lake(settings).table("gold", name), columns=columns, filter=condition)
    return rows.to_pylist() if rows is not None else []


def _newest_day(settings: Settings) -> date | None:
    days = _gold_rows(settings, "event_counts", ["date"])
    return max((row["date"] for row in days), default=None)


def _anomalies(settings: Settings, rule: EventRateAnomalyRule) -> list[Alert]:
    newest = _newest_day(settings)
    if newest is None:
        return []
    rows = _gold_rows(
        settings, "event_rate_anomalies", ["tenant_id", "date", "event_type", "events", "score", "flagged"], newest
    )
    return [
        Alert(
            rule.name,
            rule.severity,
            f"{row['tenant_id']}/{row['event_type']}",
            f"{row['tenant_id']}: {row['events']} {row['event_type']} events on {row['date']} "
            f"(score {row['score']}, gold.event_rate_anomalies)",
            row["score"],
        )
        for row in sorted(rows, key=lambda r: (r["tenant_id"], r["event_type"]))
        if row["flagged"] and row["date"] == newest
    ]


def _silent_tenants(settings: Settings, rule: TenantVolumeZeroRule) -> list[Alert]:
    newest = _newest_day(settings)
    if newest is None:
        return []
    rows = _gold_rows(settings, "event_counts", ["tenant_id", "date", "events"], newest - timedelta(rule.lookback_days))
    before = {row["tenant_id"] for row in rows if row["date"] < newest and row["events"] > 0}
    today = {row["tenant_id"] for row in rows if row["date"] == newest and row["events"] > 0}
    return [
        Alert(
            rule.name,
            rule.severity,
            tenant,
            f"tenant {tenant} sent no events on {newest} (it did in the {rule.lookback_days} days before)",
            0.0,
        )
        for tenant in sorted(before - today)
    ]


# --- notification -------------------------------------------------------------------------------------------


class DeliveryError(RuntimeError):
    """The webhook refused or could not be reached after retries (the undelivered notifications are retried at
    the next evaluation)."""


@dataclass(frozen=True)
class Notification:
    state: str  # firing | resolved
    incident_id: str
    alert: Alert
    at: datetime

    def payload(self) -> dict[str, Any]:
        return {
            "source": "lakehouse",
            "status": self.state,
            "incident_id": self.incident_id,
            "key": self.alert.key,
            "rule": self.alert.rule,
            "severity": self.alert.severity,
            "subject": self.alert.subject,
            "message": self.alert.message,
            "value": self.alert.value,
            "at": self.at.isoformat(),
        }


def open_incidents(settings: Settings) -> dict[str, dict[str, Any]]:
    """{key: its newest ops.alert_events row} for the keys whose newest event is ``firing``."""
    events = read_rows(settings, Lake(settings).table("ops", "alert_events"))
    if events is None:
        return {}
    newest: dict[str, dict[str, Any]] = {}
    for row in events.to_pylist():
        if row["key"] not in newest or row["at"] >= newest[row["key"]]["at"]:
            newest[row["key"]] = row
    return {key: row for key, row in newest.items() if row["state"] == "firing"}


def notify(settings: Settings, alerts: list[Alert]) -> list[Notification]:
    """Send ``firing`` for new incidents and ``resolved`` for cleared ones; returns what was delivered.

    Raises DeliveryError when the webhook fails: what was delivered before is recorded, the rest is not (so
    it is sent again next time).
    """
    now = datetime.now(UTC)
    opened = open_incidents(settings)
    holding = {alert.key: alert for alert in alerts}
    due = [Notification("firing", uuid.uuid4().hex, a, now) for k, a in holding.items() if k not in opened]
    for key, row in sorted(opened.items()):
        if key not in holding:
            cleared = Alert(row["rule"], row["severity"], row["subject"], f"resolved: {row['message']}", row["value"])
            due.append(Notification("resolved", row["incident_id"], cleared, now))
    delivered: list[Notification] = []
    try:
        for notification in due:
            _deliver(settings, notification)
            delivered.append(notification)
    finally:
        _record(settings, delivered)
    return delivered


def _deliver(settings: Settings, notification: Notification) -> None:
    alert = notification.alert
    level = logging.WARNING if notification.state == "firing" else logging.INFO
    log.log(level, "alert %s [%s] %s: %s", notification.state, alert.severity, alert.key, alert.message)
    url = settings.ops.webhook()
    if not url:
        return
    body = json.dumps(notification.payload()).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        for attempt in Retrying(stop=stop_after_attempt(3), wait=wait_exponential(0.2, max=2), reraise=True):
            with attempt, urllib.request.urlopen(request, timeout=settings.ops.webhook_timeout_s) as response:
                response.read()
    except OSError as exc:  # URLError and HTTPError (a non-2xx answer) are OSErrors
        raise DeliveryError(f"alert webhook {url.split('?', 1)[0]} failed for {alert.key}: {exc}") from None


def _record(settings: Settings, delivered: list[Notification]) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    if not delivered:
        return
    rows = [
        {
            "at": n.at,
            "incident_id": n.incident_id,
            "key": n.alert.key,
            "rule": n.alert.rule,
            "severity": n.alert.severity,
            "state": n.state,
            "subject": n.alert.subject,
            "message": n.alert.message,
            "value": n.alert.value,
        }
        for n in delivered
    ]
    path = Lake(settings).table("ops", "alert_events")
    write_deltalake(
        path,
        pa.Table.from_pylist(rows, schema=ALERT_EVENTS_SCHEMA),
        mode="append",
        storage_options=settings.lake_storage_options() or None,
    )

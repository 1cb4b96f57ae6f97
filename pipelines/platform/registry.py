"""Every table the platform writes, declared once: its name, layer, partitioning, owner, the job that writes
it, what it holds about people, where its rows come from, and (for the tables a job creates empty before its
first write) its schema.

Paths (:class:`pipelines.platform.lake.Lake`), catalog registration (:mod:`pipelines.platform.catalog`) and the
jobs' partition columns read these declarations instead of repeating them, so a new table is one entry here
plus the job that fills it. Silver and gold schemas are not repeated here: they are the columns their
transforms select (``pipelines.silver.model``, ``pipelines.gold``), and Delta records them on the first write.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

LAYERS = ("bronze", "silver", "gold", "ops")

# What a table holds about people (the PII column classes of conf/pii.yaml, per table):
RAW_PII = "raw"  # identifiers as producers sent them: bronze only, never served
PSEUDONYMIZED = "pseudonymized"  # identifiers are tenant-keyed HMAC pseudonyms, IPs truncated
AGGREGATED = "aggregated"  # counts and sums per tenant and day; no row is a person
NO_PII = "none"


@dataclass(frozen=True)
class TableSpec:
    layer: str
    name: str
    partitioned_by: tuple[str, ...]
    writer: str  # the command that writes it (`python -m pipelines ...`)
    pii: str
    upstream: tuple[str, ...]
    description: str
    schema: pa.Schema | None = None  # declared for tables created empty before their first write
    owner: str = "data-platform"
    retention_days: int | None = None  # rows kept this long by maintenance; None: kept until erased

    @property
    def full_name(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def day_column(self) -> str | None:
        """The date partition column (what retention drops whole days by), if the table has one."""
        return next((column for column in self.partitioned_by if column.endswith("date")), None)


# bronze.events: one row per message that passed validation, duplicates included (bronze equals
# what Kafka delivered). `properties` and `context` are the JSON objects re-serialized compactly
# with sorted keys (lossless for JSON values); `raw_value` keeps the exact bytes as received.
BRONZE_EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("version", pa.int32()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("tenant_id", pa.string()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("session_id", pa.string()),
        ("properties", pa.string()),
        ("context", pa.string()),
        ("trace_id", pa.string()),
        ("raw_value", pa.binary()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("event_date", pa.date32()),
    ]
)

# bronze.quarantine: one row per message that could not be accepted, with every reason.
# `errors` is a JSON list of {"path": ..., "message": ...}; event_type and tenant_id are best
# effort (null when the message is not JSON or lacks them).
BRONZE_QUARANTINE_SCHEMA = pa.schema(
    [
        ("raw_key", pa.binary()),
        ("raw_value", pa.binary()),
        ("headers", pa.string()),
        ("errors", pa.string()),
        ("error_summary", pa.string()),
        ("event_type", pa.string()),
        ("tenant_id", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("ingest_date", pa.date32()),
    ]
)

# ops.audit_log: one row per audited action (replay, erasure, skipped gates, schema change), appended by the CLI.
AUDIT_SCHEMA = pa.schema(
    [
        ("at", pa.timestamp("us", tz="UTC")),
        ("actor", pa.string()),  # who: LAKEHOUSE_AUDIT_ACTOR (e.g. set by the scheduler), else the OS user
        ("action", pa.string()),  # replay | erasure | gate_skip | schema_change
        ("command", pa.string()),  # the command line, minus personal identifiers
        ("target", pa.string()),  # what it touched: a day range, a tenant, tables, the schema folder
        ("detail", pa.string()),  # JSON
        ("outcome", pa.string()),  # succeeded | failed | refused
        ("exit_code", pa.int32()),
    ]
)

# ops.bronze_progress: one row per Kafka partition and committed micro-batch (what ``freshness`` aggregates).
PROGRESS_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("batch_id", pa.int64()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("min_offset", pa.int64()),
        ("max_offset", pa.int64()),
        ("events", pa.int64()),
        ("quarantined", pa.int64()),
        ("max_occurred_at", pa.timestamp("us", tz="UTC")),
        ("max_kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("max_ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

# ops.bronze_lag: per progress report and Kafka partition, the stream's offsets behind the broker's latest.
LAG_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("batch_id", pa.int64()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("committed_offset", pa.int64()),
        ("latest_offset", pa.int64()),
        ("lag", pa.int64()),
        ("reported_at", pa.timestamp("us", tz="UTC")),
    ]
)

# ops.job_metrics: the history of the figures jobs report (what Prometheus scrapes live), one row per value:
# every bronze micro-batch that read rows, and every job command's run (duration, rows written, gate outcomes).
JOB_METRICS_SCHEMA = pa.schema(
    [
        ("at", pa.timestamp("us", tz="UTC")),
        ("job", pa.string()),  # the command: "bronze run", "silver build", ...
        ("run_id", pa.string()),  # the stream's query id, or the job run's OpenLineage run id
        ("metric", pa.string()),  # e.g. input_rows, duration_seconds, rows_written, gate_rules
        ("labels", pa.string()),  # JSON object, e.g. {"table": "silver.events"}
        ("value", pa.float64()),
    ]
)

# ops.alert_events: one row per notification sent: an incident firing, then resolved (same incident_id).
ALERT_EVENTS_SCHEMA = pa.schema(
    [
        ("at", pa.timestamp("us", tz="UTC")),
        ("incident_id", pa.string()),
        ("key", pa.string()),  # rule and subject: one open incident per key
        ("rule", pa.string()),
        ("severity", pa.string()),
        ("state", pa.string()),  # firing | resolved
        ("subject", pa.string()),
        ("message", pa.string()),
        ("value", pa.float64()),
    ]
)

_SILVER_EVENTS = ("silver.events",)
_SILVER_BUILD = "silver build"

# fmt: off
TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        layer="bronze", name="events", partitioned_by=("tenant_id", "event_date", "event_type"),
        writer="bronze run", pii=RAW_PII, upstream=("kafka",), schema=BRONZE_EVENTS_SCHEMA,
        description="every valid message as Kafka delivered it, duplicates included",
    ),
    TableSpec(
        layer="bronze", name="quarantine", partitioned_by=("ingest_date",),
        writer="bronze run", pii=RAW_PII, upstream=("kafka",), schema=BRONZE_QUARANTINE_SCHEMA,
        description="every message bronze could not accept, raw bytes and every reason",
    ),
    TableSpec(
        layer="ops", name="bronze_progress", partitioned_by=("topic",),
        writer="bronze run", pii=NO_PII, upstream=("bronze.events", "bronze.quarantine"), schema=PROGRESS_SCHEMA,
        description="per micro-batch and Kafka partition: offsets, rows routed, newest event time",
    ),
    TableSpec(
        layer="ops", name="bronze_lag", partitioned_by=("topic",),
        writer="bronze run", pii=NO_PII, upstream=("kafka",), schema=LAG_SCHEMA,
        description="per progress report and Kafka partition: offsets behind the broker's latest",
    ),
    TableSpec(
        layer="ops", name="quality_results", partitioned_by=(),
        writer="silver build, gold build, quality validate", pii=NO_PII, upstream=(),
        description="one row per gate rule and run: outcome, observed value, failing samples",
    ),
    TableSpec(
        layer="ops", name="maintenance_runs", partitioned_by=(),
        writer="maintenance run", pii=NO_PII, upstream=(),
        description="one row per table and maintenance action: files removed and added, rows deleted",
    ),
    TableSpec(
        layer="ops", name="audit_log", partitioned_by=(),
        writer="audit", pii=NO_PII, upstream=(), schema=AUDIT_SCHEMA,
        description="append-only: who replayed, erased, skipped a gate or changed a schema, when, and the outcome",
    ),
    TableSpec(
        layer="ops", name="job_metrics", partitioned_by=(),
        writer="bronze run, every job command", pii=NO_PII, upstream=(), schema=JOB_METRICS_SCHEMA,
        description="history of the jobs' metrics: micro-batch sizes, durations, rates, rows written, gate outcomes",
    ),
    TableSpec(
        layer="ops", name="alert_events", partitioned_by=(),
        writer="alerts check", pii=NO_PII, upstream=(), schema=ALERT_EVENTS_SCHEMA,
        description="every alert notification: an incident firing and its resolve, with rule, subject and value",
    ),
    TableSpec(
        layer="ops", name="erasure_requests", partitioned_by=(),
        writer="erase", pii=NO_PII, upstream=(),
        description="one row per erasure request: tenant, kind of id (never the id), outcome, rows deleted per table",
    ),
    TableSpec(
        layer="silver", name="events", partitioned_by=("tenant_id", "event_date"),
        writer=_SILVER_BUILD, pii=PSEUDONYMIZED, upstream=("bronze.events", "silver.dim_users", "silver.dim_devices"),
        description="deduplicated, upcast, pseudonymized, stitched and sessionized events",
    ),
    TableSpec(
        layer="silver", name="quarantine", partitioned_by=("tenant_id", "event_date"),
        writer=_SILVER_BUILD, pii=PSEUDONYMIZED, upstream=_SILVER_EVENTS,
        description="silver rows a quarantine-action rule held back, with the rule and reason",
    ),
    TableSpec(
        layer="silver", name="dim_users", partitioned_by=("tenant_id",),
        writer="silver build, dimensions load", pii=PSEUDONYMIZED,
        upstream=("bronze.events", "conf/dimensions/users.csv"),
        description="one row per known user: signup date, plan, country",
    ),
    TableSpec(
        layer="silver", name="dim_devices", partitioned_by=(),
        writer=_SILVER_BUILD, pii=PSEUDONYMIZED, upstream=("bronze.events",),
        description="one row per distinct user agent (keyed by its pseudonym): device class, OS, browser",
    ),
    *(
        TableSpec(
            layer="gold", name=name, partitioned_by=("tenant_id", "date"),
            writer="gold build", pii=AGGREGATED, upstream=upstream, description=description,
        )
        for name, upstream, description in (
            ("daily_active_users", _SILVER_EVENTS, "DAU, WAU, MAU and new users per tenant and day"),
            ("event_counts", _SILVER_EVENTS, "events per type, tenant and day"),
            ("sessions", _SILVER_EVENTS, "sessions, duration and bounces per tenant and day"),
            ("funnels", _SILVER_EVENTS, "users reaching each step of the configured funnels"),
            ("revenue", _SILVER_EVENTS, "orders and revenue per currency, tenant and day"),
            ("event_rate_anomalies", ("gold.event_counts",), "event-type volumes far from their trailing median"),
        )
    ),
)
# fmt: on


def table(layer: str, name: str) -> TableSpec:
    """The declaration of ``<layer>.<name>``; a name nobody declared is a programming error."""
    for spec in TABLES:
        if spec.layer == layer and spec.name == name:
            return spec
    raise KeyError(f"{layer}.{name} is not a declared table (pipelines.platform.registry.TABLES)")

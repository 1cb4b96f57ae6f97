"""Where every table lives, and the shape of the bronze tables every later layer reads.

All paths derive from the profile's ``lake.root`` (a local folder or an ``s3://`` URI), so the
same code runs on a laptop and on a cluster. Layout::

    <root>/bronze/events          bronze.events      (tenant_id, event_date, event_type)
    <root>/bronze/quarantine      bronze.quarantine  (ingest_date)
    <root>/ops/bronze_progress    per batch and Kafka partition: offsets, lag, freshness
    <root>/silver/<table>         silver.*
    <root>/gold/<table>           gold.*
    <root>/_checkpoints/<query>   Spark streaming checkpoints (or under lake.checkpoint_root)
"""

from __future__ import annotations

import pyarrow as pa

from pipelines.config import Settings

LAYERS = ("bronze", "silver", "gold", "ops")

# Every table the platform writes, as (layer, name): the catalog registers exactly these.
KNOWN_TABLES = (
    ("bronze", "events"),
    ("bronze", "quarantine"),
    ("ops", "bronze_progress"),
    ("ops", "bronze_lag"),
    ("ops", "quality_results"),
    ("silver", "events"),
    ("silver", "quarantine"),
    ("silver", "dim_users"),
    ("silver", "dim_devices"),
    ("gold", "daily_active_users"),
    ("gold", "event_counts"),
    ("gold", "sessions"),
    ("gold", "funnels"),
    ("gold", "revenue"),
    ("gold", "event_rate_anomalies"),
)

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
BRONZE_EVENTS_PARTITIONS = ["tenant_id", "event_date", "event_type"]

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
BRONZE_QUARANTINE_PARTITIONS = ["ingest_date"]


class Lake:
    """Table and checkpoint locations for one profile."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.lake_root.rstrip("/")
        self.storage_options = settings.lake_storage_options()
        configured = settings.lake.checkpoint_root
        self.checkpoint_root = settings.resolve_path(configured) if configured else f"{self.root}/_checkpoints"

    def table(self, layer: str, name: str) -> str:
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; expected one of {LAYERS}")
        return f"{self.root}/{layer}/{name}"

    def checkpoint(self, query_name: str) -> str:
        return f"{self.checkpoint_root}/{query_name}"

    @property
    def bronze_events(self) -> str:
        return self.table("bronze", "events")

    @property
    def bronze_quarantine(self) -> str:
        return self.table("bronze", "quarantine")

    @property
    def bronze_progress(self) -> str:
        return self.table("ops", "bronze_progress")

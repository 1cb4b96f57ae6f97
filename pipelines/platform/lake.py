"""Where every table lives (the tables themselves are declared in ``pipelines.platform.registry``).

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

from pipelines.config import Settings
from pipelines.platform.registry import LAYERS


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

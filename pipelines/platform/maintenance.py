"""Daily table maintenance (the ``lakehouse_maintenance`` DAG, ``python -m pipelines maintenance run``).

For every declared table the lake holds, in this order:

1. **retention** - rows of days older than the table's retention are deleted (``maintenance.retention_days``
   in the configuration, else the declaration's default; tables without one keep every day). The predicate is
   on the table's date partition column, so Delta drops whole files and rewrites nothing;
2. **compaction** - ``OPTIMIZE`` of the append-heavy tables (bronze and ops: micro-batches leave small files);
   silver and gold are rewritten per partition by their builds and stay compact;
3. **vacuum** - files no version within ``maintenance.vacuum_retention_hours`` needs are deleted (the
   table's own 7 days by default, which keeps time travel and running readers safe).

Delta writes a checkpoint every ``delta.checkpointInterval`` commits (10) on its own, so there is no
checkpoint step. Each action's outcome goes to ``ops.maintenance_runs`` (run id, table, action, files, rows,
seconds), so an on-call engineer sees what the last runs did without reading task logs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from pipelines.config import Settings
from pipelines.platform.batch import table_exists
from pipelines.platform.lake import Lake
from pipelines.platform.registry import TABLES, TableSpec
from pipelines.platform.spark import local_frame
from pipelines.platform.tables import compact, vacuum

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

RUNS_TABLE = ("ops", "maintenance_runs")
RUNS_SCHEMA = (
    "run_id string, table string, action string, files_removed long, files_added long, rows_deleted long, "
    "detail string, seconds double, recorded_at timestamp"
)
COMPACTED_LAYERS = ("bronze", "ops")


@dataclass(frozen=True)
class MaintenanceAction:
    table: str
    action: str  # retention | compaction | vacuum
    files_removed: int
    files_added: int
    rows_deleted: int
    detail: str
    seconds: float


def retention_days(settings: Settings, spec: TableSpec) -> int | None:
    return settings.maintenance.retention_days.get(spec.full_name, spec.retention_days)


def run_maintenance(
    spark: SparkSession, settings: Settings, today: date | None = None, progress=lambda _message: None
) -> list[MaintenanceAction]:
    """Retention, compaction and vacuum of every existing declared table; the actions are recorded and returned."""
    from delta.tables import DeltaTable

    today = today or datetime.now(UTC).date()
    lake = Lake(settings)
    actions: list[MaintenanceAction] = []
    for spec in TABLES:
        path = lake.table(spec.layer, spec.name)
        if not table_exists(settings, path):
            continue
        keep_days = retention_days(settings, spec)
        day_column = spec.day_column
        if keep_days is not None and day_column is not None:
            started = time.monotonic()
            oldest_kept = today - timedelta(days=keep_days - 1)
            table = DeltaTable.forPath(spark, path)
            table.delete(f"{day_column} < DATE'{oldest_kept.isoformat()}'")
            metrics = table.history(1).first()["operationMetrics"] or {}
            actions.append(
                MaintenanceAction(
                    spec.full_name,
                    "retention",
                    int(metrics.get("numRemovedFiles", 0)),
                    int(metrics.get("numAddedFiles", 0)),
                    int(metrics.get("numDeletedRows", 0)),
                    f"kept {keep_days} day(s): {day_column} >= {oldest_kept}",
                    round(time.monotonic() - started, 3),
                )
            )
            progress(f"{spec.full_name}: retention {keep_days} days")
        if spec.layer in COMPACTED_LAYERS:
            started = time.monotonic()
            metrics = compact(spark, path)
            actions.append(
                MaintenanceAction(
                    spec.full_name,
                    "compaction",
                    int(metrics.get("numFilesRemoved", 0)),
                    int(metrics.get("numFilesAdded", 0)),
                    0,
                    "OPTIMIZE",
                    round(time.monotonic() - started, 3),
                )
            )
            progress(f"{spec.full_name}: compacted")
        started = time.monotonic()
        hours = settings.maintenance.vacuum_retention_hours
        deleted = vacuum(spark, path, retention_hours=hours, dry_run=False)
        detail = f"retained {hours} hours" if hours is not None else "retained the table's own retention"
        actions.append(
            MaintenanceAction(
                spec.full_name, "vacuum", len(deleted), 0, 0, detail, round(time.monotonic() - started, 3)
            )
        )
        progress(f"{spec.full_name}: vacuumed")
    record(spark, settings, actions)
    return actions


def record(spark: SparkSession, settings: Settings, actions: list[MaintenanceAction]) -> None:
    """Append the run's actions to ops.maintenance_runs (one commit)."""
    from pipelines.platform.batch import register_table

    if not actions:
        return
    run_id, now = uuid.uuid4().hex, datetime.now(UTC)
    rows = [
        (run_id, a.table, a.action, a.files_removed, a.files_added, a.rows_deleted, a.detail, a.seconds, now)
        for a in actions
    ]
    path = Lake(settings).table(*RUNS_TABLE)
    local_frame(spark, rows, RUNS_SCHEMA).write.format("delta").mode("append").save(path)
    register_table(spark, settings, path)

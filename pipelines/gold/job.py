"""``gold build``: the write-audit-publish job that rewrites every gold table from silver.events, and the
reconciliation frame its gate compares against silver."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from pipelines.config import Settings
from pipelines.contracts.registry import SchemaRegistry
from pipelines.gold.activity import (
    NEW_USER_HISTORY_DAYS,
    ROLLING_DAYS,
    daily_active_users,
    event_counts,
    is_user_event,
    sessions,
)
from pipelines.gold.anomalies import event_rate_anomalies
from pipelines.gold.funnels import funnels, load_funnels
from pipelines.gold.revenue import revenue
from pipelines.platform.batch import (
    BatchJobError,
    check_tenants,
    days_between,
    known_tenants,
    observed,
    partition_predicate,
    read_table,
    replace_partitions,
    table_exists,
)
from pipelines.platform.lake import Lake
from pipelines.platform.registry import TABLES as REGISTERED
from pipelines.platform.registry import table
from pipelines.platform.spark import persist_for_reuse
from pipelines.silver import events_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from pipelines.quality.audit import GateSummary
    from pipelines.quality.gate import GateResult

TABLES = tuple(spec.name for spec in REGISTERED if spec.layer == "gold")
PARTITIONS = table("gold", TABLES[0]).partitioned_by  # every gold table: tenant and day


@dataclass
class GoldResult:
    first: date
    last: date
    tenants: list[str] | None
    days: list[date]
    rows: dict[str, int] = field(default_factory=dict)
    run_id: str = ""
    gates: list[GateSummary] = field(default_factory=list)
    docs_index: str | None = None  # GX Data Docs of the run's gates
    seconds: float = 0.0


def table_path(settings: Settings, name: str) -> str:
    return Lake(settings).table("gold", name)


def build(
    spark: SparkSession,
    settings: Settings,
    first: date,
    last: date,
    tenants: Sequence[str] | None = None,
    *,
    lookback: bool = True,
    skip_gates: bool = False,
    progress: Callable[[str], None] | None = None,
) -> GoldResult:
    """Rewrite every gold table for [first - lookback, last] and ``tenants`` (None: all), one commit per table.

    Write-audit-publish: every table's candidate rows are computed and audited first (pipelines.quality.audit);
    only when all gates pass are the tables published. So a failed gate publishes none of them - every gold
    table stays at its Delta version. Publishing is one commit per table (Delta has no multi-table commit): a
    crash between two commits leaves the earlier tables at the new version, and rerunning the build (it is
    idempotent) completes the set.
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from pipelines.quality.audit import JobGates, release

    say = progress or (lambda _message: None)
    started = time.monotonic()
    registry = SchemaRegistry.load(settings.schemas_dir)
    configured = load_funnels(settings.resolve_path(settings.gold.funnels), registry.event_types)
    if not table_exists(settings, events_path(settings)):
        raise BatchJobError(f"no silver table at {events_path(settings)}; run silver build first")
    tenant_list = check_tenants(tenants, known_tenants(settings, events_path(settings)), "silver.events")
    lookback_days = settings.gold.late_lookback_days if lookback else 0
    days = days_between(first - timedelta(days=lookback_days), last)
    behind = max(NEW_USER_HISTORY_DAYS, *ROLLING_DAYS, settings.gold.anomaly_window_days)
    ahead = max(1, math.ceil(max(f.window_minutes for f in configured) / 1440)) if configured else 1
    input_days = days_between(days[0] - timedelta(days=behind), last + timedelta(days=ahead))
    result = GoldResult(first, last, tenant_list, days)
    say(f"gold: rewriting {days[0]}..{days[-1]} from silver {input_days[0]}..{input_days[-1]}")

    wanted = [
        "event_type",
        "occurred_at",
        "event_date",
        "tenant_id",
        "user_key",
        "session_id",
        "session_is_derived",
        "amount",
        "discount_amount",
        "currency",
    ]
    silver = persist_for_reuse(  # only the columns gold needs are read
        read_table(
            spark, settings, events_path(settings), partition_predicate(tenant_list, "event_date", input_days), wanted
        )
    )
    try:
        builders: dict[str, Callable[[], DataFrame]] = {
            "daily_active_users": lambda: daily_active_users(silver, days),
            "event_counts": lambda: event_counts(silver, days),
            "sessions": lambda: sessions(silver, days),
            "funnels": lambda: funnels(silver, days, configured),
            "revenue": lambda: revenue(silver, days),
            "event_rate_anomalies": lambda: event_rate_anomalies(
                silver, days, settings.gold.anomaly_window_days, settings.gold.anomaly_threshold
            ),
        }
        predicate = partition_predicate(tenant_list, "date", days)
        gates = JobGates(spark, settings, "gold", skip=skip_gates)
        result.run_id = gates.run_id
        names = [name for name in TABLES if name != "funnels" or configured]
        observations = {name: Observation(f"gold_{name}") for name in names}
        candidates = {
            name: builders[name]().observe(observations[name], F.count(F.lit(1)).alias("rows")) for name in names
        }
        audited: dict[str, GateResult | None] = {}
        try:
            for name in names:  # audit every candidate before publishing any
                say(f"quality gate: gold.{name}" + (" (skipped)" if skip_gates else ""))
                audited[name] = gates.audit(f"gold.{name}", candidates[name], aggregate=True)
            say("quality gate: gold.reconciliation (gold vs silver)" + (" (skipped)" if skip_gates else ""))
            publishable = {  # the audited copies (collected by their gates), read again rather than recomputed
                name: candidates[name] if gate is None else gate.passing for name, gate in audited.items()
            }
            audited["reconciliation"] = gates.audit(
                "gold.reconciliation",
                reconciliation(silver, days, publishable["event_counts"], publishable["daily_active_users"]),
                aggregate=True,
            )
            gates.raise_if_any_failed(list(audited.values()))
            for name in names:
                replace_partitions(
                    publishable[name],
                    settings,
                    table_path(settings, name),
                    predicate,
                    PARTITIONS,
                    f"gold build {first}..{last} (run {gates.run_id})",
                )
                metrics: dict[str, Any] = observed(observations[name])
                result.rows[name] = int(metrics.get("rows") or 0)
                say(f"gold.{name}: {result.rows[name]} rows")
        finally:
            gates.record()  # the audits done when a later one raised
            release(list(audited.values()))
            result.gates = gates.summaries
            result.docs_index = None if skip_gates else str(gates.docs_index)
    finally:
        silver.unpersist()
    result.seconds = round(time.monotonic() - started, 2)
    return result


def reconciliation(silver: DataFrame, days: Sequence[date], counts: DataFrame, active: DataFrame) -> DataFrame:
    """Per (tenant_id, date) of ``days``: silver's rows and user events next to the event_counts candidate's
    total and the daily_active_users candidate's dau (the gold.reconciliation suite compares them)."""
    from pyspark.sql import functions as F

    keys = ["tenant_id", "date"]
    per_day = (
        silver.filter(F.col("event_date").isin(list(days)))
        .groupBy("tenant_id", F.col("event_date").alias("date"))
        .agg(
            F.count(F.lit(1)).alias("silver_events"),
            F.sum(is_user_event().cast("long")).alias("silver_user_events"),
        )
    )
    counted = counts.groupBy(*keys).agg(F.sum("events").alias("gold_events"))
    return (
        per_day.join(counted, keys, "full_outer")
        .join(active.select(*keys, "dau"), keys, "left")
        .fillna(0, ["silver_events", "silver_user_events", "gold_events"])
    )

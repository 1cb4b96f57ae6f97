"""``gold build``: silver.events -> the gold tables, each partitioned by (tenant_id, date).

Definitions (users are ``user_key`` after stitching; machine events - ``system_alert`` - are not users):

daily_active_users
    dau = distinct users active on the day; wau = distinct users over the 7 days ending on it; mau = over
    the 28 days ending on it (28, not 30: four whole weeks, so weekday mix does not wobble the metric).
    new_users = active on the day and not in the 28 days before it; returning_users = dau - new_users.
    One row per tenant and day with mau > 0.
event_counts
    events per tenant, day and event_type (after dedup), and the distinct users behind them (0 for machine
    event types).
sessions
    Sessions (tenant_id, session_id) are dated by their first event. duration = last - first event, in
    seconds; bounce = a single-event session; median is exact (interpolated between the middle two).
funnels (``conf/funnels.yaml``: name, ordered event-type steps, window_minutes)
    An attempt starts at any step-1 event; it reaches step k when events of steps 2..k follow in order
    (each at or after the previous step's time, earliest match taken) within window_minutes of the start.
    Per tenant, day of the start and step: users whose best attempt that day reached the step, their share
    of step-1 users (conversion_from_start) and of the previous step's (conversion_from_previous; null when
    nobody reached the previous step).
revenue
    Per tenant, day and currency: orders (order_completed events), revenue = sum of ``amount`` (what was
    charged: net of discount), discounts = sum of discount_amount, gross_revenue = revenue + discounts,
    average_order_value = revenue / orders (rounded half-up to cents). Exact decimals.
event_rate_anomalies
    Per tenant, event_type and day: the day's count against the previous ``gold.anomaly_window_days`` days on
    which the tenant had any events (a missing type on such a day counts 0). score = robust z =
    (count - median) / (1.4826 * MAD), or / (1.2533 * mean absolute deviation) when MAD is 0; null when fewer
    than max(3, window / 2) baseline days exist or both deviations are 0. flagged when |score| >=
    ``gold.anomaly_threshold``, or when the baseline is constant and the day differs from it; direction up /
    down / none against the median.

Late data and rolling windows
    A run for [D1, D2] rewrites the days [D1 - gold.late_lookback_days, D2]: every silver day a late event
    can have changed within the lookback, and the rolling metrics that depend on it inside the range. It
    reads silver [D1 - lookback - max(28, anomaly window), D2 + funnel lookahead] as INPUT only (rolling
    windows, new-user history, baselines, sessions and funnel attempts running past midnight); it never
    writes outside the rewritten days. Older changes need a replay of their range.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipelines.config import Settings
from pipelines.contracts.schemas import SchemaRegistry
from pipelines.platform.batch import (
    BatchJobError,
    check_tenants,
    days_between,
    known_tenants,
    partition_predicate,
    read_table,
    replace_partitions,
    table_exists,
)
from pipelines.platform.lake import Lake
from pipelines.silver import MACHINE_EVENT_TYPES, events_path

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from pipelines.quality.audit import GateSummary
    from pipelines.quality.gate import GateResult

PARTITIONS = ("tenant_id", "date")
TABLES = ("daily_active_users", "event_counts", "sessions", "funnels", "revenue", "event_rate_anomalies")
ROLLING_DAYS = (7, 28)  # wau, mau
NEW_USER_HISTORY_DAYS = 28
MAX_FUNNEL_WINDOW_MINUTES = 7 * 24 * 60
MAD_TO_SIGMA = 1.4826
MEAN_AD_TO_SIGMA = 1.253314


class FunnelConfigError(ValueError):
    """conf/funnels.yaml is invalid; the message names the file, funnel and key."""


@dataclass(frozen=True)
class Funnel:
    name: str
    steps: tuple[str, ...]
    window_minutes: int


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


def load_funnels(path: str | Path, event_types: Collection[str] | None = None) -> list[Funnel]:
    """The funnels of ``path``; with ``event_types`` (the registry's), a step that is not one is an error."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FunnelConfigError(f"funnels file not found: {source} (gold.funnels)") from None
    except yaml.YAMLError as exc:
        raise FunnelConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("funnels"), list):
        raise FunnelConfigError(f"{source}: expected a mapping with a 'funnels' list")
    funnels: list[Funnel] = []
    for index, item in enumerate(raw["funnels"]):
        where = f"{source}: funnels[{index}]"
        if not isinstance(item, dict) or set(item) != {"name", "steps", "window_minutes"}:
            raise FunnelConfigError(f"{where}: expected exactly the keys name, steps, window_minutes")
        name, steps, window = item["name"], item["steps"], item["window_minutes"]
        if not isinstance(name, str) or not name or any(f.name == name for f in funnels):
            raise FunnelConfigError(f"{where}.name: must be a non-empty, unique string, got {name!r}")
        if not isinstance(steps, list) or len(steps) < 2 or not all(isinstance(s, str) and s for s in steps):
            raise FunnelConfigError(f"{where}.steps: needs at least two event types, got {steps!r}")
        if len(set(steps)) != len(steps):
            raise FunnelConfigError(f"{where}.steps: an event type may appear once, got {steps!r}")
        unknown = [step for step in steps if event_types is not None and step not in event_types]
        if unknown:
            known = ", ".join(sorted(event_types or ()))
            raise FunnelConfigError(f"{where}.steps: {', '.join(unknown)} not a registered event type; known: {known}")
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_FUNNEL_WINDOW_MINUTES:
            raise FunnelConfigError(f"{where}.window_minutes: must be 1..{MAX_FUNNEL_WINDOW_MINUTES}, got {window!r}")
        funnels.append(Funnel(name, tuple(steps), window))
    return funnels


def _is_user_event() -> Column:
    from pyspark.sql import functions as F

    return ~F.col("event_type").isin(*MACHINE_EVENT_TYPES)


def daily_active_users(silver: DataFrame, days: Sequence[date]) -> DataFrame:
    from pyspark.sql import functions as F

    history = max(NEW_USER_HISTORY_DAYS, *ROLLING_DAYS)
    active = silver.filter(_is_user_event()).select("tenant_id", "user_key", "event_date").distinct()
    expanded = (
        active.withColumn("k", F.explode(F.sequence(F.lit(0), F.lit(history))))
        .withColumn("date", F.date_add("event_date", F.col("k").cast("int")))
        .filter(F.col("date").isin(list(days)))
    )
    per_user = expanded.groupBy("tenant_id", "date", "user_key").agg(
        F.max((F.col("k") == 0).cast("long")).alias("today"),
        F.max((F.col("k") < ROLLING_DAYS[0]).cast("long")).alias("week"),
        F.max((F.col("k") < ROLLING_DAYS[1]).cast("long")).alias("month"),
        F.max(((F.col("k") >= 1) & (F.col("k") <= NEW_USER_HISTORY_DAYS)).cast("long")).alias("seen_before"),
    )
    return (
        per_user.groupBy("tenant_id", "date")
        .agg(
            F.sum("today").alias("dau"),
            F.sum("week").alias("wau"),
            F.sum("month").alias("mau"),
            F.sum(F.col("today") * (1 - F.col("seen_before"))).alias("new_users"),
        )
        .withColumn("returning_users", F.col("dau") - F.col("new_users"))
        .filter("mau > 0")
        .select("tenant_id", "date", "dau", "wau", "mau", "new_users", "returning_users")
    )


def event_counts(silver: DataFrame, days: Sequence[date]) -> DataFrame:
    from pyspark.sql import functions as F

    return (
        silver.filter(F.col("event_date").isin(list(days)))
        .groupBy("tenant_id", F.col("event_date").alias("date"), "event_type")
        .agg(
            F.count(F.lit(1)).alias("events"),
            F.count_distinct(F.when(_is_user_event(), F.col("user_key"))).alias("users"),
        )
    )


def sessions(silver: DataFrame, days: Sequence[date]) -> DataFrame:
    from pyspark.sql import functions as F

    per_session = (
        silver.filter(F.col("session_id").isNotNull())
        .groupBy("tenant_id", "session_id")
        .agg(
            F.min("event_date").alias("date"),
            F.min("occurred_at").alias("started"),
            F.max("occurred_at").alias("ended"),
            F.count(F.lit(1)).alias("events"),
            F.min(F.col("session_is_derived").cast("long")).alias("derived"),  # no event carried an id
        )
        .filter(F.col("date").isin(list(days)))
        .withColumn("duration", (F.unix_micros("ended") - F.unix_micros("started")) / 1_000_000)
    )
    return per_session.groupBy("tenant_id", "date").agg(
        F.count(F.lit(1)).alias("sessions"),
        F.sum((F.col("events") == 1).cast("long")).alias("bounced_sessions"),
        F.round(F.avg((F.col("events") == 1).cast("double")), 4).alias("bounce_rate"),
        F.round(F.avg("duration"), 3).alias("avg_duration_seconds"),
        F.round(F.percentile(F.col("duration"), F.lit(0.5)), 3).alias("median_duration_seconds"),
        F.round(F.avg("events"), 3).alias("avg_events_per_session"),
        F.sum("derived").alias("derived_sessions"),
    )


def funnel_steps(silver: DataFrame, days: Sequence[date], funnel: Funnel) -> DataFrame:
    """Users per step for one funnel: greedy earliest matching, which finds the deepest chain of each attempt."""
    from pyspark.sql import functions as F

    step_events = silver.filter(_is_user_event() & F.col("event_type").isin(*funnel.steps)).select(
        "tenant_id", "user_key", "event_type", "occurred_at", "event_date"
    )
    attempts = step_events.filter(
        (F.col("event_type") == funnel.steps[0]) & F.col("event_date").isin(list(days))
    ).select("tenant_id", "user_key", F.col("event_date").alias("date"), F.col("occurred_at").alias("t1"))
    deadline = F.col("t1") + F.expr(f"INTERVAL {funnel.window_minutes} MINUTES")
    keys = ["tenant_id", "user_key", "date", "t1"]
    for k in range(2, len(funnel.steps) + 1):
        candidates = step_events.filter(F.col("event_type") == funnel.steps[k - 1]).select(
            F.col("tenant_id").alias("c_tenant"), F.col("user_key").alias("c_user"), F.col("occurred_at").alias("c_t")
        )
        condition = (
            (F.col("tenant_id") == F.col("c_tenant"))
            & (F.col("user_key") == F.col("c_user"))
            & (F.col("c_t") >= F.col(f"t{k - 1}"))
            & (F.col("c_t") <= deadline)
        )
        attempts = attempts.join(candidates, condition, "left").groupBy(*keys).agg(F.min("c_t").alias(f"t{k}"))
        keys.append(f"t{k}")
    level = sum((F.col(f"t{k}").isNotNull().cast("int") for k in range(1, len(funnel.steps) + 1)), F.lit(0))
    best = attempts.groupBy("tenant_id", "user_key", "date").agg(F.max(level).alias("level"))
    counted = best.groupBy("tenant_id", "date").agg(
        *[F.sum((F.col("level") >= k).cast("long")).alias(f"u{k}") for k in range(1, len(funnel.steps) + 1)]
    )
    rows = F.explode(
        F.array(
            *[
                F.struct(
                    F.lit(k).alias("step_index"),
                    F.lit(step).alias("step"),
                    F.col(f"u{k}").alias("users"),
                    F.round(F.col(f"u{k}") / F.col("u1"), 4).alias("conversion_from_start"),
                    F.round(F.try_divide(F.col(f"u{k}"), F.col(f"u{max(k - 1, 1)}")), 4).alias(
                        "conversion_from_previous"  # null when nobody reached the previous step
                    ),
                )
                for k, step in enumerate(funnel.steps, start=1)
            ]
        )
    )
    return counted.select("tenant_id", "date", F.lit(funnel.name).alias("funnel"), rows.alias("s")).select(
        "tenant_id",
        "date",
        "funnel",
        "s.step_index",
        "s.step",
        "s.users",
        "s.conversion_from_start",
        "s.conversion_from_previous",
    )


def funnels(silver: DataFrame, days: Sequence[date], configured: Sequence[Funnel]) -> DataFrame:
    from functools import reduce

    return reduce(lambda a, b: a.unionByName(b), [funnel_steps(silver, days, f) for f in configured])


def revenue(silver: DataFrame, days: Sequence[date]) -> DataFrame:
    from pyspark.sql import functions as F

    money = "decimal(18,2)"
    return (
        silver.filter((F.col("event_type") == "order_completed") & F.col("event_date").isin(list(days)))
        .groupBy("tenant_id", F.col("event_date").alias("date"), "currency")
        .agg(
            F.count(F.lit(1)).alias("orders"),
            F.sum(F.col("amount").cast(money)).cast(money).alias("revenue"),
            F.sum(F.coalesce(F.col("discount_amount"), F.lit(0.0)).cast(money)).cast(money).alias("discounts"),
        )
        .withColumn("gross_revenue", (F.col("revenue") + F.col("discounts")).cast(money))
        .withColumn("average_order_value", (F.col("revenue") / F.col("orders")).cast(money))
    )


def _median(sorted_values: Column) -> Column:
    from pyspark.sql import functions as F

    n = F.size(sorted_values)
    low = F.element_at(sorted_values, F.floor((n + 1) / 2).cast("int"))
    high = F.element_at(sorted_values, F.ceil((n + 1) / 2).cast("int"))
    return F.when(n > 0, (low + high) / 2.0)


def event_rate_anomalies(silver: DataFrame, days: Sequence[date], window_days: int, threshold: float) -> DataFrame:
    from pyspark.sql import functions as F

    counts = silver.groupBy("tenant_id", F.col("event_date").alias("date"), "event_type").agg(
        F.count(F.lit(1)).cast("double").alias("events")
    )
    tenant_days = silver.select("tenant_id", F.col("event_date").alias("date")).distinct()
    types = counts.select("tenant_id", "event_type").distinct()
    grid = (
        tenant_days.join(types, "tenant_id")
        .join(counts, ["tenant_id", "date", "event_type"], "left")
        .fillna(0.0, subset=["events"])
    )
    baseline = grid.select(
        F.col("tenant_id").alias("b_tenant"),
        F.col("event_type").alias("b_type"),
        F.col("date").alias("b_date"),
        F.col("events").alias("b_events"),
    )
    targets = grid.filter(F.col("date").isin(list(days)))
    condition = (
        (F.col("tenant_id") == F.col("b_tenant"))
        & (F.col("event_type") == F.col("b_type"))
        & (F.col("b_date") >= F.date_sub("date", window_days))
        & (F.col("b_date") < F.col("date"))
    )
    history = (
        targets.join(baseline, condition, "left")
        .groupBy("tenant_id", "date", "event_type", "events")
        .agg(F.array_sort(F.collect_list("b_events")).alias("history"))
    )
    n = F.size("history")
    median = _median(F.col("history"))
    history = history.withColumn("baseline_median", median)
    deviations = F.array_sort(F.transform("history", lambda x: F.abs(x - F.col("baseline_median"))))
    mean_ad = F.try_divide(
        F.aggregate("history", F.lit(0.0), lambda acc, x: acc + F.abs(x - F.col("baseline_median"))), n
    )
    history = history.withColumn("baseline_mad", _median(deviations)).withColumn("_mean_ad", mean_ad)
    scale = F.when(F.col("baseline_mad") > 0, F.col("baseline_mad") * MAD_TO_SIGMA).when(
        F.col("_mean_ad") > 0, F.col("_mean_ad") * MEAN_AD_TO_SIGMA
    )
    enough = n >= max(3, window_days // 2)
    score = F.when(enough, F.round((F.col("events") - F.col("baseline_median")) / scale, 4))
    constant_break = enough & scale.isNull() & (F.col("events") != F.col("baseline_median"))
    return (
        history.filter((F.col("events") > 0) | (F.aggregate("history", F.lit(0.0), lambda a, x: a + x) > 0))
        .withColumn("score", score)
        .select(
            "tenant_id",
            "date",
            "event_type",
            F.col("events").cast("long").alias("events"),
            n.alias("baseline_days"),
            "baseline_median",
            "baseline_mad",
            "score",
            F.when(F.col("events") > F.col("baseline_median"), "up")
            .when(F.col("events") < F.col("baseline_median"), "down")
            .when(F.col("baseline_median").isNotNull(), "none")
            .alias("direction"),
            (
                F.coalesce(F.abs(F.col("score")) >= threshold, F.lit(False)) | F.coalesce(constant_break, F.lit(False))
            ).alias("flagged"),
        )
    )


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
    from pyspark import StorageLevel
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from pipelines.quality.audit import JobGates, raise_if_any_failed, release

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
    silver = read_table(
        spark, settings, events_path(settings), partition_predicate(tenant_list, "event_date", input_days), wanted
    ).persist(StorageLevel.MEMORY_AND_DISK)  # only the columns gold needs are read
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
        observed = {name: Observation(f"gold_{name}") for name in names}
        candidates = {name: builders[name]().observe(observed[name], F.count(F.lit(1)).alias("rows")) for name in names}
        audited: dict[str, GateResult | None] = {}
        try:
            for name in names:  # audit every candidate before publishing any
                say(f"quality gate: gold.{name}" + (" (skipped)" if skip_gates else ""))
                audited[name] = gates.audit(f"gold.{name}", candidates[name])
            say("quality gate: gold.reconciliation (gold vs silver)" + (" (skipped)" if skip_gates else ""))
            audited["reconciliation"] = gates.audit(
                "gold.reconciliation",
                reconciliation(silver, days, candidates["event_counts"], candidates["daily_active_users"]),
            )
            raise_if_any_failed(list(audited.values()))
            for name in names:
                gate = audited[name]
                replace_partitions(
                    candidates[name] if gate is None else gate.passing,
                    settings,
                    table_path(settings, name),
                    predicate,
                    PARTITIONS,
                    f"gold build {first}..{last} (run {gates.run_id})",
                )
                metrics: dict[str, Any] = observed[name].get
                result.rows[name] = int(metrics.get("rows") or 0)
                say(f"gold.{name}: {result.rows[name]} rows")
        finally:
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
            F.sum(_is_user_event().cast("long")).alias("silver_user_events"),
        )
    )
    counted = counts.groupBy(*keys).agg(F.sum("events").alias("gold_events"))
    return (
        per_day.join(counted, keys, "full_outer")
        .join(active.select(*keys, "dau"), keys, "left")
        .fillna(0, ["silver_events", "silver_user_events", "gold_events"])
    )


@dataclass
class GoldSummary:
    """What the main job prints: per tenant and day DAU and revenue, and each funnel's conversion."""

    dau: dict[tuple[str, date], int]
    revenue: dict[tuple[str, date], dict[str, float]]  # currency -> revenue
    orders: dict[tuple[str, date], int]
    funnel_conversion: dict[tuple[str, str], float]  # (tenant, funnel) -> last step users / first step users


def summary(spark: SparkSession, settings: Settings, first: date, last: date) -> GoldSummary:
    """Read the published gold tables for [first, last] (small aggregates: one row per tenant, day, ...)."""
    from pyspark.sql import functions as F

    def rows(name: str, columns: str) -> list[Any]:
        path = table_path(settings, name)
        if not table_exists(settings, path):
            return []
        where = f"date BETWEEN DATE '{first}' AND DATE '{last}'"
        return spark.read.format("delta").load(path).where(where).selectExpr(*columns.split(",")).collect()

    dau = {(r.tenant_id, r.date): r.dau for r in rows("daily_active_users", "tenant_id,date,dau")}
    revenue: dict[tuple[str, date], dict[str, float]] = {}
    orders: dict[tuple[str, date], int] = {}
    for r in rows("revenue", "tenant_id,date,currency,cast(revenue as double) revenue,orders"):
        revenue.setdefault((r.tenant_id, r.date), {})[r.currency] = r.revenue
        orders[(r.tenant_id, r.date)] = orders.get((r.tenant_id, r.date), 0) + r.orders
    conversion: dict[tuple[str, str], float] = {}
    path = table_path(settings, "funnels")
    if table_exists(settings, path):
        steps = (
            spark.read.format("delta")
            .load(path)
            .where(f"date BETWEEN DATE '{first}' AND DATE '{last}'")
            .groupBy("tenant_id", "funnel", "step_index")
            .agg(F.sum("users").alias("users"))
            .collect()
        )
        by_funnel: dict[tuple[str, str], dict[int, int]] = {}
        for r in steps:
            by_funnel.setdefault((r.tenant_id, r.funnel), {})[r.step_index] = r.users
        for key, users in by_funnel.items():
            started = users.get(1, 0)
            conversion[key] = round(users[max(users)] / started, 4) if started else 0.0
    return GoldSummary(dau, revenue, orders, conversion)

"""``silver build``: the write-audit-publish job that rebuilds silver.events partitions from bronze.

Also the days a run must rebuild beyond its range (late data, re-stitching), the frames its gates audit beside
the candidates (bronze quarantine rate, bronze-vs-silver reconciliation) and the quarantine it publishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

from pipelines.config import Settings
from pipelines.contracts.registry import SchemaRegistry
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
from pipelines.platform.spark import local_frame, persist_for_reuse
from pipelines.silver.dedup import later_copies
from pipelines.silver.dimensions import (
    identity_map,
    load_users,
    read_devices,
    read_users,
    refresh_devices,
    signup_events,
)
from pipelines.silver.model import (
    BRONZE_INPUT_COLUMNS,
    BRONZE_KEY_COLUMNS,
    PARTITIONS,
    events_path,
    quarantine_path,
)
from pipelines.silver.pii import SparkPseudonymizer, hmac_key, load_pii_rules
from pipelines.silver.transform import transform

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from pipelines.quality.audit import GateSummary
    from pipelines.quality.gate import GateResult


@dataclass
class SilverResult:
    """What a run did; printed by the CLI and returned to callers (Airflow tasks log it)."""

    first: date
    last: date
    tenants: list[str] | None
    days: list[date]
    late_days: list[date]
    restitched_days: list[date] = field(default_factory=list)
    bronze_rows: int = 0
    events: int = 0
    duplicates_dropped: int = 0
    identified_events: int = 0
    stitched_events: int = 0
    derived_session_events: int = 0
    unmatched_user_events: int = 0
    unknown_device_events: int = 0
    unclassified_values_dropped: int = 0  # property values without a PII classification (default deny)
    new_user_agents: int = 0
    users_dimension_rows: int = 0
    tenants_without_events: list[str] = field(default_factory=list)
    quarantined_rows: int = 0  # candidates a quarantine rule sent to silver/quarantine
    run_id: str = ""
    gates: list[GateSummary] = field(default_factory=list)
    docs_index: str | None = None  # GX Data Docs of the run's gates
    seconds: float = 0.0
    metrics: dict[str, int] = field(default_factory=dict)


def late_days(spark: SparkSession, settings: Settings, first: date, tenants: Sequence[str] | None) -> list[date]:
    """Days before ``first`` (within the lookback) holding bronze rows ingested at or after ``first``."""
    lookback = settings.gold.late_lookback_days
    if lookback == 0 or not table_exists(settings, Lake(settings).bronze_events):
        return []
    window = days_between(first - timedelta(days=lookback), first - timedelta(days=1))
    condition = f"{partition_predicate(tenants, 'event_date', window)} AND ingested_at >= TIMESTAMP '{first}'"
    bronze = read_table(spark, settings, Lake(settings).bronze_events, condition, columns=["event_date", "ingested_at"])
    rows = bronze.select("event_date").distinct()
    return sorted(row.event_date for row in rows.collect())


def restitch_days(
    spark: SparkSession,
    settings: Settings,
    first: date,
    last: date,
    identities: DataFrame,
    tenants: Sequence[str] | None,
) -> list[date]:
    """Days before ``first`` (within the lookback) with anonymous events of visitors who signed up in [first, last].

    ``identities``: the identity map (:func:`pipelines.silver.dimensions.identity_map`)."""
    from pyspark.sql import functions as F

    lookback = settings.gold.late_lookback_days
    if lookback == 0:
        return []
    visitors = identities.where(F.to_date("signed_up_at").between(F.lit(first), F.lit(last))).select(
        "tenant_id", "anonymous_id"
    )
    window = days_between(first - timedelta(days=lookback), first - timedelta(days=1))
    columns = ["tenant_id", "anonymous_id", "user_id", "event_date"]
    bronze = read_table(
        spark, settings, Lake(settings).bronze_events, partition_predicate(tenants, "event_date", window), columns
    )
    rows = (
        bronze.filter(F.col("user_id").isNull())
        .join(visitors, ["tenant_id", "anonymous_id"], "left_semi")
        .select("event_date")
        .distinct()
    )
    return sorted(row.event_date for row in rows.collect())


def build(
    spark: SparkSession,
    settings: Settings,
    first: date,
    last: date,
    tenants: Sequence[str] | None = None,
    *,
    include_late: bool = True,
    skip_gates: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SilverResult:
    """Rebuild silver.events for [first, last] (+ late days) and ``tenants`` (None: all) in one commit.

    Write-audit-publish (pipelines.quality.audit): the bronze input of the build days is audited first (a
    failure stops the run before anything is written), then the candidate rows; only when both gates pass are
    the partitions replaced (rows a ``quarantine`` rule rejects go to ``silver/quarantine`` instead). A failed
    gate raises ``GateFailed`` and leaves silver.events at its Delta version. The users and devices dimensions
    are refreshed before the candidate gate: they are rebuilt from their sources on every run. The audited copy
    of the bronze input stays persisted until the candidates are reconciled: dedup reads the build days' keys
    from it, and the reconciliation counts it, so auditing costs no second read of those bronze files.
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from pipelines.quality.audit import JobGates, release

    observed_input, observed_output = Observation("silver_input"), Observation("silver_output")
    say = progress or (lambda _message: None)
    started = time.monotonic()
    key = hmac_key(settings)  # first: outside the local profile a missing key stops the run before any work
    rules = load_pii_rules(settings.resolve_path(settings.silver.pii_rules))
    registry = SchemaRegistry.load(settings.schemas_dir)
    lake = Lake(settings)
    if not table_exists(settings, lake.bronze_events):
        raise BatchJobError(f"no bronze table at {lake.bronze_events}; run bronze ingestion first")
    tenant_list = check_tenants(tenants, known_tenants(settings, lake.bronze_events), "bronze.events")
    days = days_between(first, last)
    say("dimensions: users (file + signup events), identity map")
    signups = signup_events(spark, settings, tenant_list)
    if signups is None:
        raise BatchJobError(f"no bronze table at {lake.bronze_events}; run bronze ingestion first")
    signups = signups.persist()  # read by the users dimension, the identity map and the re-stitching check
    identities = identity_map(spark, signups)
    late = late_days(spark, settings, first, tenant_list) if include_late else []
    restitched = restitch_days(spark, settings, first, last, identities, tenant_list) if include_late else []
    build_days = sorted(set(days) | set(late) | set(restitched))
    result = SilverResult(first, last, tenant_list, build_days, late, restitched)
    if late:
        say(f"late events found: also rebuilding {', '.join(map(str, late))}")
    if restitched:
        say(f"new signups with earlier anonymous events: also rebuilding {', '.join(map(str, restitched))}")
    predicate = partition_predicate(tenant_list, "event_date", build_days)  # read filter and replaceWhere
    gates = JobGates(spark, settings, "silver", skip=skip_gates)
    result.run_id = gates.run_id
    bronze_gate: GateResult | None = None
    rate_gate: GateResult | None = None
    audited: GateResult | None = None
    reconciled: GateResult | None = None
    copies_to_drop: DataFrame | None = None
    events: DataFrame | None = None
    try:
        say("quality gate: bronze input of the build days" + (" (skipped)" if skip_gates else ""))
        bronze_input = read_table(
            spark,
            settings,
            lake.bronze_events,
            predicate,
            columns=[*BRONZE_KEY_COLUMNS, "event_type", "version", "occurred_at", "ingested_at", "event_date"],
        )
        bronze_gate = gates.audit("bronze.events", bronze_input)
        rate_gate = gates.audit("bronze.quarantine_rate", quarantine_rate(spark, settings, build_days), aggregate=True)
        gates.raise_if_any_failed([bronze_gate, rate_gate], more_gates=True)
        if bronze_gate is not None:  # the audited copy (persisted by the gate): dedup's keys and the reconciliation
            bronze_input = bronze_gate.passing
        users = load_users(spark, settings, key, tenant_list, signups)
        result.users_dimension_rows, result.tenants_without_events = users.rows, users.tenants_without_events
        signups_map = identities.drop("signed_up_at")
        context_days = sorted(set(build_days) | {day - timedelta(days=1) for day in build_days})
        bronze_filter = partition_predicate(tenant_list, "event_date", context_days)

        say("dimensions: devices (new user agents)")
        agents = read_table(
            spark,
            settings,
            lake.bronze_events,
            predicate,
            columns=["context"],
        )
        result.new_user_agents = refresh_devices(
            spark, settings, agents.select(F.get_json_object("context", "$.user_agent")), key
        )

        say(f"silver.events: {len(build_days)} day(s) from bronze")
        bronze = read_table(spark, settings, lake.bronze_events, bronze_filter, columns=BRONZE_INPUT_COLUMNS)
        bronze = bronze.observe(
            observed_input, F.sum(F.col("event_date").isin(build_days).cast("long")).alias("bronze_rows")
        )
        horizon = settings.silver.dedup_horizon_days
        horizon_days = days_between(context_days[0] - timedelta(days=horizon), build_days[-1] + timedelta(days=horizon))
        key_columns = [*BRONZE_KEY_COLUMNS, "occurred_at", "ingested_at"]
        keys = bronze_input.select(*key_columns)  # the build days: the gate's copy when audited
        other_days = sorted(set(horizon_days) - set(build_days))
        if other_days:
            rest = partition_predicate(tenant_list, "event_date", other_days)
            keys = keys.unionByName(read_table(spark, settings, lake.bronze_events, rest, columns=key_columns))
        copies_to_drop = later_copies(keys, horizon)
        if not skip_gates:  # the duplicates' coordinates (few rows): computed once for the build and its reconciliation
            copies_to_drop = copies_to_drop.persist()
        events = transform(
            bronze,
            copies_to_drop,
            build_days,
            signups_map,
            read_users(spark, settings, tenant_list),
            read_devices(spark, settings),
            SparkPseudonymizer(spark, key),
            rules,
            registry,
            settings.silver.session_timeout_minutes,
        )
        events = events.observe(
            observed_output,
            F.count(F.lit(1)).alias("events"),
            F.sum(F.col("is_identified").cast("long")).alias("identified_events"),
            F.sum(F.col("_stitched").cast("long")).alias("stitched_events"),
            F.sum((F.col("session_is_derived") & F.col("session_id").isNotNull()).cast("long")).alias(
                "derived_session_events"
            ),
            F.sum((F.col("is_identified") & F.col("_user_matched").isNull()).cast("long")).alias(
                "unmatched_user_events"
            ),
            F.sum(F.col("device_class").isNull().cast("long")).alias("unknown_device_events"),
            F.sum("_unclassified_values").alias("unclassified_values_dropped"),
        ).drop("_stitched", "_user_matched", "_device_known", "_unclassified_values")
        if not skip_gates:
            events = persist_for_reuse(events)  # audited twice (suite, reconciliation), then written
        say("quality gate: silver.events candidates" + (" (skipped)" if skip_gates else ""))
        audited = gates.audit("silver.events", events, allow_quarantine=True)
        reconciled = gates.audit(
            "silver.reconciliation", reconciliation(bronze_input, copies_to_drop, events), aggregate=True
        )
        gates.raise_if_any_failed([audited, reconciled])
        published = events if audited is None else audited.passing
        description = f"silver build {first}..{last} (run {gates.run_id})"
        replace_partitions(published, settings, events_path(settings), predicate, PARTITIONS, description)
        if audited is not None:
            result.quarantined_rows = _publish_quarantine(settings, audited, predicate, description)
    finally:
        gates.record()  # the audits done when a later step raised (nothing left otherwise)
        release([bronze_gate, rate_gate, audited, reconciled])
        signups.unpersist()
        for frame in (events, copies_to_drop):
            if frame is not None:
                frame.unpersist()
        result.gates = gates.summaries
        result.docs_index = None if skip_gates else str(gates.docs_index)

    metrics = {**observed(observed_input), **observed(observed_output)}
    result.metrics = {name: int(value or 0) for name, value in metrics.items()}
    for name, value in result.metrics.items():
        setattr(result, name, value)
    result.duplicates_dropped = result.bronze_rows - result.events
    result.seconds = round(time.monotonic() - started, 2)
    written = result.events - result.quarantined_rows
    say(f"silver.events: {written} events written ({result.duplicates_dropped} duplicates dropped)")
    return result


def quarantine_rate(spark: SparkSession, settings: Settings, days: Sequence[date]) -> DataFrame:
    """One row: messages bronze quarantined and accepted in the micro-batches ingested on ``days`` (from
    ops.bronze_progress: no data file is read), and their ratio (null when bronze has no progress rows, e.g. a
    bronze written without the stream)."""
    from pyspark.sql import functions as F

    schema = "first_day date, last_day date, quarantined long, messages long, quarantine_rate double"
    path = Lake(settings).bronze_progress
    if not table_exists(settings, path):
        return local_frame(spark, [(days[0], days[-1], 0, 0, None)], schema)
    totals = (
        spark.read.format("delta")
        .load(path)
        .where(F.to_date("max_ingested_at").isin(list(days)))
        .agg(F.sum("quarantined").alias("quarantined"), F.sum(F.col("events") + F.col("quarantined")).alias("messages"))
    )
    return totals.select(
        F.lit(days[0]).alias("first_day"),
        F.lit(days[-1]).alias("last_day"),
        F.coalesce("quarantined", F.lit(0)).alias("quarantined"),
        F.coalesce("messages", F.lit(0)).alias("messages"),
        F.try_divide(F.col("quarantined").cast("double"), F.col("messages")).alias("quarantine_rate"),
    )


def reconciliation(bronze_rows: DataFrame, copies_to_drop: DataFrame, candidates: DataFrame) -> DataFrame:
    """Per (tenant_id, event_date): bronze's rows minus the copies dedup drops (``expected_rows``) next to the
    candidate silver rows (``silver_rows``); the silver.reconciliation suite wants them equal."""
    from pyspark.sql import functions as F

    keys = ["tenant_id", "event_date"]
    expected = (
        bronze_rows.join(copies_to_drop, ["topic", "partition", "offset"], "left_anti")
        .groupBy(*keys)
        .agg(F.count(F.lit(1)).alias("expected_rows"))
    )
    actual = candidates.groupBy(*keys).agg(F.count(F.lit(1)).alias("silver_rows"))
    return expected.join(actual, keys, "full_outer").fillna(0, ["expected_rows", "silver_rows"])


def _publish_quarantine(settings: Settings, audited: GateResult, predicate: str, description: str) -> int:
    """Replace the build's partitions of ``silver/quarantine`` with the rows the gate quarantined (none: the
    partitions are emptied, so a fixed rerun leaves no stale rejects). Returns the row count."""
    from pyspark.sql import functions as F

    path = quarantine_path(settings)
    if audited.quarantined is None:
        if not table_exists(settings, path):
            return 0
        nothing = F.lit(None).cast("string")
        frame = audited.passing.limit(0).withColumns({"_rule": nothing, "_reason": nothing})
    else:
        frame = audited.quarantined
    replace_partitions(frame, settings, path, predicate, PARTITIONS, description)
    return audited.quarantined_rows

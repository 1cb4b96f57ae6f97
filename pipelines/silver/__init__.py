"""``silver build``: bronze.events -> silver.events, one atomic partition replacement per run.

silver.events (partitioned by tenant_id, event_date) holds every event once, at the current schema
version, pseudonymized, attributed to a stitched identity, sessionized and enriched. The rules:

Dedup (``silver.dedup_horizon_days``, default 7)
    By (tenant_id, event_id), whatever the copies' occurred_at: a bronze row is dropped when another copy of
    its (tenant_id, event_id) was ingested before it (ingested_at, then Kafka topic, partition, offset: a
    total order) and occurred at most the horizon apart from it. So of copies within the horizon exactly the
    first ingested is kept - also when a client re-stamped the time on retry and the copies sit on different
    days, and whichever days are built, in whichever order or runs: the rule reads only bronze (the
    horizon's key columns around the built days), never what silver holds. Copies further apart than the
    horizon are separate events.

Upcast (every older version to the latest registered one; ``source_version`` keeps the original)
    page_view v1 -> v2: ``page_type`` derived from the URL path when absent (``/`` home, ``/c/...``
    category, ``/p/...`` product, ``/cart`` cart, ``/checkout`` checkout, anything else other - the
    tenants' URL convention, the same values v2 trackers send); ``scroll_depth`` stays absent (unknown).
    order_completed v1 -> v2: ``discount_amount`` = 0.0 when absent (v1 had no discounts, and a v2 event
    without it had none: ``amount`` is always what was charged, net of discount); ``payment_method``
    stays absent (unknown). A v2 event missing an optional field gets the same default.

Identity stitching
    A signup event carries both ids. Every event of that anonymous_id - on every day, before and after the
    signup - is attributed to that user_id; when one anonymous_id signed up more than once, the earliest
    signup wins. Signups are read from all of bronze (only its signup partitions) and joined in Spark - the
    driver never holds them - so a rebuild applies every signup known at that time. A daily run for [D1, D2]
    also rebuilds the days in the late-data lookback (below) holding anonymous events of visitors who signed
    up in [D1, D2], so yesterday's
    browsing moves to the new user on the day of the signup; older anonymous history follows on the next
    replay of its days. Identity = user_id, else the stitched user_id, else the anonymous_id;
    ``user_key`` is its keyed pseudonym (see pipelines.silver.pii), ``is_identified`` says it is a user id.

Sessionization (``silver.session_timeout_minutes``, default 30)
    A user's events split into activity blocks wherever the gap to the previous event exceeds the timeout.
    An event without session_id takes the session_id of the nearest earlier event with one in its block,
    else of the nearest later one, else a derived id ``ds_<hash of tenant, user_key, first event of the
    block>``; ``session_is_derived`` marks them. The day before each built day is read as context so
    blocks crossing midnight resolve the same way whatever range is built. Machine events
    (``system_alert``) belong to hosts, not people: no session.

Enrichment
    users dimension (pipelines.silver.dimensions) on (tenant_id, user_key): user_signup_date, user_plan,
    user_country, user_cohort_week; device dimension on the user agent: device_class (falls back to
    ``context.device`` when there is no user agent, e.g. ``server``), os_family, browser_family. Unmatched
    rows keep null enrichment and are counted in the run summary.

Late data
    A run for [D1, D2] also rebuilds every day in [D1 - gold.late_lookback_days, D1 - 1] that holds bronze
    rows ingested at or after D1 00:00 UTC: late events that arrived during the run's window. Daily runs
    therefore pick up every late arrival within the lookback (and the stitching refresh above).
    ``include_late=False`` (replay) rebuilds exactly the range.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

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
from pipelines.silver.dimensions import (
    identity_map,
    load_users,
    read_devices,
    read_users,
    refresh_devices,
    signup_events,
)
from pipelines.silver.pii import (
    USER_AGENT_NAMESPACE,
    PiiRules,
    SparkPseudonymizer,
    hmac_key,
    load_pii_rules,
    truncate_ip_column,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

    from pipelines.quality.audit import GateSummary
    from pipelines.quality.gate import GateResult

EVENTS_TABLE = "events"
PARTITIONS = ("tenant_id", "event_date")
BRONZE_KEY_COLUMNS = ("tenant_id", "event_id", "topic", "partition", "offset")  # an event and its Kafka copy
MACHINE_EVENT_TYPES = ("system_alert",)
DERIVED_SESSION_PREFIX = "ds_"
# Typed columns: column -> property. Values pass through the property's PII action; page_url loses its query.
TYPED_PROPERTIES = {
    "page_url": "url",
    "page_type": "page_type",
    "product_id": "product_id",
    "category": "category",
    "price": "price",
    "order_id": "order_id",
    "amount": "amount",
    "discount_amount": "discount_amount",
    "currency": "currency",
    "quantity": "quantity",
    "item_count": "item_count",
    "plan": "plan",
    "method": "method",
    "payment_method": "payment_method",
    "severity": "severity",
    "component": "component",
}
COLUMNS = (
    "event_id",
    "event_type",
    "version",
    "source_version",
    "occurred_at",
    "event_date",
    "tenant_id",
    "user_key",
    "is_identified",
    "session_id",
    "session_is_derived",
    *TYPED_PROPERTIES,
    "properties",
    "device_class",
    "os_family",
    "browser_family",
    "locale",
    "ip_prefix",
    "app_version",
    "user_signup_date",
    "user_plan",
    "user_country",
    "user_cohort_week",
    "trace_id",
    "ingested_at",
    "bronze_topic",
    "bronze_partition",
    "bronze_offset",
)
# The bronze columns transform() reads (raw_value, the largest, is never needed: parquet skips it).
BRONZE_INPUT_COLUMNS = (
    "event_id",
    "event_type",
    "version",
    "occurred_at",
    "tenant_id",
    "user_id",
    "anonymous_id",
    "session_id",
    "properties",
    "context",
    "trace_id",
    "topic",
    "partition",
    "offset",
    "ingested_at",
    "event_date",
)
_URL_PATH = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)?([^?#]*)"
_QUERY_AND_FRAGMENT = r"[?#].*$"


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


def events_path(settings: Settings) -> str:
    return Lake(settings).table("silver", EVENTS_TABLE)


def property_struct(registry: SchemaRegistry) -> StructType:
    """One struct with every property of every registered type and version (sorted), typed from the schemas.

    ``from_json`` into it types the values; ``to_json`` of it writes back only the non-null ones.
    """
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType

    json_types: dict[str, DataType] = {
        "string": StringType(),
        "number": DoubleType(),
        "integer": LongType(),
        "boolean": BooleanType(),
    }
    fields: dict[str, DataType] = {}
    for event_type in registry.event_types:
        for version in registry.versions(event_type):
            for name, spec in registry.properties_schema(event_type, version).get("properties", {}).items():
                declared = spec.get("type", "string")
                kinds = [k for k in (declared if isinstance(declared, list) else [declared]) if k != "null"]
                data_type = json_types.get(kinds[0], StringType()) if len(kinds) == 1 else StringType()
                known = fields.get(name)
                if known is None or known == data_type:
                    fields[name] = data_type
                elif {known.simpleString(), data_type.simpleString()} == {"bigint", "double"}:
                    fields[name] = DoubleType()
                else:
                    raise BatchJobError(
                        f"property {name!r} has type {known.simpleString()} in one schema and "
                        f"{data_type.simpleString()} in {event_type} v{version}; silver needs one type per name"
                    )
    return StructType([StructField(name, fields[name]) for name in sorted(fields)])


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


def _strip_query(column: Column) -> Column:
    from pyspark.sql import functions as F

    return F.regexp_replace(column, _QUERY_AND_FRAGMENT, "")


def _page_type_from_path(path: Column) -> Column:
    """v1 page_type from a URL path (null path: no URL)."""
    from pyspark.sql import functions as F

    return (
        F.when(path.isNull(), F.lit(None))
        .when(path.isin("", "/"), "home")
        .when(path.startswith("/c/"), "category")
        .when(path.startswith("/p/"), "product")
        .when(path == "/cart", "cart")
        .when(path == "/checkout", "checkout")
        .otherwise("other")
    )


def _apply_action(action: str, value: Column, tenant: Column) -> Column:
    """keep / strip_query / pseudonymize on one value ("drop" is handled by the caller: it removes the field).

    Pseudonyms need the HMAC pads on the frame (``SparkPseudonymizer.attach``).
    """
    if action == "strip_query":
        return _strip_query(value)
    if action == "pseudonymize":
        return SparkPseudonymizer.column(tenant, value.cast("string"))
    return value


def later_copies(keys: DataFrame, horizon_days: int) -> DataFrame:
    """Kafka coordinates (topic, partition, offset) of the bronze rows dedup drops: copies of a (tenant_id,
    event_id) with an earlier-ingested copy that occurred at most ``horizon_days`` apart.

    ``keys`` holds the key columns of every bronze row within the horizon of the rows being judged. Only ids
    seen more than once are compared pairwise, so the work beyond one aggregation scales with the duplicates.
    """
    from pyspark.sql import functions as F

    key = ["tenant_id", "event_id"]
    order = ["ingested_at", "topic", "partition", "offset"]
    copies = keys.select(*key, "occurred_at", *order)
    repeated = copies.groupBy(*key).count().where("count > 1").drop("count")
    copies = copies.join(repeated, key, "left_semi")
    later, earlier = copies.alias("later"), copies.alias("earlier")
    pairs = later.join(
        earlier,
        [F.col(f"later.{c}") == F.col(f"earlier.{c}") for c in key]
        + [
            F.struct(*[F.col(f"earlier.{c}") for c in order]) < F.struct(*[F.col(f"later.{c}") for c in order]),
            F.abs(F.unix_micros(F.col("later.occurred_at")) - F.unix_micros(F.col("earlier.occurred_at")))
            <= horizon_days * 86_400_000_000,
        ],
    )
    return pairs.select("later.topic", "later.partition", "later.offset").distinct()


def transform(
    bronze: DataFrame,
    copies_to_drop: DataFrame,
    build_days: Sequence[date],
    signups_map: DataFrame,
    users: DataFrame,
    devices: DataFrame | None,
    pseudonymizer: SparkPseudonymizer,
    rules: PiiRules,
    registry: SchemaRegistry,
    session_timeout_minutes: int,
) -> DataFrame:
    """The silver rules as one DataFrame (see the module docstring); rows of ``build_days`` only.

    ``bronze`` holds the build days and the day before each (sessionization context); ``copies_to_drop`` the
    coordinates dedup removes from it (``later_copies``). Helper columns
    ``_stitched``, ``_user_matched``, ``_device_known`` and ``_unclassified_values`` are left for the caller's
    metrics.

    Shaped for speed, same result: built-in expressions only (no Python UDF); per-row work on ``context``
    (device, IP, pseudonym) happens before the shuffles, so the 240-byte context document never travels,
    and context-day rows travel without their documents; every JSON document is parsed once; sessionization
    needs two window passes over one window order, which the users join reuses without another shuffle.
    """
    from pyspark.sql import functions as F

    in_build = F.col("event_date").isin(list(build_days))
    df = bronze.drop("raw_value").withColumns(
        {
            "_in_build": in_build,
            "properties": F.when(in_build, F.col("properties")),  # context-day rows only feed sessionization
            "_ctx": F.when(
                in_build,
                F.from_json(
                    "context",
                    "device string, os string, locale string, ip string, user_agent string, app_version string",
                ),
            ),
        }
    )
    df = df.join(signups_map, ["tenant_id", "anonymous_id"], "left")  # AQE broadcasts it while it is small
    identity = F.coalesce("user_id", "stitched_user_id", "anonymous_id")
    df = pseudonymizer.attach(df).withColumns(
        {
            "user_key": pseudonymizer.column(F.col("tenant_id"), identity),
            "_user_agent_key": pseudonymizer.column(F.lit(USER_AGENT_NAMESPACE), F.col("_ctx.user_agent")),
        }
    )
    df = _with_context_columns(pseudonymizer.detach(df), devices, rules)
    df = (
        df.withColumn("is_identified", F.col("user_id").isNotNull() | F.col("stitched_user_id").isNotNull())
        .withColumn("_stitched", F.col("user_id").isNull() & F.col("stitched_user_id").isNotNull())
        .drop("user_id", "anonymous_id", "stitched_user_id")
    )

    df = df.join(copies_to_drop, ["topic", "partition", "offset"], "left_anti")

    df = _sessionize(df, session_timeout_minutes).filter("_in_build")

    # Upcast and typed properties. The document is parsed once into a column of its own: an expression that
    # repeated from_json (every props[...] below) would parse it again for every reference.
    property_types = {f.name: f.dataType for f in property_struct(registry).fields}
    df = df.withColumn("_parsed", F.from_json("properties", property_struct(registry)))
    parsed = F.col("_parsed")
    is_page_view = F.col("event_type") == "page_view"
    is_order = F.col("event_type") == "order_completed"
    df = df.withColumn(
        "_url_path",
        F.when(is_page_view & parsed["page_type"].isNull(), F.regexp_extract(parsed["url"], _URL_PATH, 1)),
    )
    props = parsed.withField(
        "page_type",
        F.when(is_page_view, F.coalesce(parsed["page_type"], _page_type_from_path(F.col("_url_path")))).otherwise(
            parsed["page_type"]
        ),
    ).withField(
        "discount_amount",
        F.when(is_order, F.coalesce(parsed["discount_amount"], F.lit(0.0))).otherwise(parsed["discount_amount"]),
    )
    df = df.withColumn("_props", props)
    p = F.col("_props")
    tenant = F.col("tenant_id")
    typed = {}
    for column, name in TYPED_PROPERTIES.items():
        action = rules.property_action(name)  # default deny: an unclassified property is dropped
        if action == "drop":
            typed[column] = F.lit(None).cast(property_types[name])
        else:
            typed[column] = _apply_action(action, p[name], tenant)
    if rules.property_action(TYPED_PROPERTIES["page_url"]) not in {"strip_query", "drop"}:
        typed["page_url"] = _strip_query(typed["page_url"])  # page_url never carries a query, whatever the rule
    cleaned = p
    for name in sorted(property_types):
        action = rules.property_action(name)
        if action == "drop":
            cleaned = cleaned.dropFields(name)
        elif action != "keep":
            cleaned = cleaned.withField(name, _apply_action(action, cleaned[name], tenant))
    unclassified = [name for name in sorted(property_types) if name not in rules.properties]
    df = df.withColumn(
        "_unclassified_values",  # values of unclassified properties this row carried (dropped), for the summary
        sum((p[name].isNotNull().cast("int") for name in unclassified), F.lit(0)),
    )

    user_columns = users.select(
        "tenant_id",
        "user_key",
        F.col("signup_date").alias("user_signup_date"),
        F.col("plan").alias("user_plan"),
        F.col("country").alias("user_country"),
        F.col("cohort_week").alias("user_cohort_week"),
        F.lit(True).alias("_user_matched"),
    )
    df = df.join(user_columns, ["tenant_id", "user_key"], "left")
    if rules.property_fields("pseudonymize"):
        df = pseudonymizer.attach(df)

    latest = F.create_map(
        *[item for t in registry.event_types for item in (F.lit(t), F.lit(registry.latest_version(t)))]
    )
    return df.select(
        "event_id",
        "event_type",
        F.coalesce(F.element_at(latest, F.col("event_type")), F.col("version")).cast("int").alias("version"),
        F.col("version").cast("int").alias("source_version"),
        "occurred_at",
        "event_date",
        "tenant_id",
        "user_key",
        "is_identified",
        F.col("_session").alias("session_id"),
        "session_is_derived",
        *[value.alias(column) for column, value in typed.items()],
        F.to_json(cleaned).alias("properties"),
        "device_class",
        "os_family",
        "browser_family",
        "locale",
        "ip_prefix",
        "app_version",
        "user_signup_date",
        "user_plan",
        "user_country",
        "user_cohort_week",
        "trace_id",
        "ingested_at",
        F.col("topic").alias("bronze_topic"),
        F.col("partition").alias("bronze_partition"),
        F.col("offset").alias("bronze_offset"),
        "_stitched",
        "_user_matched",
        "_device_known",
        "_unclassified_values",
    )


def _with_context_columns(df: DataFrame, devices: DataFrame | None, rules: PiiRules) -> DataFrame:
    """Parsed ``_ctx`` -> the silver context columns (device dimension on ``_user_agent_key``, IP prefix, kept
    fields); drops them."""
    from pyspark.sql import functions as F

    if devices is not None:
        device_columns = devices.select(
            F.col("user_agent_key").alias("_user_agent_key"),
            F.col("device_class").alias("_device_class"),
            "os_family",
            "browser_family",
            F.lit(True).alias("_device_known"),
        )
        df = df.join(F.broadcast(device_columns), "_user_agent_key", "left")
    else:
        df = df.withColumns(
            {
                "_device_class": F.lit(None).cast("string"),
                "os_family": F.lit(None).cast("string"),
                "browser_family": F.lit(None).cast("string"),
                "_device_known": F.lit(None).cast("boolean"),
            }
        )
    ip_prefix = (
        truncate_ip_column(rules, F.col("_ctx.ip"))
        if rules.context.get("ip") == "truncate_ip"
        else F.lit(None).cast("string")
    )
    df = df.withColumn("ip_prefix", ip_prefix)

    def kept(name: str) -> Column:
        return F.col(f"_ctx.{name}") if rules.keeps_context(name) else F.lit(None).cast("string")

    return df.withColumns(
        {
            "device_class": F.coalesce("_device_class", kept("device")),
            "locale": kept("locale"),
            "app_version": kept("app_version"),
        }
    ).drop("_ctx", "context", "_user_agent_key", "_device_class")


def _sessionize(df: DataFrame, session_timeout_minutes: int) -> DataFrame:
    """``_session`` and ``session_is_derived`` (module docstring) from two passes over one window order.

    Pass 1 numbers each user's events and finds block starts (gap > timeout); pass 2 takes, per event, the
    last block start and last given session id up to it, the first given session id from it on and the next
    block start after it. A given id is "in my block" when its position lies between the block boundaries.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    timeout_us = session_timeout_minutes * 60 * 1_000_000
    by_user = Window.partitionBy("tenant_id", "user_key").orderBy("occurred_at", "event_id")
    micros = F.unix_micros("occurred_at")
    gap = micros - F.lag(micros).over(by_user)
    df = df.withColumns({"_new_block": gap.isNull() | (gap > timeout_us), "_pos": F.row_number().over(by_user)})
    given = F.when(F.col("session_id").isNotNull(), F.struct(F.col("_pos").alias("pos"), F.col("session_id")))
    block_start = F.when(F.col("_new_block"), F.struct(F.col("_pos").alias("pos"), F.col("event_id")))
    df = df.withColumns(
        {
            "_block_start": F.last(block_start, ignorenulls=True).over(
                by_user.rowsBetween(Window.unboundedPreceding, Window.currentRow)
            ),
            "_earlier": F.last(given, ignorenulls=True).over(
                by_user.rowsBetween(Window.unboundedPreceding, Window.currentRow)
            ),
            "_later": F.first(given, ignorenulls=True).over(
                by_user.rowsBetween(Window.currentRow, Window.unboundedFollowing)
            ),
            "_next_block": F.first(F.when(F.col("_new_block"), F.col("_pos")), ignorenulls=True).over(
                by_user.rowsBetween(1, Window.unboundedFollowing)
            ),
        }
    )
    earlier = F.when(F.col("_earlier.pos") >= F.col("_block_start.pos"), F.col("_earlier.session_id"))
    later = F.when(
        F.col("_next_block").isNull() | (F.col("_later.pos") < F.col("_next_block")), F.col("_later.session_id")
    )
    derived = F.concat(
        F.lit(DERIVED_SESSION_PREFIX),
        F.substring(F.sha2(F.concat_ws(":", "tenant_id", "user_key", "_block_start.event_id"), 256), 1, 32),
    )
    machine = F.col("event_type").isin(*MACHINE_EVENT_TYPES)
    return df.withColumns(
        {
            "_session": F.when(machine, F.lit(None).cast("string")).otherwise(
                F.coalesce("session_id", earlier, later, derived)
            ),
            "session_is_derived": ~machine & F.col("session_id").isNull(),
        }
    ).drop("_new_block", "_pos", "_block_start", "_earlier", "_later", "_next_block")


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
    are refreshed before the candidate gate: they are rebuilt from their sources on every run.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from pipelines.quality.audit import JobGates, raise_if_any_failed, release

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
    gates = JobGates(spark, settings, "silver", skip=skip_gates)
    result.run_id = gates.run_id
    say("quality gate: bronze input of the build days" + (" (skipped)" if skip_gates else ""))
    bronze_input = read_table(
        spark,
        settings,
        lake.bronze_events,
        partition_predicate(tenant_list, "event_date", build_days),
        columns=[*BRONZE_KEY_COLUMNS, "event_type", "version", "occurred_at", "ingested_at", "event_date"],
    )
    audited_input = [
        gates.audit("bronze.events", bronze_input),
        gates.audit("bronze.quarantine_rate", quarantine_rate(spark, settings, build_days)),
    ]
    try:
        raise_if_any_failed(audited_input)
    finally:
        release(audited_input)
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
        partition_predicate(tenant_list, "event_date", build_days),
        columns=["context"],
    )
    result.new_user_agents = refresh_devices(
        spark, settings, agents.select(F.get_json_object("context", "$.user_agent")), key
    )

    say(f"silver.events: {len(build_days)} day(s) from bronze")
    bronze = read_table(spark, settings, lake.bronze_events, bronze_filter, columns=BRONZE_INPUT_COLUMNS)
    observed_input = Observation("silver_input")
    bronze = bronze.observe(
        observed_input, F.sum(F.col("event_date").isin(build_days).cast("long")).alias("bronze_rows")
    )
    horizon = settings.silver.dedup_horizon_days
    horizon_days = days_between(context_days[0] - timedelta(days=horizon), build_days[-1] + timedelta(days=horizon))
    keys = read_table(
        spark,
        settings,
        lake.bronze_events,
        partition_predicate(tenant_list, "event_date", horizon_days),
        columns=[*BRONZE_KEY_COLUMNS, "occurred_at", "ingested_at"],
    )
    copies_to_drop = later_copies(keys, horizon)
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
    observed_output = Observation("silver_output")
    events = events.observe(
        observed_output,
        F.count(F.lit(1)).alias("events"),
        F.sum(F.col("is_identified").cast("long")).alias("identified_events"),
        F.sum(F.col("_stitched").cast("long")).alias("stitched_events"),
        F.sum((F.col("session_is_derived") & F.col("session_id").isNotNull()).cast("long")).alias(
            "derived_session_events"
        ),
        F.sum((F.col("is_identified") & F.col("_user_matched").isNull()).cast("long")).alias("unmatched_user_events"),
        F.sum(F.col("device_class").isNull().cast("long")).alias("unknown_device_events"),
        F.sum("_unclassified_values").alias("unclassified_values_dropped"),
    ).drop("_stitched", "_user_matched", "_device_known", "_unclassified_values")
    predicate = partition_predicate(tenant_list, "event_date", build_days)
    if not skip_gates:
        events = events.persist(StorageLevel.MEMORY_AND_DISK)  # audited twice (suite, reconciliation), then written
    audited: GateResult | None = None
    reconciled: GateResult | None = None
    try:
        say("quality gate: silver.events candidates" + (" (skipped)" if skip_gates else ""))
        try:
            audited = gates.audit("silver.events", events, allow_quarantine=True)
            reconciled = gates.audit("silver.reconciliation", reconciliation(bronze_input, copies_to_drop, events))
            raise_if_any_failed([audited, reconciled])
            published = events if audited is None else audited.passing
            description = f"silver build {first}..{last} (run {gates.run_id})"
            replace_partitions(published, settings, events_path(settings), predicate, PARTITIONS, description)
            if audited is not None:
                result.quarantined_rows = _publish_quarantine(settings, audited, predicate, description)
        finally:
            release([audited, reconciled])
    finally:
        signups.unpersist()
        events.unpersist()
        result.gates = gates.summaries
        result.docs_index = None if skip_gates else str(gates.docs_index)

    metrics = {**observed_input.get, **observed_output.get}
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
        return spark.createDataFrame([(days[0], days[-1], 0, 0, None)], schema)
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


def quarantine_path(settings: Settings) -> str:
    return Lake(settings).table("silver", "quarantine")


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

"""The silver rules as one DataFrame: dedup applied, identity stitched and pseudonymized, context columns,
sessions, upcast and typed properties under the PII rules, users enrichment (rules: pipelines.silver docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from pipelines.contracts.registry import SchemaRegistry
from pipelines.silver.model import COLUMNS, TYPED_PROPERTIES, property_struct
from pipelines.silver.pii import USER_AGENT_NAMESPACE, PiiRules, SparkPseudonymizer, truncate_ip_column
from pipelines.silver.sessions import sessionize

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_URL_PATH = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)?([^?#]*)"
_QUERY_AND_FRAGMENT = r"[?#].*$"


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
    """The silver rules as one DataFrame (see the pipelines.silver docstring); rows of ``build_days`` only.

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

    df = sessionize(df, session_timeout_minutes).filter("_in_build")

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
    computed = {
        "version": F.coalesce(F.element_at(latest, F.col("event_type")), F.col("version")).cast("int"),
        "source_version": F.col("version").cast("int"),
        "session_id": F.col("_session"),
        **typed,
        "properties": F.to_json(cleaned),
        "bronze_topic": F.col("topic"),
        "bronze_partition": F.col("partition"),
        "bronze_offset": F.col("offset"),
    }
    # The silver columns (model.COLUMNS, in order), then the markers the build counts and drops.
    return df.select(
        *[computed[name].alias(name) if name in computed else name for name in COLUMNS],
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

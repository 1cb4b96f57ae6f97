"""The user-activity tables: daily_active_users, event_counts and sessions (definitions: pipelines.gold docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from pipelines.silver import MACHINE_EVENT_TYPES

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

ROLLING_DAYS = (7, 28)  # wau, mau
NEW_USER_HISTORY_DAYS = 28


def is_user_event() -> Column:
    """True for events of people; machine events (``system_alert``) belong to hosts and count as no user."""
    from pyspark.sql import functions as F

    return ~F.col("event_type").isin(*MACHINE_EVENT_TYPES)


def daily_active_users(silver: DataFrame, days: Sequence[date]) -> DataFrame:
    from pyspark.sql import functions as F

    history = max(NEW_USER_HISTORY_DAYS, *ROLLING_DAYS)
    active = silver.filter(is_user_event()).select("tenant_id", "user_key", "event_date").distinct()
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
            F.count_distinct(F.when(is_user_event(), F.col("user_key"))).alias("users"),
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

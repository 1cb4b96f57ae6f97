"""gold.event_rate_anomalies: each day's event count per type against a robust baseline of the days before it
(definition: pipelines.gold docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

MAD_TO_SIGMA = 1.4826
MEAN_AD_TO_SIGMA = 1.253314


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

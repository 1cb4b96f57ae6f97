"""gold.revenue: orders, revenue and discounts per tenant, day and currency (definition: pipelines.gold docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


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

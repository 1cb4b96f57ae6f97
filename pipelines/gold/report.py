"""The gold summary the main job prints, read back from the published tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from pipelines.config import Settings
from pipelines.gold.job import table_path
from pipelines.platform.batch import table_exists

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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

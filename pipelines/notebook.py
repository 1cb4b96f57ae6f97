"""What a notebook needs from the project, in one import: ``from pipelines import notebook as nb``.

``nb.session()`` gives the profile's SparkSession (Delta, the catalog, the lake) with every table of the lake
named ``<layer>.<name>`` - through the metastore when the profile has one, otherwise in the session's own
catalog - so ``spark.table("gold.revenue")`` and ``SELECT ... FROM gold.revenue VERSION AS OF 3`` work the
same in a notebook, a job and the SQL endpoint. The other helpers answer the questions the project's notebooks
ask (which tables are there, what did the gates say, what was quarantined and why, how did a table change)
so that notebooks hold analysis, not set-up code.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from pipelines.config import Settings, load_settings
from pipelines.platform.catalog import lake_tables, name_tables
from pipelines.platform.registry import TABLES

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession


_profile: str | None = None  # the profile of the last session(): the other helpers read the same lake


@cache
def _load(profile: str | None) -> Settings:
    return load_settings(profile=profile)


def settings(profile: str | None = None) -> Settings:
    """The settings of ``profile``, else of the profile ``session()`` was given (LAKEHOUSE_PROFILE and
    LAKEHOUSE__* overrides apply, as for every command)."""
    return _load(profile or _profile)


def session(profile: str | None = None) -> SparkSession:
    """The SparkSession every notebook starts with; calling it again returns the same session."""
    from pipelines.platform.spark import build_spark

    global _profile
    _profile = profile
    config = settings(profile)
    spark = build_spark(config, app_name="notebook")
    name_tables(spark, config)  # tables created since the metastore last saw them, or no metastore at all
    return spark


def tables(spark: SparkSession) -> pd.DataFrame:
    """Every declared table with its layer, description, partitioning, owner and whether the lake holds it yet."""
    import pandas as pd

    present = {f"{layer}.{name}" for layer, name, _ in lake_tables(settings())}
    return pd.DataFrame(
        [
            {
                "table": spec.full_name,
                "present": spec.full_name in present,
                "description": spec.description,
                "partitioned_by": ", ".join(spec.partitioned_by),
                "written_by": spec.writer,
                "owner": spec.owner,
            }
            for spec in TABLES
        ]
    )


def read(spark: SparkSession, table: str, version: int | None = None) -> DataFrame:
    """``table`` (e.g. "gold.revenue") as it is now, or as it was at Delta ``version`` (time travel)."""
    if version is None:
        return spark.table(table)
    return spark.sql(f"SELECT * FROM {table} VERSION AS OF {int(version)}")


def history(spark: SparkSession, table: str) -> pd.DataFrame:
    """The table's commits, newest first: version, time, operation and what it replaced (Delta's history)."""
    commits = spark.sql(f"DESCRIBE HISTORY {table}").select(
        "version", "timestamp", "operation", "operationParameters", "operationMetrics"
    )
    return commits.toPandas()


def gate_results(spark: SparkSession, runs: int = 1) -> pd.DataFrame:
    """The rules of the latest ``runs`` gate runs (ops.quality_results), failed ones first."""
    from pyspark.sql import functions as F

    results = spark.table("ops.quality_results")
    newest = results.groupBy("run_id").agg(F.max("recorded_at").alias("at")).orderBy(F.desc("at")).limit(runs)
    chosen = results.join(newest.select("run_id"), "run_id").orderBy("success", "table", "expectation")
    columns = ["run_id", "table", "expectation", "success", "action", "observed_value", "unexpected_count"]
    return chosen.select(*columns, "unexpected_percent", "failing_sample", "recorded_at").toPandas()


def quarantine(spark: SparkSession, layer: str = "bronze", limit: int = 20) -> pd.DataFrame:
    """The newest quarantined rows of ``layer`` with why they were held back: bronze's validation errors
    (``error_summary``, the raw message as text) or the silver gate rule (``_rule``, ``_reason``)."""
    from pyspark.sql import functions as F

    rows = spark.table(f"{layer}.quarantine").orderBy(F.desc("ingested_at")).limit(limit)
    if layer == "bronze":
        rows = rows.select(
            "ingested_at", "tenant_id", "event_type", "error_summary", "topic", "partition", "offset",
            F.col("raw_value").cast("string").alias("raw_value"),
        )  # fmt: skip
    else:
        rows = rows.select("ingested_at", "tenant_id", "event_type", "event_id", "_rule", "_reason")
    return rows.toPandas()

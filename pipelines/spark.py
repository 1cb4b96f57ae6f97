"""One place that builds the SparkSession, so local and cluster runs share the same setup.

The session registers the project's Python Data Source connectors (Kafka, Delta): no JVM jars
are needed, which is why the same code runs on a laptop and on a standalone cluster.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from pipelines.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def build_spark(
    settings: Settings, app_name: str | None = None, extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """Get or create the SparkSession described by the profile, with the connectors registered."""
    # Spark binds eth0 unless told otherwise; a local run must stay on loopback.
    if settings.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Executors must run the same interpreter (and so the same venv) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(settings.spark.master).appName(app_name or settings.spark.app_name)
    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1" if settings.spark.master.startswith("local") else "",
        **settings.spark.conf,
        **(extra_conf or {}),
    }
    for key, value in conf.items():
        if value != "":
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    register_connectors(spark)
    return spark


def register_connectors(spark: SparkSession) -> None:
    """Register the project's data sources under their short names (see pipelines.connectors)."""
    from pipelines.connectors.delta import DeltaDataSource
    from pipelines.connectors.kafka import KafkaDataSource

    for source in (KafkaDataSource, DeltaDataSource):
        spark.dataSource.register(source)

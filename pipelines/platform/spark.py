"""One place that builds the SparkSession, so the stream, batch jobs, notebooks and tests share one setup.

Every session gets:

* the pinned jars (``pipelines.platform.jars``: Delta, Spark's Kafka source, S3A, the metastore client), also
  shipped to executors on a cluster;
* Delta's SQL extensions and catalog (``MERGE``, ``OPTIMIZE``, ``VACUUM``, ``DESCRIBE HISTORY``,
  ``VERSION AS OF``), with table defaults that keep every table readable by delta-rs, DuckDB and
  Polars (no deletion vectors, no column mapping, classic checkpoints);
* the catalog (``catalog.metastore``): the project's Derby network server by default (started on
  demand, see ``pipelines.platform.metastore``), an existing Hive metastore, or none;
* S3A for ``s3://`` lakes, with the same credentials delta-rs uses (``lake.storage_options_env``).
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipelines.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

SUBMITTED_DRIVER_ENV = "PYSPARK_GATEWAY_PORT"  # set by spark-submit for the Python driver it launches
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Readable by delta-rs' pyarrow readers, DuckDB and Polars: they reject deletion vectors and column
    # mapping. Delta 4.4 leaves both off; saying so keeps a future default change from breaking readers.
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.databricks.delta.properties.defaults.columnMapping.mode": "none",
    # Rebuilding a table's state from its log uses 50 partitions by default: on a laptop most of a small
    # job's time went to those tasks.
    "spark.databricks.delta.snapshotPartitions": "4",
}
# Jobs count what they read and write with Observations. When adaptive execution finds a stage empty it swaps
# the plan above it for an empty relation, and an Observation in that part never reports (its `get` fails):
# a build whose days hold only dropped duplicates would crash instead of writing nothing.
OBSERVATION_SAFE_CONF = {
    "spark.sql.adaptive.optimizer.excludedRules": "org.apache.spark.sql.execution.adaptive.AQEPropagateEmptyRelation",
}


def s3a_conf(storage_options: Mapping[str, str]) -> dict[str, str]:
    """Hadoop S3A settings from delta-rs style storage options, and ``s3://`` served by S3A.

    One set of names (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) configures both engines, so a table path
    is the same string for Spark and for delta-rs readers.
    """
    conf = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
    }
    options = {key.upper(): value for key, value in storage_options.items()}
    mapping = {
        "AWS_ACCESS_KEY_ID": "fs.s3a.access.key",
        "AWS_SECRET_ACCESS_KEY": "fs.s3a.secret.key",
        "AWS_SESSION_TOKEN": "fs.s3a.session.token",
        "AWS_REGION": "fs.s3a.endpoint.region",
        "AWS_DEFAULT_REGION": "fs.s3a.endpoint.region",
    }
    for key, target in mapping.items():
        if options.get(key):
            conf[f"spark.hadoop.{target}"] = options[key]
    endpoint = options.get("AWS_ENDPOINT_URL") or options.get("AWS_ENDPOINT")
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"  # local S3 servers have no virtual hosts
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https")).lower()
    if options.get("AWS_ACCESS_KEY_ID"):
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
            if not options.get("AWS_SESSION_TOKEN")
            else "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
        )
    return conf


def configure_s3a(spark: SparkSession, storage_options: Mapping[str, str], bucket: str | None = None) -> dict[str, str]:
    """Apply ``s3a_conf(storage_options)`` to a running session's Hadoop configuration; returns what was set.

    For a session built before the S3 endpoint or credentials were known (a notebook, a shared test
    session). With ``bucket`` every ``fs.s3a.*`` setting is scoped to that bucket
    (``fs.s3a.bucket.<bucket>.*``, S3A's per-bucket configuration), so other buckets keep the session's
    settings. Applies to filesystems opened afterwards: S3A caches one per bucket once opened.
    """
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    applied = {}
    for key, value in s3a_conf(storage_options).items():
        name = key.removeprefix("spark.hadoop.")
        if bucket and name.startswith("fs.s3a."):
            name = f"fs.s3a.bucket.{bucket}.{name.removeprefix('fs.s3a.')}"
        hadoop.set(name, value)
        applied[name] = value
    return applied


def catalog_conf(settings: Settings) -> dict[str, str]:
    """Spark settings for the configured catalog; starts the local metastore database when needed."""
    if not settings.catalog.enabled:
        return {"spark.sql.catalogImplementation": "in-memory"}
    scratch = settings.metastore_state_dir / "scratch"
    conf = {
        "spark.sql.catalogImplementation": "hive",
        # Hive writes scratch files to /tmp/<user> and /tmp/<uuid>_resources unless told otherwise.
        "spark.hadoop.hive.exec.scratchdir": str(scratch / "hdfs"),
        "spark.hadoop.hive.exec.local.scratchdir": str(scratch / "local"),
        "spark.hadoop.hive.downloaded.resources.dir": str(scratch / "resources"),
        "spark.hadoop.hive.server2.logging.operation.log.location": str(scratch / "operation_logs"),
    }
    if settings.catalog.metastore.startswith("thrift://"):
        conf["spark.hadoop.hive.metastore.uris"] = settings.catalog.metastore
        return conf
    from pipelines.platform.jars import jar_paths
    from pipelines.platform.metastore import EmbeddedMetastore

    metastore = EmbeddedMetastore.from_settings(settings)
    handle = metastore.running()
    if handle is None:
        handle = metastore.start()
        # A command that had to start the database stops it when it exits; processes that should share
        # one for longer (stream + notebooks + SQL endpoint) start it first: `pipelines metastore start`.
        atexit.register(metastore.stop)
    derby_client = [str(jar) for jar in jar_paths("spark") if jar.name.startswith("derbyclient-")]
    conf.update(
        {
            "spark.hadoop.javax.jdo.option.ConnectionURL": handle.jdbc_url,
            "spark.hadoop.javax.jdo.option.ConnectionDriverName": "org.apache.derby.jdbc.ClientDriver",
            "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
            "spark.hadoop.hive.metastore.schema.verification": "false",
            # DataNucleus loads the JDBC driver from the JVM's own class path, not from spark.jars.
            "spark.driver.extraClassPath": os.pathsep.join(derby_client),
        }
    )
    return conf


def spark_conf(settings: Settings, extra_conf: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every setting the session is built with: jars, Delta, catalog, S3A, then the profile's own."""
    from pipelines.platform.jars import jar_paths

    local = settings.spark.master.startswith("local")
    return {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1" if local else "",
        "spark.jars": ",".join(str(jar) for jar in jar_paths("spark")),
        "spark.sql.warehouse.dir": f"{settings.lake_root.rstrip('/')}/_warehouse",
        **DELTA_CONF,
        **s3a_conf(settings.lake_storage_options()),
        **catalog_conf(settings),
        **OBSERVATION_SAFE_CONF,
        **settings.spark.conf,
        **(extra_conf or {}),
    }


def build_spark(
    settings: Settings, app_name: str | None = None, extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """Get or create the SparkSession described by the profile (see the module docstring)."""
    # Spark binds eth0 unless told otherwise; a local run must stay on loopback.
    if settings.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Executors must run the same interpreter (and so the same venv) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name or settings.spark.app_name)
    # Under spark-submit (an Airflow Spark task) the driver JVM already runs with the master it was submitted to:
    # that choice stands. Everywhere else the profile's master does.
    if SUBMITTED_DRIVER_ENV not in os.environ:
        builder = builder.master(settings.spark.master)
    for key, value in spark_conf(settings, extra_conf).items():
        if value != "":
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if settings.spark.master.startswith("local"):
        _quiet_task_failures(spark)
    return spark


def _quiet_task_failures(spark: SparkSession) -> None:
    """In local mode a failed task's exception is the one the driver raises to the caller (the CLI prints it in a
    line, ``--debug`` in full): the executor's and the task scheduler's own logs of it would put the same Java
    stack trace on the user's terminal first. On a cluster those logs stay, in the executors' processes."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    configurator = jvm.org.apache.logging.log4j.core.config.Configurator
    for logger in ("org.apache.spark.executor.Executor", "org.apache.spark.scheduler.TaskSetManager"):
        configurator.setLevel(logger, jvm.org.apache.logging.log4j.Level.OFF)


@contextmanager
def session_conf(spark: SparkSession, overrides: Mapping[str, str]) -> Iterator[None]:
    """Set session settings for a block (one command, one gate's jobs) and put the previous values back."""
    previous = {key: spark.conf.get(key, None) for key in overrides}
    for key, value in overrides.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def persist_for_reuse(df: DataFrame) -> DataFrame:
    """``df`` persisted for the several actions that read it next: in memory as far as it fits, the rest on local
    disk, stored the way Spark caches a DataFrame by default (deserialized column batches).

    Not pyspark's ``StorageLevel.MEMORY_AND_DISK``: in Python that name is the *serialized* level (Scala's of the
    same name is not). With it, every read of a cached block deserialized it again, and a block Spark had moved to
    disk came back whole through a heap buffer plus a temporary direct buffer of the block's size, which the JDK
    keeps for the thread. At 10M events (BENCHMARKS.md, silver + gold, 2026-12-04): silver 678.5 -> 600.1 s, the
    JVM's peak 4.24 -> 3.67 GiB (its direct memory 625 -> 43 MB: three kept buffers of about 195 MB each gone),
    GC pauses 37.1 -> 23.5 s.
    """
    from pyspark import StorageLevel

    return df.persist(StorageLevel.MEMORY_AND_DISK_DESER)


def local_frame(spark: SparkSession, rows: Sequence[Sequence[object]], schema: str | StructType) -> DataFrame:
    """A small DataFrame of rows the driver holds (``schema``: a struct or its Spark DDL), handed to the JVM as one
    Arrow table.

    Not ``spark.createDataFrame(rows)``: that parallelizes pickled rows, and every job reading the frame starts
    Spark's Python workers to unpickle them: a daemon and one worker per core, about 110 MB together, kept alive
    while such frames keep being read. Silver's HMAC pads are read by its main job, so these otherwise idle
    processes were part of the 10M-event build's peak memory (BENCHMARKS.md), and each bronze micro-batch ran
    Python tasks just to write its progress rows. An Arrow table becomes a ``LocalRelation`` in the JVM: no
    Python process, no pickling, and still no value in a plan string.

    A naive datetime is local time, as pyspark reads it (and returns it from ``collect``).
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    struct = StructType.fromDDL(schema) if isinstance(schema, str) else schema
    records = [{name: _aware(value) for name, value in zip(struct.names, row, strict=True)} for row in rows]
    return spark.createDataFrame(pa.Table.from_pylist(records, schema=to_arrow_schema(struct, timezone="UTC")), struct)


def _aware(value: object) -> object:
    """``value``, a naive datetime read as local time (Arrow alone would read it as UTC)."""
    return value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo is None else value

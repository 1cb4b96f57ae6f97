"""Table names in the metastore: ``bronze.events``, ``silver.events``, ``gold.revenue``, ``ops.*``.

The lake is the source of truth: jobs read and write Delta tables by path (``pipelines.platform.lake``), and the
catalog maps ``<layer>.<name>`` to that path as an external table, so ``spark.table("gold.revenue")`` and
``SELECT ... FROM gold.revenue VERSION AS OF 3`` work in any fresh session and dropping a name never
deletes data. Registration is idempotent: a name that points elsewhere (another lake root) is
re-pointed, so the catalog always names the profile's lake.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from pipelines.config import Settings
from pipelines.platform.lake import Lake
from pipelines.platform.registry import LAYERS, TABLES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyspark.sql import SparkSession

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# (session, qualified name) -> location already registered by this process: one metastore call per table.
_registered: dict[tuple[int, str], str] = {}


class CatalogError(ValueError):
    """A table cannot be registered; the message names the table and why."""


def _normalize(location: str) -> str:
    text = location.rstrip("/")
    if text.startswith("file:"):
        text = "/" + text[len("file:") :].lstrip("/")
    return text.replace("s3a://", "s3://")


def _quote(path: str) -> str:
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _location(spark: SparkSession, database: str, table: str) -> str:
    """Where the metastore says a table lives (a metastore call; no Delta snapshot is loaded)."""
    return str(spark._jsparkSession.sharedState().externalCatalog().getTable(database, table).location().toString())


def _exists(spark: SparkSession, database: str, table: str) -> bool:
    """Whether the metastore names the table (asked of the metastore: Delta's catalog would load the table and
    fail when its folder is gone)."""
    catalog = spark._jsparkSession.sharedState().externalCatalog()
    return bool(catalog.databaseExists(database) and catalog.tableExists(database, table))


def register(spark: SparkSession, settings: Settings, layer: str, name: str, path: str) -> bool:
    """Make ``<layer>.<name>`` name the Delta table at ``path``; True when the catalog changed."""
    if not settings.catalog.enabled:
        return False
    if layer not in LAYERS or not _NAME.match(name):
        raise CatalogError(f"cannot register {layer}.{name}: layer must be one of {LAYERS}, name [a-z0-9_]")
    qualified = f"{layer}.{name}"
    key = (id(spark), qualified)
    if _registered.get(key) == _normalize(path):
        return False
    changed = True
    if _exists(spark, layer, name):
        if _normalize(_location(spark, layer, name)) == _normalize(path):
            changed = False
        else:
            # An external table: dropping the name leaves the data where it is. Dropped in the metastore itself,
            # not with DROP TABLE: Delta's DROP loads the old table first and fails when its folder is gone
            # (a lake that was moved or deleted).
            spark._jsparkSession.sharedState().externalCatalog().dropTable(layer, name, True, False)
            spark._jsparkSession.sessionState().catalog().invalidateAllCachedTables()
    else:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {layer}")
    if changed:
        spark.sql(f"CREATE TABLE IF NOT EXISTS {qualified} USING delta LOCATION {_quote(path)}")
    _registered[key] = _normalize(path)
    return changed


def lake_tables(settings: Settings) -> list[tuple[str, str, str]]:
    """(layer, name, path) of every Delta table under the lake root (local lakes: a directory scan)."""
    lake = Lake(settings)
    found = []
    if "://" in lake.root and not lake.root.startswith("file://"):
        from deltalake import DeltaTable

        for layer, name in ((spec.layer, spec.name) for spec in TABLES):
            path = lake.table(layer, name)
            if DeltaTable.is_deltatable(path, lake.storage_options or None):
                found.append((layer, name, path))
        return found
    root = Path(lake.root.removeprefix("file://"))
    for layer in LAYERS:
        for log in sorted((root / layer).glob("*/_delta_log")):
            found.append((layer, log.parent.name, str(log.parent)))
    return found


def sync(spark: SparkSession, settings: Settings) -> list[str]:
    """Register every table of the lake (e.g. for a fresh metastore); returns the names that changed."""
    return [
        f"{layer}.{name}" for layer, name, path in lake_tables(settings) if register(spark, settings, layer, name, path)
    ]


def name_tables(spark: SparkSession, settings: Settings) -> list[str]:
    """Name every table of the lake ``<layer>.<name>`` in this session: through the metastore when the profile
    has one (``sync``), otherwise in the session's own in-memory catalog, so readers (notebooks, the SQL
    endpoint) use the same names either way. Returns the names."""
    if settings.catalog.enabled:
        sync(spark, settings)
    found = lake_tables(settings)
    for layer, name, path in found:
        if not settings.catalog.enabled:
            spark.sql(f"CREATE DATABASE IF NOT EXISTS {layer}")
            spark.sql(f"CREATE TABLE IF NOT EXISTS {layer}.{name} USING delta LOCATION {_quote(path)}")
    return [f"{layer}.{name}" for layer, name, _ in found]


def ensure_table(
    spark: SparkSession,
    settings: Settings,
    layer: str,
    name: str,
    schema: pa.Schema,
    partition_by: list[str],
    properties: Mapping[str, str] | None = None,
) -> str:
    """Create ``<layer>.<name>`` in the lake if missing (empty, with its schema, partitioning and Delta table
    ``properties``), register it, and return its path. An existing table with another schema or partitioning is
    an error, not silently used: a job deploying a new definition must not run against the old one unnoticed;
    properties that differ are set (one commit). The check reads the Delta log with delta-rs (milliseconds, no
    Spark job), so a stream's start-up stays short."""
    from deltalake import DeltaTable, Schema

    lake = Lake(settings)
    path = lake.table(layer, name)
    options = lake.storage_options or None
    if not DeltaTable.is_deltatable(path, options):
        from delta.tables import DeltaTable as SparkDeltaTable
        from pyspark.sql.pandas.types import from_arrow_schema

        builder = SparkDeltaTable.createIfNotExists(spark).location(path).addColumns(from_arrow_schema(schema))
        for key, value in (properties or {}).items():
            builder = builder.property(key, value)
        builder.partitionedBy(*partition_by).execute()
    table = DeltaTable(path, storage_options=options)

    def comparable(arrow: pa.Schema) -> list[tuple[str, str]]:
        return [(f.name.lower(), str(f.type)) for f in pa.schema(Schema.from_arrow(arrow).to_arrow())]

    existing = pa.schema(table.schema().to_arrow())
    problems = []
    if comparable(existing) != comparable(schema):
        problems.append(f"schema is {existing.to_string(show_schema_metadata=False)}")
    if list(table.metadata().partition_columns) != list(partition_by):
        problems.append(f"partitioned by {table.metadata().partition_columns}")
    if problems:
        raise CatalogError(f"table {layer}.{name} at {path} exists with a different definition: " + "; ".join(problems))
    configuration = table.metadata().configuration
    changed = {key: value for key, value in (properties or {}).items() if configuration.get(key) != value}
    if changed:
        settings_sql = ", ".join(f"'{key}' = '{value}'" for key, value in changed.items())
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({settings_sql})")
    register(spark, settings, layer, name, path)
    return path

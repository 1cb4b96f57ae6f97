"""Dimension tables silver enriches events with: users and devices (small Delta tables in the silver layer).

``silver.dim_users`` (partitioned by tenant_id): one row per known user, keyed by ``user_key`` (the same
pseudonym silver uses, never the raw id). Two sources, merged per user:

1. ``<silver.dimensions_dir>/users.csv`` - a CRM export of users who existed before the stream:
   ``tenant_id,user_id,signup_date,plan,country``. The shipped file matches the users of the default
   generated stream (``python -m pipelines dimensions sample-users`` rewrites it).
2. ``signup`` events in bronze (every date): signup_date = UTC date of the signup, plan = its ``plan``
   property, country = region of its ``context.locale`` (``en-US`` -> ``US``).

A value from the file wins over one derived from events (the export is the curated, current state);
``cohort_week`` is the Monday of the signup week. Rebuilt per tenant from its sources on every load, so a
load is deterministic and idempotent.

``silver.dim_devices``: one row per distinct user agent, parsed with ``ua-parser`` into device_class
(desktop / mobile / tablet / bot / other), os_family and browser_family. Only agents not yet in the table
are parsed (on the driver by ``pipelines.silver.user_agents``: a dimension's worth of strings) and inserted with an
insert-only MERGE (the first run creates the table with them). Readers take one row per agent, so a duplicate
left by two racing first runs is harmless.

Both are small Delta tables written by Spark (users: one overwrite of the loaded tenants' partitions;
devices: the MERGE) and named in the catalog as ``silver.dim_users`` and ``silver.dim_devices``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from pipelines.config import Settings
from pipelines.platform.batch import check_tenants, known_tenants, read_table, register_table, sql_in, table_exists
from pipelines.platform.lake import Lake
from pipelines.platform.registry import table
from pipelines.platform.spark import local_frame
from pipelines.silver.pii import USER_AGENT_NAMESPACE, SparkPseudonymizer
from pipelines.silver.user_agents import parse_agents

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


USERS_TABLE = "dim_users"
DEVICES_TABLE = "dim_devices"
USERS_FILE = "users.csv"
PLANS = ("free", "pro", "enterprise")
USERS_FILE_SCHEMA = pa.schema(  # the CRM export, as read (empty values null)
    [
        ("tenant_id", pa.string()),
        ("user_id", pa.string()),
        ("signup_date", pa.date32()),
        ("plan", pa.string()),
        ("country", pa.string()),
    ]
)
USERS_FILE_COLUMNS = tuple(USERS_FILE_SCHEMA.names)  # its header, in this order

USERS_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("user_key", pa.string()),
        ("signup_date", pa.date32()),
        ("plan", pa.string()),
        ("country", pa.string()),
        ("cohort_week", pa.date32()),
        ("source", pa.string()),  # file | signup_event | file+signup_event
    ]
)


class DimensionError(ValueError):
    """A dimension source is invalid; the message names the file, line and column."""


@dataclass(frozen=True)
class UsersLoad:
    tenants: list[str]
    rows: int
    from_file: int
    from_signups: int
    # tenants of the users file bronze has never seen: a typo, or a tenant that has not sent events yet
    tenants_without_events: list[str] = field(default_factory=list)


def users_path(settings: Settings) -> str:
    return Lake(settings).table("silver", USERS_TABLE)


def devices_path(settings: Settings) -> str:
    return Lake(settings).table("silver", DEVICES_TABLE)


def country_of(locale: str | None) -> str | None:
    """Region subtag of a BCP 47 locale: ``en-US`` -> ``US``, ``de`` -> None."""
    if not locale:
        return None
    parts = locale.replace("_", "-").split("-")
    region = parts[1] if len(parts) > 1 else ""
    return region.upper() if len(region) == 2 and region.isalpha() else None


def read_users_file(path: Path) -> pa.Table:
    """The CRM export as an Arrow table (``USERS_FILE_SCHEMA``; an empty value is null), validated; a bad line
    stops the load with file, line and column (no file: no rows).

    Read by Arrow's CSV reader, checked a column at a time and handed to Spark as Arrow: the export grows with
    the user base (294,019 users in the 10M-event benchmark), and as Python rows pickled to Spark one by one it
    cost the driver 204 MB, against 58 MB this way (BENCHMARKS.md, silver + gold)."""
    from pyarrow import compute as pc
    from pyarrow import csv as arrow_csv

    if not path.exists():
        return USERS_FILE_SCHEMA.empty_table()
    malformed: list[arrow_csv.InvalidRow] = []

    def note_malformed(row: arrow_csv.InvalidRow) -> str:  # too few or too many values: reported below
        malformed.append(row)
        return "skip"

    try:
        raw = arrow_csv.read_csv(
            path,
            read_options=arrow_csv.ReadOptions(use_threads=False),  # rows numbered in file order
            parse_options=arrow_csv.ParseOptions(invalid_row_handler=note_malformed),
            convert_options=arrow_csv.ConvertOptions(
                column_types=dict.fromkeys(USERS_FILE_COLUMNS, pa.string()), null_values=[""], strings_can_be_null=True
            ),
        )
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise DimensionError(f"{path}: header must be {','.join(USERS_FILE_COLUMNS)}, got nothing") from None
        raise DimensionError(f"{path}: not a readable CSV file: {exc}") from None
    if tuple(raw.column_names) != USERS_FILE_COLUMNS:
        raise DimensionError(f"{path}: header must be {','.join(USERS_FILE_COLUMNS)}, got {raw.column_names}")
    if malformed:
        row = malformed[0]
        raise DimensionError(
            f"{path}:{row.number}: expected {row.expected_columns} comma-separated values, got {row.actual_columns}"
        )
    dates = pc.strptime(raw["signup_date"], format="%Y-%m-%d", unit="s", error_is_null=True)
    present = pc.is_valid
    checks = [  # in the order a line is checked: the first failing one is reported
        ("tenant_id", pc.is_null(raw["tenant_id"]), "must not be empty"),
        ("user_id", pc.is_null(raw["user_id"]), "must not be empty"),
        (  # formatted back to compare: strptime alone would read 2025-02-30 as March 2nd and 2025-1-5 as a date
            "signup_date",
            pc.and_(
                present(raw["signup_date"]),
                pc.fill_null(pc.not_equal(pc.strftime(dates, "%Y-%m-%d"), raw["signup_date"]), True),
            ),
            "expected YYYY-MM-DD",
        ),
        (
            "plan",
            pc.and_(present(raw["plan"]), pc.invert(pc.is_in(raw["plan"], pa.array(PLANS)))),
            f"expected one of {PLANS}",
        ),
        (
            "country",
            pc.and_(present(raw["country"]), pc.invert(pc.match_substring_regex(raw["country"], "^[A-Z]{2}$"))),
            "expected an ISO 3166 alpha-2 code such as US",
        ),
    ]
    bad = reduce(pc.or_, [mask for _, mask, _ in checks])
    if pc.any(bad).as_py():
        first = pc.index(bad, True).as_py()
        column, _, why = next(check for check in checks if check[1][first].as_py())
        value = raw[column][first].as_py() or ""
        raise DimensionError(f"{path}:{first + 2}: {column}={value!r}: {why}")  # line 1 is the header
    return pa.table(
        [raw["tenant_id"], raw["user_id"], pc.cast(dates, pa.date32()), raw["plan"], raw["country"]],
        schema=USERS_FILE_SCHEMA,
    )


def signup_events(spark: SparkSession, settings: Settings, tenants: Sequence[str] | None) -> DataFrame | None:
    """Every signup event with a user id in bronze (all dates; first ingested copy), None without bronze:
    tenant_id, user_id, anonymous_id, occurred_at, event_id, plan, locale. Raw ids: joined on by Spark, never
    written or collected.

    Bronze is partitioned by event_type, so this reads only the signup partitions.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not table_exists(settings, Lake(settings).bronze_events):
        return None
    condition = "event_type = 'signup'" + ("" if tenants is None else f" AND {sql_in('tenant_id', tenants)}")
    columns = ["tenant_id", "event_id", "user_id", "anonymous_id", "occurred_at", "properties", "context"]
    columns += ["ingested_at", "topic", "partition", "offset"]
    signups = read_table(spark, settings, Lake(settings).bronze_events, condition, columns=columns)
    copies = Window.partitionBy("tenant_id", "event_id").orderBy("ingested_at", "topic", "partition", "offset")
    return (
        signups.filter(F.col("user_id").isNotNull())
        .withColumn("_copy", F.row_number().over(copies))
        .filter("_copy = 1")
        .select(
            "tenant_id",
            "user_id",
            "anonymous_id",
            "occurred_at",
            "event_id",
            F.get_json_object("properties", "$.plan").alias("plan"),
            F.get_json_object("context", "$.locale").alias("locale"),
        )
    )


def identity_map(spark: SparkSession, signups: DataFrame | None) -> DataFrame:
    """(tenant_id, anonymous_id, stitched_user_id, signed_up_at): the user each anonymous visitor became at its
    earliest signup (several signups of one anonymous id: the earliest wins)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    schema = "tenant_id string, anonymous_id string, stitched_user_id string, signed_up_at timestamp"
    if signups is None:
        return local_frame(spark, [], schema)
    earliest = Window.partitionBy("tenant_id", "anonymous_id").orderBy("occurred_at", "event_id")
    return (
        signups.where(F.col("anonymous_id").isNotNull())
        .withColumn("_n", F.row_number().over(earliest))
        .where("_n = 1")
        .select(
            "tenant_id",
            "anonymous_id",
            F.col("user_id").alias("stitched_user_id"),
            F.col("occurred_at").alias("signed_up_at"),
        )
    )


def _country(locale: Column) -> Column:
    """:func:`country_of` as a Spark expression."""
    from pyspark.sql import functions as F

    region = F.try_element_at(F.split(F.regexp_replace(locale, "_", "-"), "-"), F.lit(2))
    return F.when(region.rlike("^[A-Za-z]{2}$"), F.upper(region))


def users_frame(spark: SparkSession, key: bytes, file_rows: pa.Table, signups: DataFrame | None) -> DataFrame:
    """``silver.dim_users`` rows: both sources merged per (tenant, user) - file values win, the user's earliest
    signup event fills the gaps - keyed by the user's pseudonym. Runs in Spark: however many users signed up,
    the driver holds only the CRM file (``read_users_file``'s table)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    file_schema = from_arrow_schema(USERS_FILE_SCHEMA)
    from_file = spark.createDataFrame(file_rows, file_schema).withColumn("_in_file", F.lit(True))
    if signups is None:
        from_events = local_frame(spark, [], file_schema)
    else:
        earliest = Window.partitionBy("tenant_id", "user_id").orderBy("occurred_at", "event_id")
        from_events = (
            signups.withColumn("_n", F.row_number().over(earliest))
            .where("_n = 1")
            .select(
                "tenant_id",
                "user_id",
                F.to_date("occurred_at").alias("signup_date"),
                "plan",
                _country(F.col("locale")).alias("country"),
            )
        )
    from_events = from_events.withColumn("_in_events", F.lit(True))
    merged = from_file.alias("f").join(from_events.alias("e"), ["tenant_id", "user_id"], "full_outer")
    in_file, in_events = F.col("_in_file").isNotNull(), F.col("_in_events").isNotNull()
    pseudonymizer = SparkPseudonymizer(spark, key)
    users = pseudonymizer.attach(
        merged.select(
            "tenant_id",
            "user_id",
            *[F.coalesce(f"f.{c}", f"e.{c}").alias(c) for c in ("signup_date", "plan", "country")],
            F.when(in_file & in_events, "file+signup_event")
            .when(in_file, "file")
            .otherwise("signup_event")
            .alias("source"),
        )
    )
    return pseudonymizer.detach(
        users.withColumns(
            {
                "user_key": pseudonymizer.column(F.col("tenant_id"), F.col("user_id")),
                "cohort_week": F.to_date(F.date_trunc("week", "signup_date")),  # Monday of the signup week
            }
        )
    ).select(*USERS_SCHEMA.names)


def load_users(
    spark: SparkSession,
    settings: Settings,
    key: bytes,
    tenants: Sequence[str] | None = None,
    signups: DataFrame | None = None,
) -> UsersLoad:
    """Rebuild ``silver.dim_users`` for ``tenants`` (None: every tenant) in one atomic commit.

    ``signups``: the tenants' signup events (:func:`signup_events`; read from bronze when not given)."""
    from pyarrow import compute as pc
    from pyspark.sql import functions as F

    users_file = Path(settings.resolve_path(settings.silver.dimensions_dir)) / USERS_FILE
    file_rows = read_users_file(users_file)
    bronze = Lake(settings).bronze_events
    has_bronze = table_exists(settings, bronze)
    known = known_tenants(settings, bronze) if has_bronze else []
    if has_bronze:
        tenants = check_tenants(tenants, known, "bronze.events")
    file_tenants = set(file_rows["tenant_id"].unique().to_pylist())
    without_events = sorted(file_tenants - set(known)) if has_bronze else []
    if tenants is not None:
        file_rows = file_rows.filter(pc.is_in(file_rows["tenant_id"], pa.array(sorted(tenants), pa.string())))
    if signups is None:
        signups = signup_events(spark, settings, tenants)
    path = users_path(settings)
    frame = users_frame(spark, key, file_rows, signups).persist()
    try:
        writer = (
            frame.write.format("delta")
            .mode("overwrite")
            .partitionBy(*table("silver", USERS_TABLE).partitioned_by)
            .option("userMetadata", "dimensions load users")
        )
        if tenants is None:
            writer = writer.option("overwriteSchema", "true")  # every tenant: the whole table, current definition
        else:
            writer = writer.option("replaceWhere", sql_in("tenant_id", tenants))  # only the loaded tenants
        writer.save(path)
        summary = frame.groupBy("tenant_id").agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(F.col("source").contains("file").cast("long")).alias("from_file"),
            F.sum(F.col("source").contains("signup_event").cast("long")).alias("from_signups"),
        )
        per_tenant = summary.collect()  # one row per tenant
    finally:
        frame.unpersist()
    register_table(spark, settings, path)
    return UsersLoad(
        sorted({row["tenant_id"] for row in per_tenant} | set(tenants or ())),
        sum(row["rows"] for row in per_tenant),
        sum(row["from_file"] for row in per_tenant),
        sum(row["from_signups"] for row in per_tenant),
        without_events,
    )


def read_users(spark: SparkSession, settings: Settings, tenants: Sequence[str] | None) -> DataFrame:
    return read_table(spark, settings, users_path(settings), None if tenants is None else sql_in("tenant_id", tenants))


# --- devices ------------------------------------------------------------------------------------------


def refresh_devices(spark: SparkSession, settings: Settings, user_agents: DataFrame, key: bytes) -> int:
    """Parse the agents of ``user_agents`` (one string column) not yet in ``silver.dim_devices``; insert them.

    The table holds each agent's keyed pseudonym (``USER_AGENT_NAMESPACE``) and what the parser derived from it,
    never the agent itself: a user agent is a fingerprint. A table of the earlier layout (raw agents) is
    replaced - it is a cache of the parser's answers, rebuilt from bronze.
    """
    from pyspark.sql import functions as F

    from pipelines.platform import tables

    path = devices_path(settings)
    pseudonymizer = SparkPseudonymizer(spark, key)
    candidates = user_agents.toDF("user_agent").where("user_agent IS NOT NULL").distinct()
    candidates = pseudonymizer.detach(
        pseudonymizer.attach(candidates).withColumn(
            "user_agent_key", pseudonymizer.column(F.lit(USER_AGENT_NAMESPACE), F.col("user_agent"))
        )
    )
    exists = table_exists(settings, path)
    if exists and "user_agent_key" not in read_table(spark, settings, path).columns:
        exists = False  # the earlier layout stored raw agents: rebuild
        mode = "overwrite"
    else:
        mode = "append"
    if exists:
        known = read_table(spark, settings, path).select("user_agent_key")
        candidates = candidates.join(known, "user_agent_key", "left_anti")
    agents = candidates.select("user_agent_key", "user_agent").toArrow()
    if agents.num_rows == 0:
        return 0
    new = parse_agents(agents)
    if exists:
        tables.merge(spark, path, new, "t.user_agent_key = s.user_agent_key", update=False)
    else:  # the first run creates the table with its rows (a racing first run may add the same agents)
        frame = spark.createDataFrame(new)
        frame.write.format("delta").mode(mode).option("overwriteSchema", "true").save(path)
    register_table(spark, settings, path)
    return new.num_rows


def read_devices(spark: SparkSession, settings: Settings) -> DataFrame | None:
    path = devices_path(settings)
    if not table_exists(settings, path):
        return None
    return read_table(spark, settings, path).dropDuplicates(["user_agent_key"])


# --- the shipped CRM sample -----------------------------------------------------------------------------

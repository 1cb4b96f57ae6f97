"""``erase``: remove one person's data from every table (GDPR/CCPA), then rebuild the gold days they counted in.

A request names a tenant and the person's ``user_id`` or ``anonymous_id`` as producers sent them. The person is:

- that user id, plus every anonymous id silver stitched to it (the visitor they were before signing up), or
- that anonymous id alone.

Their rows go, in this order (each delete is one Delta commit; a failure leaves the request ``failed`` and a
rerun finishes it - deleting absent rows is a no-op):

1. ``bronze.events``: rows with those ids (raw ids: bronze is the only layer holding them);
2. ``bronze.quarantine``: messages whose raw bytes carry one of the ids as a JSON string (their fields may not
   parse, so the bytes are searched);
3. ``silver.events`` and ``silver.quarantine``: the person's events (by event id, as found in bronze) and every
   row of their pseudonym;
4. ``silver.dim_users``: the person's row;
5. gold: the tenant's days the person had events on, and the 27 days after them (rolling WAU/MAU), rebuilt
   from the remaining silver through the gates;
6. vacuum of the touched tables with ``maintenance.vacuum_retention_hours`` (by default the tables' 7 days:
   the deleted rows stay readable by time travel until then, and the next maintenance run removes the files).

Every request is recorded in ``ops.erasure_requests`` with its outcome and the rows deleted per table.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from pipelines.config import Settings
from pipelines.platform.batch import sql_in, sql_string, table_exists
from pipelines.platform.lake import Lake
from pipelines.platform.spark import local_frame

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REQUESTS_TABLE = ("ops", "erasure_requests")
REQUESTS_SCHEMA = (
    "request_id string, tenant_id string, identity_kind string, status string, rows_deleted string, "
    "gold_days_rebuilt long, error string, requested_at timestamp, completed_at timestamp"
)
ROLLING_DAYS_AFTER = 27  # gold's MAU window (28 days) reaches this far past a day


class ErasureError(ValueError):
    """The request cannot be served as given (no identity, unknown tenant); nothing was deleted."""


@dataclass
class ErasureResult:
    request_id: str
    tenant_id: str
    rows_deleted: dict[str, int] = field(default_factory=dict)
    gold_days: list[date] = field(default_factory=list)
    seconds: float = 0.0


def erase(
    spark: SparkSession,
    settings: Settings,
    tenant_id: str,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ErasureResult:
    """Delete the person from every table and rebuild the gold days they counted in; record the request."""
    if bool(user_id) == bool(anonymous_id):
        raise ErasureError("an erasure names exactly one of --user-id and --anonymous-id")
    say = progress or (lambda _message: None)
    requested_at = datetime.now(UTC)
    result = ErasureResult(uuid.uuid4().hex, tenant_id)
    started = time.monotonic()
    kind = "user_id" if user_id else "anonymous_id"
    try:
        _erase(spark, settings, result, user_id, anonymous_id, say)
    except Exception as exc:
        _record(spark, settings, result, kind, "failed", f"{type(exc).__name__}: {exc}"[:2000], requested_at)
        raise
    result.seconds = round(time.monotonic() - started, 1)
    _record(spark, settings, result, kind, "done", None, requested_at)
    return result


def _erase(
    spark: SparkSession,
    settings: Settings,
    result: ErasureResult,
    user_id: str | None,
    anonymous_id: str | None,
    say: Callable[[str], None],
) -> None:
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from pipelines import gold, silver
    from pipelines.platform.batch import known_tenants
    from pipelines.platform.tables import vacuum
    from pipelines.silver.dimensions import identity_map, signup_events, users_path
    from pipelines.silver.pii import hmac_key, pseudonym

    lake, tenant = Lake(settings), result.tenant_id
    if not table_exists(settings, lake.bronze_events):
        raise ErasureError(f"no bronze table at {lake.bronze_events}")
    if tenant not in known_tenants(settings, lake.bronze_events):
        raise ErasureError(f"tenant {tenant!r} has no rows in bronze.events")

    # Who: the user and the visitors stitched to them (silver's rule), or one visitor.
    user_ids = [user_id] if user_id else []
    anonymous_ids = [anonymous_id] if anonymous_id else []
    if user_id:
        stitched = identity_map(spark, signup_events(spark, settings, [tenant])).where(
            F.col("stitched_user_id") == user_id
        )
        anonymous_ids += [row.anonymous_id for row in stitched.select("anonymous_id").collect()]
    tenant_is = f"tenant_id = {sql_string(tenant)}"
    person = " OR ".join(
        part
        for part in (
            sql_in("user_id", user_ids) if user_ids else "",
            sql_in("anonymous_id", anonymous_ids) if anonymous_ids else "",
        )
        if part
    )
    bronze = DeltaTable.forPath(spark, lake.bronze_events)
    events = bronze.toDF().where(f"{tenant_is} AND ({person})").select("event_id", "event_date").distinct()
    events = events.collect()  # one person's events: small
    event_ids = sorted({row.event_id for row in events})
    days = sorted({row.event_date for row in events})
    say(f"{len(event_ids)} event(s) of the person in bronze over {len(days)} day(s)")

    def deleted(table) -> int:  # the rows the table's last commit (our delete) removed
        metrics = table.history(1).first()["operationMetrics"] or {}
        return int(metrics.get("numDeletedRows", 0))

    bronze.delete(f"{tenant_is} AND ({person})")
    result.rows_deleted["bronze.events"] = deleted(bronze)

    if table_exists(settings, lake.bronze_quarantine):
        quarantine = DeltaTable.forPath(spark, lake.bronze_quarantine)
        needles = [json.dumps(value) for value in (*user_ids, *anonymous_ids)]  # "id" with its JSON quotes
        carries = " OR ".join(f"instr(CAST(raw_value AS STRING), {sql_string(n)}) > 0" for n in needles)
        quarantine.delete(f"({tenant_is} OR tenant_id IS NULL) AND ({carries})")
        result.rows_deleted["bronze.quarantine"] = deleted(quarantine)

    key = hmac_key(settings)
    keys = [pseudonym(key, tenant, value) for value in (*user_ids, *anonymous_ids)]
    silver_days: set[date] = set(days)
    silver_tables = {
        "silver.events": silver.events_path(settings),
        "silver.quarantine": silver.quarantine_path(settings),
    }
    for name, path in silver_tables.items():
        if not table_exists(settings, path):
            continue
        table = DeltaTable.forPath(spark, path)
        mine = f"{tenant_is} AND ({sql_in('user_key', keys)}"
        mine += f" OR {sql_in('event_id', event_ids)})" if event_ids else ")"
        silver_days |= {row.event_date for row in table.toDF().where(mine).select("event_date").distinct().collect()}
        table.delete(mine)
        result.rows_deleted[name] = deleted(table)

    if table_exists(settings, users_path(settings)):
        users = DeltaTable.forPath(spark, users_path(settings))
        users.delete(f"{tenant_is} AND {sql_in('user_key', keys)}")
        result.rows_deleted["silver.dim_users"] = deleted(users)
    say(f"deleted: {result.rows_deleted}")

    if silver_days and table_exists(settings, gold.table_path(settings, "daily_active_users")):
        newest = spark.read.format("delta").load(silver.events_path(settings)).where(tenant_is)
        newest_day = newest.agg(F.max("event_date")).first()[0] or max(silver_days)
        first = min(silver_days)
        last = min(max(silver_days) + timedelta(days=ROLLING_DAYS_AFTER), max(newest_day, max(silver_days)))
        say(f"rebuilding gold for {tenant} {first}..{last}")
        gold.build(spark, settings, first, last, [tenant], lookback=False, progress=say)
        result.gold_days = [first + timedelta(days=n) for n in range((last - first).days + 1)]

    hours = settings.maintenance.vacuum_retention_hours
    for path in (lake.bronze_events, lake.bronze_quarantine, silver.events_path(settings), users_path(settings)):
        if table_exists(settings, path):
            vacuum(spark, path, retention_hours=hours, dry_run=False)


def _record(
    spark: SparkSession,
    settings: Settings,
    result: ErasureResult,
    kind: str,
    status: str,
    error: str | None,
    requested_at: datetime,
) -> None:
    """One row in ops.erasure_requests: who (tenant and the kind of id, never the id), outcome, counts."""
    from pipelines.platform.batch import register_table

    row = (
        result.request_id,
        result.tenant_id,
        kind,
        status,
        json.dumps(result.rows_deleted, sort_keys=True),
        len(result.gold_days),
        error,
        requested_at,
        datetime.now(UTC),
    )
    path = Lake(settings).table(*REQUESTS_TABLE)
    local_frame(spark, [row], REQUESTS_SCHEMA).write.format("delta").mode("append").save(path)
    register_table(spark, settings, path)

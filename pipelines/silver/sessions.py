"""Sessionization: activity blocks per user and the session id of each event (rules: pipelines.silver docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.silver.model import MACHINE_EVENT_TYPES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

DERIVED_SESSION_PREFIX = "ds_"


def sessionize(df: DataFrame, session_timeout_minutes: int) -> DataFrame:
    """``_session`` and ``session_is_derived`` (pipelines.silver docstring) from two passes over one window order.

    Pass 1 numbers each user's events and finds block starts (gap > timeout); pass 2 takes, per event, the
    last block start and last given session id up to it, the first given session id from it on and the next
    block start after it. A given id is "in my block" when its position lies between the block boundaries.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    timeout_us = session_timeout_minutes * 60 * 1_000_000
    by_user = Window.partitionBy("tenant_id", "user_key").orderBy("occurred_at", "event_id")
    micros = F.unix_micros("occurred_at")
    gap = micros - F.lag(micros).over(by_user)
    df = df.withColumns({"_new_block": gap.isNull() | (gap > timeout_us), "_pos": F.row_number().over(by_user)})
    given = F.when(F.col("session_id").isNotNull(), F.struct(F.col("_pos").alias("pos"), F.col("session_id")))
    block_start = F.when(F.col("_new_block"), F.struct(F.col("_pos").alias("pos"), F.col("event_id")))
    df = df.withColumns(
        {
            "_block_start": F.last(block_start, ignorenulls=True).over(
                by_user.rowsBetween(Window.unboundedPreceding, Window.currentRow)
            ),
            "_earlier": F.last(given, ignorenulls=True).over(
                by_user.rowsBetween(Window.unboundedPreceding, Window.currentRow)
            ),
            "_later": F.first(given, ignorenulls=True).over(
                by_user.rowsBetween(Window.currentRow, Window.unboundedFollowing)
            ),
            "_next_block": F.first(F.when(F.col("_new_block"), F.col("_pos")), ignorenulls=True).over(
                by_user.rowsBetween(1, Window.unboundedFollowing)
            ),
        }
    )
    earlier = F.when(F.col("_earlier.pos") >= F.col("_block_start.pos"), F.col("_earlier.session_id"))
    later = F.when(
        F.col("_next_block").isNull() | (F.col("_later.pos") < F.col("_next_block")), F.col("_later.session_id")
    )
    derived = F.concat(
        F.lit(DERIVED_SESSION_PREFIX),
        F.substring(F.sha2(F.concat_ws(":", "tenant_id", "user_key", "_block_start.event_id"), 256), 1, 32),
    )
    machine = F.col("event_type").isin(*MACHINE_EVENT_TYPES)
    return df.withColumns(
        {
            "_session": F.when(machine, F.lit(None).cast("string")).otherwise(
                F.coalesce("session_id", earlier, later, derived)
            ),
            "session_is_derived": ~machine & F.col("session_id").isNull(),
        }
    ).drop("_new_block", "_pos", "_block_start", "_earlier", "_later", "_next_block")

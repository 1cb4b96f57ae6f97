"""Dedup: which bronze rows are later copies of an event (the rule is in the pipelines.silver docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def later_copies(keys: DataFrame, horizon_days: int) -> DataFrame:
    """Kafka coordinates (topic, partition, offset) of the bronze rows dedup drops: copies of a (tenant_id,
    event_id) with an earlier-ingested copy that occurred at most ``horizon_days`` apart.

    ``keys`` holds the key columns of every bronze row within the horizon of the rows being judged. Only ids
    seen more than once are compared pairwise, so the work beyond one aggregation scales with the duplicates.
    """
    from pyspark.sql import functions as F

    key = ["tenant_id", "event_id"]
    order = ["ingested_at", "topic", "partition", "offset"]
    copies = keys.select(*key, "occurred_at", *order)
    repeated = copies.groupBy(*key).count().where("count > 1").drop("count")
    copies = copies.join(repeated, key, "left_semi")
    later, earlier = copies.alias("later"), copies.alias("earlier")
    pairs = later.join(
        earlier,
        [F.col(f"later.{c}") == F.col(f"earlier.{c}") for c in key]
        + [
            F.struct(*[F.col(f"earlier.{c}") for c in order]) < F.struct(*[F.col(f"later.{c}") for c in order]),
            F.abs(F.unix_micros(F.col("later.occurred_at")) - F.unix_micros(F.col("earlier.occurred_at")))
            <= horizon_days * 86_400_000_000,
        ],
    )
    return pairs.select("later.topic", "later.partition", "later.offset").distinct()

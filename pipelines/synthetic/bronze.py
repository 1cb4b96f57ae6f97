"""Bronze rows straight from events, without Kafka: fixtures for the batch layers' tests and benchmarks.

The streaming bronze job is the real producer of ``bronze.events``; silver and gold only depend on the
table contract (:data:`pipelines.platform.registry.BRONZE_EVENTS_SCHEMA`), so their tests write that contract directly
with a Spark Delta write. Values follow bronze's rules: ``properties``/``context`` are compact JSON with
sorted keys, ``event_date`` is the UTC date of ``occurred_at``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines.platform.registry import BRONZE_EVENTS_SCHEMA
from pipelines.platform.registry import table as declared_table
from pipelines.synthetic.generator import GeneratedMessage

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _timestamp(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def bronze_row(
    event: Mapping[str, Any],
    ingested_at: str | datetime,
    topic: str = "events",
    partition: int = 0,
    offset: int = 0,
    raw_value: bytes | None = None,
) -> dict[str, Any]:
    """One bronze.events row for an event envelope (dict as on the wire) delivered at ``ingested_at``."""
    occurred = _timestamp(event["occurred_at"])
    ingested = _timestamp(ingested_at)
    return {
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "version": event["version"],
        "occurred_at": occurred,
        "tenant_id": event["tenant_id"],
        "user_id": event.get("user_id"),
        "anonymous_id": event.get("anonymous_id"),
        "session_id": event.get("session_id"),
        "properties": _json(event.get("properties") or {}),
        "context": _json(event.get("context")),
        "trace_id": event.get("trace_id"),
        "raw_value": raw_value if raw_value is not None else json.dumps(dict(event), sort_keys=True).encode(),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "kafka_timestamp": ingested,
        "ingested_at": ingested,
        "event_date": occurred.date(),
    }


def bronze_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=BRONZE_EVENTS_SCHEMA)


def bronze_rows_from_generated(
    messages: Iterable[GeneratedMessage], partitions: int = 4, offsets: dict[tuple[str, int], int] | None = None
) -> list[dict[str, Any]]:
    """What bronze would hold for a generated stream: every valid and duplicate message, none of the malformed.

    Kafka coordinates: partition from the key's CRC32 (stable), offsets counted per topic and partition in
    publish order; ingested one second after publishing. ``offsets``: the next offset per (topic, partition),
    updated in place - pass the same dict for every chunk of one stream. Coordinates must be unique as in
    Kafka: dedup names the copies it drops by them, so chunks that all start at offset 0 would make it drop
    rows of other chunks that share a duplicate's coordinates.
    """
    offsets = {} if offsets is None else offsets
    rows = []
    for message in messages:
        if message.kind == "malformed":
            continue
        partition = zlib.crc32(message.key or b"") % partitions
        offset = offsets.get((message.topic, partition), 0)
        offsets[(message.topic, partition)] = offset + 1
        ingested = datetime.fromtimestamp(message.publish_time_ms / 1000, UTC) + timedelta(seconds=1)
        event = json.loads(message.value)
        headers = dict(message.headers)
        event["trace_id"] = headers.get("trace_id", b"").decode() or None
        rows.append(bronze_row(event, ingested, message.topic, partition, offset, message.value))
    return rows


def write_bronze(spark: SparkSession, path: str, table: pa.Table, mode: str = "append") -> None:
    """Write (append) rows to bronze.events with its partitioning, in one Delta commit.

    The Arrow table is cast to :data:`BRONZE_EVENTS_SCHEMA` first, so the Spark columns are exactly the
    contract's: UTC timestamps, ``event_date`` date, ``version``/``partition`` int, ``raw_value`` binary.
    Laid out as the bronze stream writes a micro-batch: one file per partition (Spark's Arrow slices would
    otherwise write a file per slice and partition - some 20 times as many small files for a million rows).
    """
    partitioned_by = declared_table("bronze", "events").partitioned_by
    frame = spark.createDataFrame(table.select(BRONZE_EVENTS_SCHEMA.names).cast(BRONZE_EVENTS_SCHEMA))
    frame.repartition(*partitioned_by).write.format("delta").mode(mode).partitionBy(*partitioned_by).save(path)

"""Parsing of Kafka rows on the executors: validate each message and route it to bronze.events or quarantine.

Runs inside ``mapInArrow`` (see ``pipelines.bronze.ingest.BatchWriter``): Spark pickles ``make_parser``'s
function with the registry and limits it closes over, and the executors import what it calls (``parse_batch``
and its helpers) from this module, so those stay module-level here. Routing is a pure function of the batch and
its timestamp, so a replayed batch routes the same way.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa

from pipelines.config import Settings
from pipelines.contracts.events import HEADER_TRACE_ID, HEADER_TRACEPARENT, trace_id_of
from pipelines.contracts.registry import SchemaRegistry, Violation
from pipelines.platform.registry import BRONZE_EVENTS_SCHEMA, BRONZE_QUARANTINE_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

ROUTE = "_route"
ROUTE_EVENT = "event"
ROUTE_QUARANTINE = "quarantine"
INGESTED_AT = "ingested_at"  # added to the Kafka rows: the micro-batch's timestamp from the offset log

# What the executors emit: one row per Kafka message, with the columns of both tables.
_QUARANTINE_ONLY = [f for f in BRONZE_QUARANTINE_SCHEMA if f.name not in BRONZE_EVENTS_SCHEMA.names]
PARSED_SCHEMA = pa.schema([pa.field(ROUTE, pa.string()), *BRONZE_EVENTS_SCHEMA, *_QUARANTINE_ONLY])


@dataclass(frozen=True)
class TimestampLimits:
    """Events whose occurred_at is absurd relative to ingest time are quarantined, not stored."""

    max_age: dt.timedelta
    max_future_skew: dt.timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> TimestampLimits:
        return cls(
            dt.timedelta(days=settings.bronze.max_event_age_days),
            dt.timedelta(minutes=settings.bronze.max_future_skew_minutes),
        )


_SORTED_JSON = msgspec.json.Encoder(order="sorted")
_NON_FINITE = (b"NaN", b"Infinity")  # json-only literals; msgspec would write null


def _json_or_none(value: Any, raw: bytes) -> str | None:
    """Compact sorted-key JSON of a parsed sub-document (msgspec: ~5x json.dumps on this hot path).

    Same JSON values as ``json.dumps(sort_keys=True)``; float spelling can differ (1e16 vs 1e+16).
    Messages with NaN/Infinity literals or unencodable strings (lone surrogates) take json.dumps.
    """
    if value is None:
        return None
    if not any(literal in raw for literal in _NON_FINITE):
        try:
            return _SORTED_JSON.encode(value).decode()
        except (msgspec.EncodeError, UnicodeEncodeError, OverflowError, TypeError):
            pass
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _headers_json(headers: list[dict[str, Any]] | None) -> str | None:
    if not headers:
        return None
    return json.dumps(
        [
            {"key": h["key"], "value": None if h["value"] is None else h["value"].decode("utf-8", "backslashreplace")}
            for h in headers
        ],
        ensure_ascii=False,
    )


def _trace_id(headers: list[dict[str, Any]] | None) -> str | None:
    """The message's ``trace_id`` header, else the trace id of its W3C ``traceparent`` (producers instrumented
    with OpenTelemetry but not with our producer send only that), else None."""
    found = None
    for header in headers or ():
        if header["value"] is None:
            continue
        if header["key"] == HEADER_TRACE_ID:
            return header["value"].decode("utf-8", "replace")
        if header["key"] == HEADER_TRACEPARENT:
            found = trace_id_of(header["value"].decode("utf-8", "replace"))
    return found


def _parse_occurred_at(text: str) -> dt.datetime:
    # The registry already checked RFC 3339 and UTC; fromisoformat handles "Z" and "+00:00".
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def _summary(violations: list[Violation]) -> str:
    first = violations[0]
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"{first.path}: {first.message}{more}"


def make_parser(
    registry: SchemaRegistry, limits: TimestampLimits
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function of one micro-batch: Kafka rows in, routed rows with both tables' columns out."""

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        freeze_worker_heap()
        for batch in batches:
            yield parse_batch(batch, registry, limits)

    return parse


def freeze_worker_heap() -> None:
    """Keep the objects alive at a Python worker's first parse out of the collections it runs after every task.

    PySpark's reused workers call ``gc.collect()`` after each task (``pyspark/daemon.py``): in a worker that has
    parsed (pyarrow, msgspec, jsonschema, pydantic imported) that walks some 75,000 objects, 20 ms of CPU per task,
    and a micro-batch runs a task per Kafka partition. ``gc.freeze`` moves them to a generation the collector skips
    (modules, classes and functions that live as long as the worker anyway); what later tasks allocate is still
    collected. Once per process, the first time a task parses: the frozen count says whether it happened.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()


def parse_batch(batch: pa.RecordBatch, registry: SchemaRegistry, limits: TimestampLimits) -> pa.RecordBatch:
    """Validate every message of one Arrow batch of Kafka rows; never drops a row.

    The rows carry the micro-batch's timestamp in ``ingested_at`` (one value for the whole batch, from the
    offset log): the reference time of the timestamp limits.
    """
    if batch.num_rows == 0:
        return pa.RecordBatch.from_pylist([], schema=PARSED_SCHEMA)
    ingested = batch.column(INGESTED_AT).cast(pa.timestamp("us", tz="UTC"))
    ingested_at = ingested[0].as_py()
    values = batch.column("value").to_pylist()
    keys = batch.column("key").to_pylist()
    headers = batch.column("headers").to_pylist()
    oldest, newest = ingested_at - limits.max_age, ingested_at + limits.max_future_skew
    columns: dict[str, list[Any]] = {name: [] for name in PARSED_SCHEMA.names}
    for index, value in enumerate(values):
        violations: list[Violation]
        event: dict[str, Any] | None = None
        if value is None:
            violations = [Violation("$", "message has no value (null or tombstone)")]
        else:
            event, violations = registry.validate_json(value)
        occurred = None
        if event is not None and not violations:
            occurred = _parse_occurred_at(event["occurred_at"])
            if occurred < oldest:
                violations = [Violation("$.occurred_at", f"absurd timestamp: older than {limits.max_age.days} days")]
            elif occurred > newest:
                violations = [Violation("$.occurred_at", f"absurd timestamp: more than {limits.max_future_skew} ahead")]
        row_headers = headers[index]
        if violations:
            best = event if isinstance(event, dict) else {}
            event_type, tenant = best.get("event_type"), best.get("tenant_id")
            _append_quarantine(
                columns,
                key=keys[index],
                headers=_headers_json(row_headers),
                errors=json.dumps([{"path": v.path, "message": v.message} for v in violations], ensure_ascii=False),
                summary=_summary(violations),
                event_type=event_type if isinstance(event_type, str) else None,
                tenant=tenant if isinstance(tenant, str) else None,
                ingest_date=ingested_at.date(),
            )
        else:
            assert event is not None and occurred is not None
            _append_event(columns, event, occurred, value, _trace_id(row_headers))
    coordinates = {
        "topic": batch.column("topic"),
        "partition": batch.column("partition"),
        "offset": batch.column("offset"),
        "kafka_timestamp": batch.column("timestamp").cast(pa.timestamp("us", tz="UTC")),
        "raw_value": batch.column("value"),  # every row keeps its bytes as received, in either table
        "ingested_at": ingested,
    }
    arrays = [
        coordinates[field.name].cast(field.type)
        if field.name in coordinates
        else pa.array(columns[field.name], type=field.type)
        for field in PARSED_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=PARSED_SCHEMA)


_EVENT_FIELDS = ("event_id", "event_type", "version", "tenant_id", "user_id", "anonymous_id", "session_id")


def _append_event(
    columns: dict[str, list[Any]], event: dict[str, Any], occurred: dt.datetime, raw: bytes, trace_id: str | None
) -> None:
    columns[ROUTE].append(ROUTE_EVENT)
    for name in _EVENT_FIELDS:
        columns[name].append(event.get(name))
    columns["occurred_at"].append(occurred)
    columns["event_date"].append(occurred.date())
    columns["properties"].append(_json_or_none(event.get("properties"), raw))
    columns["context"].append(_json_or_none(event.get("context"), raw))
    columns["trace_id"].append(trace_id)
    for name in ("raw_key", "headers", "errors", "error_summary", "ingest_date"):
        columns[name].append(None)


def _append_quarantine(columns: dict[str, list[Any]], **row: Any) -> None:
    columns[ROUTE].append(ROUTE_QUARANTINE)
    for name in (*_EVENT_FIELDS, "occurred_at", "event_date", "properties", "context", "trace_id"):
        columns[name].append(None)
    columns["event_type"][-1] = row["event_type"]
    columns["tenant_id"][-1] = row["tenant"]
    columns["raw_key"].append(row["key"])
    columns["headers"].append(row["headers"])
    columns["errors"].append(row["errors"])
    columns["error_summary"].append(row["summary"])
    columns["ingest_date"].append(row["ingest_date"])


def _spark_schema(schema: pa.Schema) -> StructType:
    """Spark's struct type for one of bronze's Arrow schemas (``mapInArrow`` output, ``createDataFrame`` rows)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)

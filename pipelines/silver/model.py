"""The silver.events table model: its partitions and columns, the typed property columns and the one struct every
property document is parsed into; the bronze columns a build reads; where silver's tables live in the lake."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.config import Settings
from pipelines.contracts.registry import SchemaRegistry
from pipelines.platform.batch import BatchJobError
from pipelines.platform.lake import Lake
from pipelines.platform.registry import table

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructType

EVENTS_TABLE = "events"
PARTITIONS = table("silver", "events").partitioned_by
BRONZE_KEY_COLUMNS = ("tenant_id", "event_id", "topic", "partition", "offset")  # an event and its Kafka copy
MACHINE_EVENT_TYPES = ("system_alert",)
# Typed columns: column -> property. Values pass through the property's PII action; page_url loses its query.
TYPED_PROPERTIES = {
    "page_url": "url",
    "page_type": "page_type",
    "product_id": "product_id",
    "category": "category",
    "price": "price",
    "order_id": "order_id",
    "amount": "amount",
    "discount_amount": "discount_amount",
    "currency": "currency",
    "quantity": "quantity",
    "item_count": "item_count",
    "plan": "plan",
    "method": "method",
    "payment_method": "payment_method",
    "severity": "severity",
    "component": "component",
}
COLUMNS = (
    "event_id",
    "event_type",
    "version",
    "source_version",
    "occurred_at",
    "event_date",
    "tenant_id",
    "user_key",
    "is_identified",
    "session_id",
    "session_is_derived",
    *TYPED_PROPERTIES,
    "properties",
    "device_class",
    "os_family",
    "browser_family",
    "locale",
    "ip_prefix",
    "app_version",
    "user_signup_date",
    "user_plan",
    "user_country",
    "user_cohort_week",
    "trace_id",
    "ingested_at",
    "bronze_topic",
    "bronze_partition",
    "bronze_offset",
)
# The bronze columns transform() reads (raw_value, the largest, is never needed: parquet skips it).
BRONZE_INPUT_COLUMNS = (
    "event_id",
    "event_type",
    "version",
    "occurred_at",
    "tenant_id",
    "user_id",
    "anonymous_id",
    "session_id",
    "properties",
    "context",
    "trace_id",
    "topic",
    "partition",
    "offset",
    "ingested_at",
    "event_date",
)


def events_path(settings: Settings) -> str:
    return Lake(settings).table("silver", EVENTS_TABLE)


def quarantine_path(settings: Settings) -> str:
    return Lake(settings).table("silver", "quarantine")


def property_struct(registry: SchemaRegistry) -> StructType:
    """One struct with every property of every registered type and version (sorted), typed from the schemas.

    ``from_json`` into it types the values; ``to_json`` of it writes back only the non-null ones.
    """
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType

    json_types: dict[str, DataType] = {
        "string": StringType(),
        "number": DoubleType(),
        "integer": LongType(),
        "boolean": BooleanType(),
    }
    fields: dict[str, DataType] = {}
    for event_type in registry.event_types:
        for version in registry.versions(event_type):
            for name, spec in registry.properties_schema(event_type, version).get("properties", {}).items():
                declared = spec.get("type", "string")
                kinds = [k for k in (declared if isinstance(declared, list) else [declared]) if k != "null"]
                data_type = json_types.get(kinds[0], StringType()) if len(kinds) == 1 else StringType()
                known = fields.get(name)
                if known is None or known == data_type:
                    fields[name] = data_type
                elif {known.simpleString(), data_type.simpleString()} == {"bigint", "double"}:
                    fields[name] = DoubleType()
                else:
                    raise BatchJobError(
                        f"property {name!r} has type {known.simpleString()} in one schema and "
                        f"{data_type.simpleString()} in {event_type} v{version}; silver needs one type per name"
                    )
    return StructType([StructField(name, fields[name]) for name in sorted(fields)])

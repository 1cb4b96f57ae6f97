"""The event contract: what a valid event is, how it travels on Kafka, and how its schemas may evolve.

* ``registry``      - loads ``conf/schemas`` into a ``SchemaRegistry`` that validates events and words violations;
* ``validation``    - the fast ``jsonschema_rs`` path and JSON parsing that never disagree with the reference;
* ``compatibility`` - the backward-compatibility check between consecutive versions of an event type;
* ``events``        - the wire format of an event as a Kafka message: key, headers and JSON encoding.
"""

from pipelines.contracts.compatibility import CompatibilityIssue, check_compatibility, check_schema_pair
from pipelines.contracts.events import HEADER_TRACE_ID, encode_event, message_headers, message_key
from pipelines.contracts.registry import (
    DRAFT_2020_12,
    ENVELOPE_FILE,
    SchemaRegistry,
    SchemaRegistryError,
    UnknownSchemaError,
    Violation,
)

__all__ = [
    "DRAFT_2020_12",
    "ENVELOPE_FILE",
    "HEADER_TRACE_ID",
    "CompatibilityIssue",
    "SchemaRegistry",
    "SchemaRegistryError",
    "UnknownSchemaError",
    "Violation",
    "check_compatibility",
    "check_schema_pair",
    "encode_event",
    "message_headers",
    "message_key",
]

"""How an event becomes a Kafka message: topic routing, key, headers and JSON encoding.

One function each, shared by the producer library and the synthetic generator, so that the
wire format has exactly one definition.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

HEADER_EVENT_TYPE = "event_type"
HEADER_VERSION = "version"
HEADER_TRACE_ID = "trace_id"


def message_key(event: dict[str, Any]) -> bytes | None:
    """``tenant_id:user_or_anonymous_id`` keeps one user's events in one partition, in order."""
    tenant = event.get("tenant_id")
    who = event.get("user_id") or event.get("anonymous_id")
    if not isinstance(tenant, str) or not isinstance(who, str):
        return None
    return f"{tenant}:{who}".encode()


def new_trace_id() -> str:
    """A W3C trace-context compatible trace id (32 lowercase hex characters)."""
    return secrets.token_hex(16)


def message_headers(event: dict[str, Any], trace_id: str | None = None) -> list[tuple[str, bytes]]:
    return [
        (HEADER_EVENT_TYPE, str(event.get("event_type", "")).encode()),
        (HEADER_VERSION, str(event.get("version", "")).encode()),
        (HEADER_TRACE_ID, (trace_id or new_trace_id()).encode()),
    ]


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same event always encodes to the same bytes."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()

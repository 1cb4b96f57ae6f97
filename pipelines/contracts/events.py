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
HEADER_TRACEPARENT = "traceparent"  # W3C trace context: 00-<trace id>-<parent span id>-<flags>


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


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the caller's current OpenTelemetry span, or None without a valid one (no
    OpenTelemetry installed, no span, or a non-recording default context)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def trace_id_of(traceparent: str) -> str | None:
    """The trace id of a ``traceparent`` header value; None when it is not one (W3C trace context, version 00)."""
    parts = traceparent.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1].lower()


def message_headers(event: dict[str, Any], trace_id: str | None = None) -> list[tuple[str, bytes]]:
    """Headers of an event message: its type and version, and its trace - ``trace_id`` when the caller gives
    one, else the current OpenTelemetry span's (also sent as ``traceparent``, so consumers that speak W3C trace
    context join the producer's trace), else a new random id."""
    headers = [
        (HEADER_EVENT_TYPE, str(event.get("event_type", "")).encode()),
        (HEADER_VERSION, str(event.get("version", "")).encode()),
    ]
    traceparent = current_traceparent() if trace_id is None else None
    if traceparent is not None:
        trace_id = trace_id_of(traceparent)
        headers.append((HEADER_TRACEPARENT, traceparent.encode()))
    headers.append((HEADER_TRACE_ID, (trace_id or new_trace_id()).encode()))
    return headers


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same event always encodes to the same bytes."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()

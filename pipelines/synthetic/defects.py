"""The defects of the synthetic stream: late and re-sent deliveries, out-of-order swaps, malformed messages.

``generate`` applies them to the valid events, each kind from its own seeded ``random.Random``
(``<seed>/late``, ``<seed>/duplicate``, ``<seed>/malformed``, ...), so changing one rate never changes the
valid events or the other defects. ``DEFECTS`` lists the ways a malformed message is broken.
"""

from __future__ import annotations

import random
from typing import Any

from pipelines.contracts.events import encode_event, message_headers, message_key
from pipelines.synthetic.simulation import HOUR_MS, _uuid4

DEFECTS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unknown_field",
    "unknown_event_type",
    "bad_timestamp",
    "missing_identity",
)

LATE_MIN_MS = HOUR_MS  # a late event arrives at least an hour after it occurred ...
LATE_MAX_MS = 72 * HOUR_MS  # ... and at most three days after
NORMAL_LAG_MAX_MS = 2_000  # on-time events reach the broker within two seconds
REPLAY_MIN_MS = 10 * 60_000  # a "much later" duplicate (replayed batch) comes 10 min to 36 h later
REPLAY_MAX_MS = 36 * HOUR_MS
REPLAY_SHARE = 0.3  # share of duplicates that are replays; the rest are immediate producer retries
MAX_SWAP_DISTANCE = 10  # out-of-order messages trade places with a neighbour at most this far away

_UNKNOWN_EVENT_TYPES = ("wishlist_add", "page_veiw", "refund_issued", "search")
_BAD_TIMESTAMPS = ("2026-11-02 10:15:30", "02/11/2026 10:15", "yesterday", "2026-11-02T10:15:30+02:00", "1762078530123")
_NUMERIC_PROPERTIES = ("price", "quantity", "amount", "item_count", "cart_value", "scroll_depth")
_REQUIRED_ENVELOPE = ("event_id", "event_type", "version", "occurred_at", "tenant_id", "properties")
_REQUIRED_PROPERTIES = {
    "page_view": ("url",),
    "product_view": ("product_id", "category", "price", "currency"),
    "add_to_cart": ("product_id", "quantity", "price", "currency"),
    "checkout_started": ("cart_id", "item_count", "cart_value", "currency"),
    "order_completed": ("order_id", "amount", "currency"),
    "signup": ("method", "plan"),
    "login": ("method",),
    "system_alert": ("component", "severity", "message"),
}


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    """Delays spread evenly over orders of magnitude: as many 1-3 h as 1-3 day late arrivals."""
    return int(low * (high / low) ** rng.random())


def _swap_neighbours(entries: list[tuple], rng: random.Random, rate: float) -> int:
    """Local shuffle: with probability ``rate`` a message trades places with one up to MAX_SWAP_DISTANCE ahead."""
    swaps = 0
    last = len(entries) - 1
    for i in range(last):
        if rng.random() < rate:
            j = min(last, i + rng.randint(1, MAX_SWAP_DISTANCE))
            entries[i], entries[j] = entries[j], entries[i]
            swaps += 1
    return swaps


def _originals_first(entries: list[tuple]) -> None:
    """A swap can move a re-send ahead of its original; give the earlier slot back to the original.

    So a "duplicate" always repeats a message already in the stream, and an event's first delivery
    keeps its own publish time (on time or late, as decided).
    """
    first_slot: dict[str, int] = {}
    for slot, entry in enumerate(entries):
        event_id = entry[7]
        if event_id is None:
            continue
        if event_id not in first_slot:
            first_slot[event_id] = slot
        elif entry[1] == "valid":
            earlier = first_slot[event_id]
            entries[earlier], entries[slot] = entry, entries[earlier]


def _malformed(
    event: dict[str, Any], defect: str, rng: random.Random, topics: dict[str, str]
) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
    """A broken sibling of ``event`` (fresh event_id), as a careless producer sends it: (topic, key, value, headers)."""
    event["event_id"] = _uuid4(rng)
    trace_id = f"{rng.getrandbits(128):032x}"
    topic = topics[event["event_type"]]
    properties = event["properties"]
    value: bytes | None = None
    if defect == "invalid_json":
        encoded = encode_event(event)
        value = encoded[: rng.randrange(1, len(encoded) - 1)]  # any proper prefix of an object is not JSON
    elif defect == "not_an_object":
        value = b"[" + encode_event(event) + b"]"
    elif defect == "missing_field":
        choices = [*_REQUIRED_ENVELOPE, *(f"properties.{k}" for k in _REQUIRED_PROPERTIES[event["event_type"]])]
        name = rng.choice(choices)
        del (properties if name.startswith("properties.") else event)[name.removeprefix("properties.")]
    elif defect == "wrong_type":
        numeric = [k for k in _NUMERIC_PROPERTIES if k in properties]
        if numeric and rng.random() < 0.7:
            name = rng.choice(numeric)
            properties[name] = str(properties[name])
        else:
            event["version"] = str(event["version"])
    elif defect == "invalid_value":
        name, bad = rng.choice(_invalid_values(event))
        (event["context"] if name == "device" else properties if name in properties else event)[name] = bad
    elif defect == "unknown_field":
        if rng.random() < 0.5:
            properties["coupon_code"] = "SAVE10"
        else:
            event["userId"] = event["user_id"] or event["anonymous_id"]
    elif defect == "unknown_event_type":
        event["event_type"] = rng.choice(_UNKNOWN_EVENT_TYPES)
        topic = rng.choice(sorted(set(topics.values())))
    elif defect == "bad_timestamp":
        event["occurred_at"] = rng.choice(_BAD_TIMESTAMPS)
    elif defect == "missing_identity":
        event["user_id"] = event["anonymous_id"] = None
    else:
        raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECTS}")
    return (
        topic,
        message_key(event),
        value if value is not None else encode_event(event),
        message_headers(event, trace_id),
    )


def _invalid_values(event: dict[str, Any]) -> list[tuple[str, Any]]:
    """Right type, wrong value: out of range numbers, enum typos, a tenant id that breaks the pattern."""
    options: list[tuple[str, Any]] = [("tenant_id", "Acme Corp"), ("version", 0)]
    properties = event["properties"]
    if "currency" in properties:
        options.append(("currency", properties["currency"].lower()))
    for name in ("price", "amount", "cart_value"):
        if name in properties:
            options.append((name, -abs(properties[name]) - 1))
    for name in ("quantity", "item_count"):
        if name in properties:
            options.append((name, 0))
    enum_typos = {
        "severity": "fatal",
        "method": "facebook",
        "plan": "gold",
        "payment_method": "crypto",
        "page_type": "landing",
    }
    options.extend((name, bad) for name, bad in enum_typos.items() if name in properties)
    if "device" in event["context"] and event["context"]["device"] != "server":
        options.append(("device", "smartwatch"))
    return options

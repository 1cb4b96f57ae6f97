"""Deterministic synthetic event stream with the defects of a real one, and its ground truth.

Tests and benchmarks need a stream that looks like production traffic (heavy-tailed users,
funnel drop-off, anonymous visitors who sign up, a daily rhythm) AND misbehaves like it
(duplicates, late and out-of-order events, malformed messages), together with the exact answers
the lakehouse's tables must reproduce. ``generate`` returns both.

Same spec -> byte-identical messages, trace ids included: every random choice comes from a
``random.Random`` seeded from the spec, never from ``secrets`` or ``uuid4``. Each concern has its own
sub-stream (one per tenant, one per defect kind), so changing a defect rate never changes the valid
events, and adding a tenant never changes the others.

Rates are per unique valid event: each one is late with probability ``late_rate``, re-sent with
probability ``duplicate_rate`` and followed by a malformed sibling with probability
``malformed_rate``; each message is swapped with a near neighbour with probability
``out_of_order_rate``.

The package's modules, in reading order: ``vocabulary`` (the fixed tables), ``simulation`` (tenants,
visitors and sessions producing the valid events), ``truth`` (the expected metrics), ``defects`` (late,
duplicate, swapped and malformed messages) and this entry point, which puts them together.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, fields
from datetime import date
from operator import attrgetter, itemgetter
from typing import Any

from pipelines.synthetic.defects import (
    DEFECTS,
    LATE_MAX_MS,
    LATE_MIN_MS,
    NORMAL_LAG_MAX_MS,
    REPLAY_MAX_MS,
    REPLAY_MIN_MS,
    REPLAY_SHARE,
    _log_uniform,
    _malformed,
    _originals_first,
    _swap_neighbours,
)
from pipelines.synthetic.simulation import _Generator
from pipelines.synthetic.truth import Truth


def _check_rate(name: str, value: float, *, upper_inclusive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"GeneratorSpec.{name} must be a number, got {value!r}")
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    if not ok:
        bounds = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"GeneratorSpec.{name} must be in {bounds}, got {value!r}")


@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate. Rates are probabilities per unique valid event (see the module docstring)."""

    seed: int = 42
    tenants: int = 3
    users_per_tenant: int = 200
    days: int = 3
    start_date: date = date(2026, 11, 1)
    duplicate_rate: float = 0.02
    late_rate: float = 0.02
    out_of_order_rate: float = 0.05
    malformed_rate: float = 0.01
    anonymous_share: float = 0.3  # share of visitors that start anonymous; some of them later sign up
    old_version_share: float = 0.3  # share of events of multi-version types emitted as v1

    def __post_init__(self) -> None:
        for name in ("seed", "tenants", "users_per_tenant", "days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"GeneratorSpec.{name} must be an integer, got {value!r}")
        for name in ("tenants", "users_per_tenant", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"GeneratorSpec.{name} must be >= 1, got {getattr(self, name)!r}")
        if type(self.start_date) is not date:
            raise ValueError(f"GeneratorSpec.start_date must be a datetime.date, got {self.start_date!r}")
        for name in ("duplicate_rate", "late_rate", "out_of_order_rate", "malformed_rate"):
            _check_rate(name, getattr(self, name), upper_inclusive=False)
        for name in ("anonymous_share", "old_version_share"):
            _check_rate(name, getattr(self, name), upper_inclusive=True)


@dataclass(frozen=True)
class GeneratedMessage:
    """One Kafka message, in publish order.

    ``publish_time_ms`` is when the producer sent it (usable as the Kafka CreateTime): occurred_at
    plus under two seconds, or hours to days for a late event. Like real CreateTimes it only
    roughly increases along the stream, because out-of-order messages swapped places.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    kind: str  # "valid" (first delivery) | "duplicate" (exact re-send of an earlier message) | "malformed"
    defect: str | None  # one of DEFECTS for malformed messages
    publish_time_ms: int

    @property
    def event(self) -> dict[str, Any] | None:
        """The event of a valid or duplicate message, decoded from ``value`` (bytes are the single source)."""
        return None if self.kind == "malformed" else json.loads(self.value)


def generate(spec: GeneratorSpec, topic_for_event_type: dict[str, str]) -> tuple[list[GeneratedMessage], Truth]:
    """Messages in publish order and the truth they must reconcile to; same spec -> identical bytes."""
    generator = _Generator(spec, topic_for_event_type)
    generator.valid_events()
    # Defects and publish order, each from its own sub-stream so one rate never moves the others.
    late_rng, lag_rng, dup_rng, bad_rng, swap_rng = (
        random.Random(f"{spec.seed}/{name}") for name in ("late", "lag", "duplicate", "malformed", "swap")
    )
    generator.records.sort(key=attrgetter("occurred_ms"))  # stable: ties keep generation order
    # (publish ms, kind, defect, topic, key, value, headers, event_id)
    entries: list[tuple] = []
    late_ids: list[str] = []
    malformed: Counter[str] = Counter()
    for record in generator.records:
        if late_rng.random() < spec.late_rate:
            published = record.occurred_ms + _log_uniform(late_rng, LATE_MIN_MS, LATE_MAX_MS)
            late_ids.append(record.event_id)
        else:
            published = record.occurred_ms + int(lag_rng.random() * NORMAL_LAG_MAX_MS)
        entries.append(
            (published, "valid", None, record.topic, record.key, record.value, record.headers, record.event_id)
        )
        if dup_rng.random() < spec.duplicate_rate:
            if dup_rng.random() < REPLAY_SHARE:
                delay = _log_uniform(dup_rng, REPLAY_MIN_MS, REPLAY_MAX_MS)
            else:
                delay = dup_rng.randrange(5, 3_000)
            # Same bytes, own headers list: a caller appending headers to one copy must not change the other.
            entries.append(
                (
                    published + delay,
                    "duplicate",
                    None,
                    record.topic,
                    record.key,
                    record.value,
                    list(record.headers),
                    record.event_id,
                )
            )
        if bad_rng.random() < spec.malformed_rate:
            defect = bad_rng.choice(DEFECTS)
            malformed[defect] += 1
            topic, key, value, headers = _malformed(json.loads(record.value), defect, bad_rng, generator.topics)
            entries.append(
                (published + bad_rng.randrange(1, 5_000), "malformed", defect, topic, key, value, headers, None)
            )
    entries.sort(key=itemgetter(0))  # stable: ties keep insertion order
    swaps = _swap_neighbours(entries, swap_rng, spec.out_of_order_rate)
    _originals_first(entries)
    messages = [
        GeneratedMessage(topic, key, value, headers, kind, defect, published)
        for published, kind, defect, topic, key, value, headers, _ in entries
    ]

    distinct_users, distinct_identities = generator.truth.users()
    spec_dict = {f.name: getattr(spec, f.name) for f in fields(spec)}
    spec_dict["start_date"] = spec.start_date.isoformat()
    truth = Truth(
        spec=spec_dict,
        total_messages=len(messages),
        messages_by_topic=dict(Counter(m.topic for m in messages)),
        unique_valid_events=len(generator.records),
        duplicates=len(messages) - len(generator.records) - sum(malformed.values()),
        malformed_by_defect=dict(malformed),
        late_event_ids=late_ids,
        out_of_order_swaps=swaps,
        anonymous_signups=len(generator.truth.stitched),
        distinct_users=distinct_users,
        distinct_identities=distinct_identities,
        event_counts=dict(generator.truth.event_counts),
        events_by_version=dict(generator.truth.events_by_version),
        orders=dict(generator.truth.orders),
        revenue_cents=dict(generator.truth.revenue_cents),
    )
    return messages, truth

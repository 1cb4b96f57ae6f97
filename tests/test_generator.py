"""The synthetic stream: deterministic, realistic, defective at the requested rates, and reconciling
with its own truth when that truth is recomputed from the message bytes alone, as the lakehouse will.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import uuid
from collections import Counter
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import load_settings
from pipelines.contracts.events import message_key
from pipelines.contracts.registry import SchemaRegistry
from pipelines.synthetic.generator import DEFECTS, GeneratedMessage, GeneratorSpec, Truth, generate
from pipelines.synthetic.vocabulary import EVENT_TYPES

HOUR_MS = 3_600_000
SPEC = GeneratorSpec(
    seed=7,
    tenants=3,
    users_per_tenant=150,
    days=3,
    duplicate_rate=0.05,
    late_rate=0.04,
    out_of_order_rate=0.05,
    malformed_rate=0.05,
)
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module")
def topics() -> dict[str, str]:
    return load_settings("local", environ={}).kafka.topic_for_event_type


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load(load_settings("local", environ={}).schemas_dir)


@pytest.fixture(scope="module")
def stream(topics: dict[str, str]) -> tuple[list[GeneratedMessage], Truth]:
    return generate(SPEC, topics)


@pytest.fixture(scope="module")
def checked(stream, registry) -> list[tuple[GeneratedMessage, dict[str, Any] | None, list]]:
    """Every message parsed and validated once: (message, event or None, violations)."""
    messages, _ = stream
    return [(m, *registry.validate_json(m.value)) for m in messages]


@pytest.fixture(scope="module")
def first_deliveries(checked) -> list[tuple[GeneratedMessage, dict[str, Any]]]:
    """Valid events at their first appearance in the stream, found by parsing and deduplicating bytes only."""
    seen: set[str] = set()
    firsts = []
    for message, event, violations in checked:
        if event is None or violations or event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        firsts.append((message, event))
    return firsts


def _ms(occurred_at: str) -> int:
    return int(datetime.fromisoformat(occurred_at).timestamp() * 1000)


def _fingerprint(messages: list[GeneratedMessage]) -> list[tuple]:
    return [dataclasses.astuple(m) for m in messages]


def _within(observed: int, trials: int, rate: float, sigmas: float = 4.0) -> bool:
    expected = trials * rate
    return abs(observed - expected) <= sigmas * math.sqrt(trials * rate * (1 - rate)) + 1


# ---- determinism --------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(topics):
    small = GeneratorSpec(seed=11, users_per_tenant=40, malformed_rate=0.1, duplicate_rate=0.1)
    first, first_truth = generate(small, topics)
    second, second_truth = generate(small, topics)
    assert _fingerprint(first) == _fingerprint(second)  # values, keys, headers (trace ids), kinds, times
    assert first_truth.to_json() == second_truth.to_json()

    other, _ = generate(dataclasses.replace(small, seed=12), topics)
    assert {m.value for m in first}.isdisjoint({m.value for m in other})
    assert {dict(m.headers)["trace_id"] for m in first}.isdisjoint({dict(m.headers)["trace_id"] for m in other})


def test_defect_rates_do_not_change_the_valid_events(topics):
    """Each defect has its own random stream: tuning a rate must not reshuffle the population."""
    clean = GeneratorSpec(
        seed=5, users_per_tenant=30, duplicate_rate=0, late_rate=0, out_of_order_rate=0, malformed_rate=0
    )
    noisy = dataclasses.replace(clean, duplicate_rate=0.2, late_rate=0.2, out_of_order_rate=0.2, malformed_rate=0.2)
    clean_messages, clean_truth = generate(clean, topics)
    noisy_messages, noisy_truth = generate(noisy, topics)
    assert {m.value for m in clean_messages} == {m.value for m in noisy_messages if m.kind != "malformed"}
    assert len(noisy_messages) > len(clean_messages)
    assert clean_truth.event_counts == noisy_truth.event_counts
    assert clean_truth.distinct_users == noisy_truth.distinct_users


# ---- contract -----------------------------------------------------------------------------------------


def test_every_valid_event_passes_the_registry_and_every_malformed_message_fails(checked):
    kinds = Counter(m.kind for m, _, _ in checked)
    assert kinds["valid"] > 4_000 and kinds["duplicate"] > 0 and kinds["malformed"] > 0
    for message, event, violations in checked:
        if message.kind == "malformed":
            assert event is None or violations, f"{message.defect} message passed validation: {message.value[:200]!r}"
        else:
            assert event is not None and violations == [], (violations, message.value[:300])
            assert event == message.event


def test_every_defect_kind_occurs_and_is_labelled(stream, checked):
    _, truth = stream
    assert set(truth.malformed_by_defect) == set(DEFECTS)
    labelled = Counter(m.defect for m, _, _ in checked if m.kind == "malformed")
    assert labelled == Counter(truth.malformed_by_defect)
    by_defect = {m.defect: (event, violations) for m, event, violations in checked if m.kind == "malformed"}
    assert by_defect["invalid_json"][0] is None and "invalid JSON" in by_defect["invalid_json"][1][0].message
    assert by_defect["not_an_object"][0] is None
    assert any(v.path == "$.event_type" for v in by_defect["unknown_event_type"][1])
    assert any(v.path == "$.occurred_at" for v in by_defect["bad_timestamp"][1])


def test_messages_are_keyed_routed_and_headed_like_the_producer_library(topics, first_deliveries):
    for message, event in first_deliveries:
        assert message.topic == topics[event["event_type"]]
        assert message.key == message_key(event)
        headers = dict(message.headers)
        assert headers["event_type"] == event["event_type"].encode()
        assert headers["version"] == str(event["version"]).encode()
        assert re.fullmatch(rb"[0-9a-f]{32}", headers["trace_id"])
        assert uuid.UUID(event["event_id"]).version == 4 and str(uuid.UUID(event["event_id"])) == event["event_id"]
        assert ISO_UTC.match(event["occurred_at"])


def test_unknown_event_types_go_to_a_configured_topic(topics, checked):
    unknown = [m for m, _, _ in checked if m.defect == "unknown_event_type"]
    assert unknown and all(m.topic in set(topics.values()) for m in unknown)


# ---- defects ------------------------------------------------------------------------------------------


def test_defect_rates_are_honoured(stream, first_deliveries):
    messages, truth = stream
    unique = len(first_deliveries)
    assert truth.unique_valid_events == unique
    assert _within(truth.duplicates, unique, SPEC.duplicate_rate)
    assert _within(truth.malformed, unique, SPEC.malformed_rate)
    assert _within(truth.late_events, unique, SPEC.late_rate)
    assert _within(truth.out_of_order_swaps, len(messages) - 1, SPEC.out_of_order_rate)
    assert truth.total_messages == len(messages) == unique + truth.duplicates + truth.malformed


def test_duplicates_are_exact_resends_some_much_later(stream):
    messages, _ = stream
    first_position: dict[bytes, int] = {}
    gaps_ms, gaps_positions = [], []
    for position, message in enumerate(messages):
        if message.kind == "malformed":
            continue
        if message.kind == "valid":
            assert message.value not in first_position
            first_position[message.value] = position
            continue
        original = messages[first_position[message.value]]  # KeyError would mean a re-send before any send
        assert (original.topic, original.key, original.headers) == (message.topic, message.key, message.headers)
        assert original.event["event_id"] == message.event["event_id"]
        gaps_ms.append(message.publish_time_ms - original.publish_time_ms)
        gaps_positions.append(position - first_position[message.value])
    assert len(gaps_ms) > 100
    assert sum(g < 3_000 for g in gaps_ms) > len(gaps_ms) / 2  # mostly immediate producer retries
    assert max(gaps_ms) > 6 * HOUR_MS and max(gaps_positions) > 500  # and replays far down the stream


def test_late_events_arrive_hours_to_days_after_later_events(stream, first_deliveries):
    _, truth = stream
    late, lateness = set(), []
    newest_seen_ms = 0
    overtaken = 0
    for message, event in first_deliveries:
        occurred = _ms(event["occurred_at"])
        delay = message.publish_time_ms - occurred
        assert delay >= 0
        if delay >= HOUR_MS:
            late.add(event["event_id"])
            lateness.append(delay)
            overtaken += newest_seen_ms > occurred + HOUR_MS  # events that happened after it were already read
        else:
            assert delay < 2_000, "an on-time event reaches the broker within two seconds"
        newest_seen_ms = max(newest_seen_ms, occurred)
    assert late == set(truth.late_event_ids)
    assert overtaken >= 0.95 * len(late)
    assert min(lateness) >= HOUR_MS and max(lateness) > 48 * HOUR_MS


def test_out_of_order_swaps_disorder_the_stream_locally(topics):
    ordered_spec = GeneratorSpec(
        seed=3, users_per_tenant=100, late_rate=0, out_of_order_rate=0, duplicate_rate=0, malformed_rate=0
    )
    shuffled_spec = dataclasses.replace(ordered_spec, out_of_order_rate=0.1)

    def descents(messages: list[GeneratedMessage]) -> int:
        times = [_ms(m.event["occurred_at"]) for m in messages]
        return sum(later < earlier - 2_000 for earlier, later in pairwise(times))

    ordered, _ = generate(ordered_spec, topics)
    shuffled, truth = generate(shuffled_spec, topics)
    assert descents(ordered) == 0  # without the defect only the sub-2 s producer lag reorders events
    assert descents(shuffled) >= 0.5 * truth.out_of_order_swaps > 0
    position = {m.value: i for i, m in enumerate(ordered)}
    assert max(abs(position[m.value] - i) for i, m in enumerate(shuffled)) <= 20  # local, not global


# ---- realism ------------------------------------------------------------------------------------------


def test_anonymous_visitors_who_sign_up_switch_to_their_user_id(stream, first_deliveries):
    _, truth = stream
    events = [event for _, event in first_deliveries]
    signups = {e["anonymous_id"]: e for e in events if e["event_type"] == "signup"}
    assert len(signups) == truth.anonymous_signups >= 10
    assert all(e["user_id"] and e["anonymous_id"] for e in signups.values())
    before_and_after = 0
    for anonymous_id, signup in signups.items():
        signed_up_at = _ms(signup["occurred_at"])
        anonymous = [e for e in events if e["anonymous_id"] == anonymous_id and e["event_type"] != "signup"]
        assert all(e["user_id"] is None and _ms(e["occurred_at"]) <= signed_up_at for e in anonymous)
        identified = [e for e in events if e["user_id"] == signup["user_id"] and e["event_type"] != "signup"]
        assert all(e["anonymous_id"] is None and _ms(e["occurred_at"]) >= signed_up_at for e in identified)
        before_and_after += bool(anonymous) and bool(identified)
    assert before_and_after >= 5
    assert any(truth.distinct_users[k] < truth.distinct_identities[k] for k in truth.distinct_users)


def test_the_stream_looks_like_real_traffic(stream, first_deliveries):
    events = [event for _, event in first_deliveries]
    start_ms = _ms(f"{SPEC.start_date.isoformat()}T00:00:00+00:00")
    assert all(start_ms <= _ms(e["occurred_at"]) < start_ms + SPEC.days * 24 * HOUR_MS for e in events)

    per_visitor = sorted(
        Counter(e["user_id"] or e["anonymous_id"] for e in events if e["event_type"] != "system_alert").values(),
        reverse=True,
    )
    assert sum(per_visitor[: len(per_visitor) // 10]) > 0.25 * sum(per_visitor)  # heavy tail
    assert per_visitor[0] > 8 * per_visitor[len(per_visitor) // 2]

    types = Counter(e["event_type"] for e in events)
    funnel = ["page_view", "product_view", "add_to_cart", "checkout_started", "order_completed"]
    assert all(types[a] > types[b] > 0 for a, b in pairwise(funnel))
    assert set(types) == set(EVENT_TYPES)

    for event_type in ("page_view", "order_completed"):
        versions = Counter(e["version"] for e in events if e["event_type"] == event_type)
        assert set(versions) == {1, 2}
        assert _within(versions[1], sum(versions.values()), SPEC.old_version_share)

    without_session = sum(e["session_id"] is None for e in events if e["event_type"] != "system_alert")
    assert 0.01 < without_session / len(events) < 0.15

    alerts = [e for e in events if e["event_type"] == "system_alert"]
    assert alerts and all(e["user_id"] is None and re.fullmatch(r"host-\d+", e["anonymous_id"]) for e in alerts)

    for e in events:
        if "ip" in e["context"]:
            ipaddress.ip_address(e["context"]["ip"])  # raises on an invalid address
    devices = Counter(e["context"]["device"] for e in events)
    assert {"desktop", "mobile", "tablet", "server"} <= set(devices)
    assert all("Mozilla/5.0 (" in e["context"]["user_agent"] for e in events if "user_agent" in e["context"])

    hours = Counter(int(e["occurred_at"][11:13]) for e in events)
    assert sum(hours[h] for h in (18, 19, 20, 21)) > 3 * sum(hours[h] for h in (2, 3, 4, 5))  # diurnal


# ---- truth --------------------------------------------------------------------------------------------


def test_truth_reconciles_with_the_messages(stream, checked, first_deliveries):
    """Recompute every truth table from the bytes: parse, validate, dedupe by event_id, stitch identities."""
    messages, truth = stream
    events = [event for _, event in first_deliveries]
    invalid = sum(1 for _, event, violations in checked if event is None or violations)
    assert truth.malformed == invalid
    assert truth.duplicates == len(messages) - invalid - len(events)
    assert truth.messages_by_topic == dict(Counter(m.topic for m in messages))

    event_counts = Counter((e["tenant_id"], e["occurred_at"][:10], e["event_type"]) for e in events)
    assert truth.event_counts == dict(event_counts)
    assert truth.events_by_version == dict(Counter((e["event_type"], e["version"]) for e in events))

    stitch = {
        (e["tenant_id"], e["anonymous_id"]): e["user_id"]
        for e in events
        if e["event_type"] == "signup" and e["anonymous_id"]
    }
    people: dict[tuple[str, str], set[str]] = {}
    identities: dict[tuple[str, str], set[str]] = {}
    for e in events:
        if e["event_type"] == "system_alert":
            continue
        day = (e["tenant_id"], e["occurred_at"][:10])
        raw = e["user_id"] or e["anonymous_id"]
        identities.setdefault(day, set()).add(raw)
        people.setdefault(day, set()).add(e["user_id"] or stitch.get((e["tenant_id"], raw), raw))
    assert truth.distinct_users == {k: len(v) for k, v in people.items()}
    assert truth.distinct_identities == {k: len(v) for k, v in identities.items()}

    orders: Counter[tuple[str, str, str]] = Counter()
    cents: Counter[tuple[str, str, str]] = Counter()
    for e in events:
        if e["event_type"] == "order_completed":
            key = (e["tenant_id"], e["occurred_at"][:10], e["properties"]["currency"])
            orders[key] += 1
            cents[key] += round(e["properties"]["amount"] * 100)
    assert orders and truth.orders == dict(orders) and truth.revenue_cents == dict(cents)


def test_truth_round_trips_through_its_json_file(stream, tmp_path: Path):
    _, truth = stream
    path = truth.write_truth(tmp_path / "nested" / "truth.json")
    loaded = Truth.read_truth(path)
    assert loaded.to_dict() == truth.to_dict()
    assert loaded.distinct_users == truth.distinct_users and loaded.revenue_cents == truth.revenue_cents
    row = loaded.to_dict()["orders"][0]
    assert row["revenue"] == round(row["revenue_cents"] / 100, 2)


# ---- validation of inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"duplicate_rate": 1.0}, r"duplicate_rate must be in \[0, 1\), got 1.0"),
        ({"late_rate": -0.1}, r"late_rate must be in \[0, 1\)"),
        ({"malformed_rate": "0.1"}, r"malformed_rate must be a number"),
        ({"out_of_order_rate": True}, r"out_of_order_rate must be a number"),
        ({"anonymous_share": 1.5}, r"anonymous_share must be in \[0, 1\]"),
        ({"tenants": 0}, r"tenants must be >= 1, got 0"),
        ({"users_per_tenant": 2.5}, r"users_per_tenant must be an integer"),
        ({"days": 0}, r"days must be >= 1"),
        ({"seed": None}, r"seed must be an integer"),
        ({"start_date": datetime(2026, 11, 1, tzinfo=UTC)}, r"start_date must be a datetime.date"),
        ({"start_date": "2026-11-01"}, r"start_date must be a datetime.date"),
    ],
)
def test_spec_rejects_bad_values_naming_the_field(changes: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        GeneratorSpec(**changes)


def test_spec_accepts_the_edges():
    spec = GeneratorSpec(duplicate_rate=0, anonymous_share=1, old_version_share=0, start_date=date(2024, 2, 29))
    assert spec.anonymous_share == 1


def test_topic_map_must_route_every_event_type(topics):
    partial = {k: v for k, v in topics.items() if k not in ("system_alert", "login")}
    with pytest.raises(ValueError, match=r"no topic for event type\(s\) \['login', 'system_alert'\]"):
        generate(GeneratorSpec(users_per_tenant=5), partial)


# ---- speed --------------------------------------------------------------------------------------------


def test_chunks_of_one_stream_get_unique_kafka_coordinates(topics):
    """Synthetic bronze written chunk by chunk (the 10M bench) must not reuse Kafka coordinates: silver's dedup
    names the copies it drops by (topic, partition, offset), so a repeat would drop rows of another chunk."""
    from pipelines.synthetic.bronze import bronze_rows_from_generated

    first, _ = generate(GeneratorSpec(seed=1, tenants=1, users_per_tenant=5, days=1), topics)
    second, _ = generate(GeneratorSpec(seed=2, tenants=1, users_per_tenant=5, days=1), topics)
    offsets: dict[tuple[str, int], int] = {}
    rows = bronze_rows_from_generated(first, offsets=offsets) + bronze_rows_from_generated(second, offsets=offsets)
    coordinates = [(row["topic"], row["partition"], row["offset"]) for row in rows]
    assert len(rows) > 100 and len(set(coordinates)) == len(coordinates)
    # without a shared dict every call starts at offset 0: the collision the parameter exists to avoid
    restarted = bronze_rows_from_generated(first) + bronze_rows_from_generated(second)
    assert len({(row["topic"], row["partition"], row["offset"]) for row in restarted}) < len(restarted)

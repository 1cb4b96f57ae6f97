"""Gold tables against values computed independently in plain Python from the same bronze rows.

The expected side re-implements each definition naively (sets per day, brute-force funnel search, a
straightforward sessionizer, statistics.median), so a shared bug cannot make both sides agree.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from test_silver import D1, D5, event, fixture_rows, lake_settings, page, read_rows

from pipelines import gold, silver
from pipelines.platform.lake import Lake
from pipelines.synthetic.bronze import bronze_row, bronze_rows_from_generated, bronze_table, write_bronze
from pipelines.synthetic.generator import GeneratorSpec, generate
from pipelines.synthetic.users import sample_users, write_users_file

pytestmark = pytest.mark.integration

MACHINE = {"system_alert"}
TIMEOUT = timedelta(minutes=30)
FUNNELS = {
    "purchase": (("product_view", "add_to_cart", "checkout_started", "order_completed"), 60),
    "signup": (("page_view", "signup"), 30),
}


def spark_round(value: float, places: int) -> float:
    """Spark's round() on a double: HALF_UP on the shortest decimal representation."""
    return float(Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP))


def kept(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first ingested copy of every (tenant_id, event_id)."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["ingested_at"], r["topic"], r["partition"], r["offset"])):
        first.setdefault((row["tenant_id"], row["event_id"]), row)
    return list(first.values())


def with_identity(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    signups = sorted(
        (r for r in rows if r["event_type"] == "signup" and r["anonymous_id"] and r["user_id"]),
        key=lambda r: (r["occurred_at"], r["event_id"]),
    )
    stitched: dict[tuple[str, str], str] = {}
    for r in signups:
        stitched.setdefault((r["tenant_id"], r["anonymous_id"]), r["user_id"])
    return [
        {**r, "who": r["user_id"] or stitched.get((r["tenant_id"], r["anonymous_id"])) or r["anonymous_id"]}
        for r in rows
    ]


def expected_dau(events: list[dict[str, Any]], days: list[date]) -> dict[tuple, tuple]:
    active: dict[tuple[str, date], set[str]] = defaultdict(set)
    for e in events:
        if e["event_type"] not in MACHINE:
            active[(e["tenant_id"], e["event_date"])].add(e["who"])
    result = {}
    for tenant in {t for t, _ in active}:
        for day in days:

            def union(lo: int, hi: int, tenant: str = tenant, day: date = day) -> set[str]:
                return set().union(*(active.get((tenant, day - timedelta(days=i)), set()) for i in range(lo, hi + 1)))

            dau, wau, mau, seen = union(0, 0), union(0, 6), union(0, 27), union(1, 28)
            if mau:
                result[(tenant, day)] = (len(dau), len(wau), len(mau), len(dau - seen), len(dau & seen))
    return result


def sessionize(events: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    by_user: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["event_type"] not in MACHINE:
            by_user[(e["tenant_id"], e["who"])].append(e)
    sessions: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (tenant, who), user_events in by_user.items():
        user_events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
        blocks: list[list[dict[str, Any]]] = []
        for e in user_events:
            if blocks and e["occurred_at"] - blocks[-1][-1]["occurred_at"] <= TIMEOUT:
                blocks[-1].append(e)
            else:
                blocks.append([e])
        for block in blocks:
            for i, e in enumerate(block):
                earlier = [b["session_id"] for b in block[: i + 1] if b["session_id"]]
                later = [b["session_id"] for b in block[i:] if b["session_id"]]
                sid = e["session_id"] or (
                    earlier[-1] if earlier else later[0] if later else f"derived:{who}:{block[0]['event_id']}"
                )
                sessions[(tenant, sid)].append(e)
    return sessions


def expected_sessions(events: list[dict[str, Any]], days: list[date]) -> dict[tuple, tuple]:
    per_day: dict[tuple[str, date], list[tuple[float, int, bool]]] = defaultdict(list)
    for (tenant, sid), members in sessionize(events).items():
        start = min(e["occurred_at"] for e in members)
        end = max(e["occurred_at"] for e in members)
        per_day[(tenant, start.date())].append(
            ((end - start).total_seconds(), len(members), sid.startswith("derived:"))
        )
    result = {}
    for (tenant, day), items in per_day.items():
        if day not in days:
            continue
        durations = [d for d, _, _ in items]
        bounced = sum(1 for _, n, _ in items if n == 1)
        result[(tenant, day)] = (
            len(items),
            bounced,
            spark_round(bounced / len(items), 4),
            spark_round(sum(durations) / len(items), 3),
            spark_round(statistics.median(durations), 3),
            spark_round(sum(n for _, n, _ in items) / len(items), 3),
            sum(1 for *_, d in items if d),
        )
    return result


def best_level(
    user_events: list[dict[str, Any]], steps: tuple[str, ...], window: timedelta, start: dict[str, Any]
) -> int:
    """Brute force: the longest in-order chain starting at ``start``, trying every candidate at every step."""
    deadline = start["occurred_at"] + window

    def deepest(level: int, after: Any) -> int:
        if level == len(steps):
            return level
        options = [e for e in user_events if e["event_type"] == steps[level] and after <= e["occurred_at"] <= deadline]
        return max([deepest(level + 1, e["occurred_at"]) for e in options], default=level)

    return deepest(1, start["occurred_at"])


def expected_funnels(events: list[dict[str, Any]], days: list[date]) -> dict[tuple, tuple]:
    by_user: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["event_type"] not in MACHINE:
            by_user[(e["tenant_id"], e["who"])].append(e)
    result = {}
    for name, (steps, minutes) in FUNNELS.items():
        levels: dict[tuple[str, date], dict[str, int]] = defaultdict(dict)
        for (tenant, who), user_events in by_user.items():
            for start in user_events:
                if start["event_type"] == steps[0] and start["event_date"] in days:
                    level = best_level(user_events, steps, timedelta(minutes=minutes), start)
                    slot = levels[(tenant, start["event_date"])]
                    slot[who] = max(slot.get(who, 0), level)
        for (tenant, day), users in levels.items():
            counts = [sum(1 for level in users.values() if level >= k) for k in range(1, len(steps) + 1)]
            for k, step in enumerate(steps, start=1):
                previous = counts[max(k - 2, 0)]
                result[(tenant, day, name, k)] = (
                    step,
                    counts[k - 1],
                    spark_round(counts[k - 1] / counts[0], 4),
                    spark_round(counts[k - 1] / previous, 4) if previous else None,
                )
    return result


def expected_revenue(events: list[dict[str, Any]], days: list[date]) -> dict[tuple, tuple]:
    totals: dict[tuple, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
    for e in events:
        if e["event_type"] == "order_completed" and e["event_date"] in days:
            props = e["props"]
            slot = totals[(e["tenant_id"], e["event_date"], props["currency"])]
            slot[0] += 1
            slot[1] += Decimal(str(props["amount"]))
            slot[2] += Decimal(str(props.get("discount_amount", 0)))
    cents = Decimal("0.01")
    return {
        key: (int(n), revenue, discounts, revenue + discounts, (revenue / n).quantize(cents, ROUND_HALF_UP))
        for key, (n, revenue, discounts) in totals.items()
    }


def prepared(bronze: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import json

    return [{**e, "props": json.loads(e["properties"])} for e in with_identity(kept(bronze))]


@pytest.fixture(scope="module")
def gold_lake(spark, tmp_path_factory):
    settings = lake_settings(tmp_path_factory.mktemp("gold"))
    bronze = fixture_rows()
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(bronze))
    silver.build(spark, settings, D1, D5)
    result = gold.build(spark, settings, D1, D5)
    tables = {name: read_rows(spark, gold.table_path(settings, name)) for name in gold.TABLES}
    return result, tables, prepared(bronze)


def test_gold_rewrites_the_lookback_days(gold_lake) -> None:
    result, _, _ = gold_lake
    assert result.days[0] == D1 - timedelta(days=3) and result.days[-1] == D5


def test_daily_active_users(gold_lake) -> None:
    result, tables, events = gold_lake
    actual = {
        (r["tenant_id"], r["date"]): (r["dau"], r["wau"], r["mau"], r["new_users"], r["returning_users"])
        for r in tables["daily_active_users"]
    }
    expected = expected_dau(events, result.days)
    assert actual == expected
    assert expected[("t1", D5)] == (1, 4, 4, 1, 0)  # hand check: u4 new on D5; u1, u2, u3 earlier in the week


def test_event_counts(gold_lake) -> None:
    result, tables, events = gold_lake
    counts = Counter((e["tenant_id"], e["event_date"], e["event_type"]) for e in events)
    users: dict[tuple, set[str]] = defaultdict(set)
    for e in events:
        if e["event_type"] not in MACHINE:
            users[(e["tenant_id"], e["event_date"], e["event_type"])].add(e["who"])
    expected = {key: (n, len(users[key])) for key, n in counts.items() if key[1] in result.days}
    actual = {(r["tenant_id"], r["date"], r["event_type"]): (r["events"], r["users"]) for r in tables["event_counts"]}
    assert actual == expected


def test_sessions(gold_lake) -> None:
    result, tables, events = gold_lake
    actual = {
        (r["tenant_id"], r["date"]): (
            r["sessions"],
            r["bounced_sessions"],
            r["bounce_rate"],
            r["avg_duration_seconds"],
            r["median_duration_seconds"],
            r["avg_events_per_session"],
            r["derived_sessions"],
        )
        for r in tables["sessions"]
    }
    expected = expected_sessions(events, result.days)
    assert actual == expected
    assert expected[("t1", D1)][:2] == (4, 2)  # s1 (+ server order), s2, s4 (+ e09), derived e11 (bounce); e06 bounce


def test_funnels(gold_lake) -> None:
    result, tables, events = gold_lake
    actual = {
        (r["tenant_id"], r["date"], r["funnel"], r["step_index"]): (
            r["step"],
            r["users"],
            r["conversion_from_start"],
            r["conversion_from_previous"],
        )
        for r in tables["funnels"]
    }
    expected = expected_funnels(events, result.days)
    assert actual == expected
    assert [expected[("t1", D1, "purchase", k)][1] for k in (1, 2, 3, 4)] == [1, 1, 1, 1]


def test_revenue(gold_lake) -> None:
    result, tables, events = gold_lake
    actual = {
        (r["tenant_id"], r["date"], r["currency"]): (
            r["orders"],
            r["revenue"],
            r["discounts"],
            r["gross_revenue"],
            r["average_order_value"],
        )
        for r in tables["revenue"]
    }
    assert actual == expected_revenue(events, result.days)
    assert actual[("t1", date(2026, 11, 2), "EUR")] == (
        1,
        Decimal("45.00"),
        Decimal("5.00"),
        Decimal("50.00"),
        Decimal("45.00"),
    )


def test_event_rate_anomalies(spark, tmp_path: Path) -> None:
    settings = lake_settings(tmp_path, gold__anomaly_window_days=4)
    daily = {"page_view": [10, 12, 11, 10, 30], "login": [2, 2, 2, 2, 2], "add_to_cart": [0, 0, 0, 0, 3]}
    rows, n = [], 0
    for event_type, counts in daily.items():
        for offset, count in enumerate(counts):
            day = D1 + timedelta(days=offset)
            for i in range(count):
                n += 1
                props = {
                    "page_view": page("https://x.example/"),
                    "login": {"method": "sso"},
                    "add_to_cart": {"product_id": "p", "quantity": 1, "price": 1.0, "currency": "USD"},
                }
                e = event(
                    f"x{n:04d}",
                    event_type,
                    f"{day}T{10 + i % 10:02d}:{i % 60:02d}:00.000Z",
                    tenant="t9",
                    user=f"u{i}",
                    session=f"s{n}",
                    props=props[event_type],
                )
                rows.append(bronze_row(e, f"{day}T23:00:00Z", "events", 0, n))
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(rows))
    silver.build(spark, settings, D1, D5)
    result = gold.build(spark, settings, D1, D5)

    expected = {}
    for event_type, counts in daily.items():
        for offset, count in enumerate(counts):
            history = counts[max(0, offset - 4) : offset]
            if count == 0 and sum(history) == 0:
                continue
            median = statistics.median(history) if history else None
            mad = statistics.median([abs(x - median) for x in history]) if history else None
            mean_ad = sum(abs(x - median) for x in history) / len(history) if history else None
            scale = mad * 1.4826 if mad else mean_ad * 1.253314 if mean_ad else None
            enough = len(history) >= 3
            score = spark_round((count - median) / scale, 4) if enough and scale else None
            flagged = (score is not None and abs(score) >= 3.5) or (enough and scale is None and count != median)
            direction = None if median is None else "up" if count > median else "down" if count < median else "none"
            expected[(D1 + timedelta(days=offset), event_type)] = (
                count,
                len(history),
                None if median is None else float(median),
                None if mad is None else float(mad),
                score,
                direction,
                flagged,
            )
    actual = {
        (r["date"], r["event_type"]): (
            r["events"],
            r["baseline_days"],
            r["baseline_median"],
            r["baseline_mad"],
            r["score"],
            r["direction"],
            r["flagged"],
        )
        for r in read_rows(spark, gold.table_path(settings, "event_rate_anomalies"))
    }
    assert actual == expected
    assert actual[(D5, "page_view")][4:] == (26.3051, "up", True)  # hand check: (30 - 10.5) / (0.5 * 1.4826)
    assert actual[(D5, "login")][4:] == (None, "none", False)
    assert actual[(D5, "add_to_cart")][4:] == (None, "up", True)  # constant zero baseline broken
    assert result.rows["event_rate_anomalies"] == len(expected)


def test_generated_stream_reconciles_with_truth(spark, tmp_path: Path) -> None:
    spec = GeneratorSpec(seed=11, tenants=2, users_per_tenant=40, days=3, duplicate_rate=0.05, late_rate=0.05)
    settings = lake_settings(tmp_path)
    messages, truth = generate(spec, settings.kafka.topic_for_event_type)
    write_users_file(sample_users(messages), Path(settings.resolve_path(settings.silver.dimensions_dir)) / "users.csv")
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(bronze_rows_from_generated(messages)))
    last = spec.start_date + timedelta(days=spec.days - 1)
    built = silver.build(spark, settings, spec.start_date, last)
    gold.build(spark, settings, spec.start_date, last)

    assert_reconciles_with_truth(spark, settings, built, truth)
    _assert_no_raw_identifiers(spark, settings, messages)


def assert_reconciles_with_truth(spark, settings, built: silver.SilverResult, truth) -> None:
    """silver's counts and gold's DAU, event counts, orders and revenue equal the generator's truth."""
    assert built.events == truth.unique_valid_events
    assert built.duplicates_dropped == truth.duplicates
    assert built.unmatched_user_events == 0  # pre-existing users from the file, new ones from signup events
    assert_gold_matches_truth(spark, settings, truth)


def assert_gold_matches_truth(spark, settings, truth) -> None:
    """gold's DAU, event counts, orders and revenue equal the generator's truth."""
    dau = {
        (r["tenant_id"], r["date"].isoformat()): r["dau"]
        for r in read_rows(spark, gold.table_path(settings, "daily_active_users"))
    }
    assert dau == truth.distinct_users
    counts = {
        (r["tenant_id"], r["date"].isoformat(), r["event_type"]): r["events"]
        for r in read_rows(spark, gold.table_path(settings, "event_counts"))
    }
    assert counts == truth.event_counts
    revenue = read_rows(spark, gold.table_path(settings, "revenue"))
    assert {(r["tenant_id"], r["date"].isoformat(), r["currency"]): r["orders"] for r in revenue} == truth.orders
    assert {
        (r["tenant_id"], r["date"].isoformat(), r["currency"]): int(r["revenue"] * 100) for r in revenue
    } == truth.revenue_cents


def _assert_no_raw_identifiers(spark, settings, messages) -> None:
    """No raw user id, anonymous id, IP, user agent, order or cart id in any row of any silver or gold table,
    neither as a column value nor inside a JSON document."""
    import json

    raw: set[str] = set()
    for message in messages:
        try:
            event = json.loads(message.value)
        except (TypeError, ValueError):
            continue
        if not isinstance(event, dict):
            continue
        context = event.get("context") if isinstance(event.get("context"), dict) else {}
        props = event.get("properties") if isinstance(event.get("properties"), dict) else {}
        found = [event.get("user_id"), event.get("anonymous_id"), context.get("ip"), context.get("user_agent")]
        raw.update(v for v in [*found, props.get("order_id"), props.get("cart_id")] if isinstance(v, str) and v)
    assert len(raw) > 100, "the stream carries identifiers to look for"

    def leaves(value):
        if isinstance(value, dict):
            for item in value.values():
                yield from leaves(item)
        elif isinstance(value, list):
            for item in value:
                yield from leaves(item)
        else:
            yield value

    lake = Lake(settings)
    scanned = []
    for layer in ("silver", "gold"):
        for log in sorted(Path(lake.root, layer).glob("*/_delta_log")):
            scanned.append(f"{layer}.{log.parent.name}")
            for row in spark.read.format("delta").load(str(log.parent)).collect():
                for column, value in row.asDict().items():
                    if not isinstance(value, str):
                        continue
                    assert value not in raw, (scanned[-1], column, value)
                    if value[:1] in "{[":
                        leaked = [leaf for leaf in leaves(json.loads(value)) if leaf in raw]
                        assert not leaked, (scanned[-1], column, leaked)
    assert {"silver.events", "silver.dim_users", "silver.dim_devices", "gold.daily_active_users"} <= set(scanned)


def test_funnel_steps_must_be_registered_event_types(tmp_path: Path) -> None:
    funnels = tmp_path / "funnels.yaml"
    funnels.write_text("funnels:\n  - {name: buy, steps: [product_view, add_to_kart], window_minutes: 30}\n")
    assert [f.steps for f in gold.load_funnels(funnels)] == [("product_view", "add_to_kart")]  # no registry given
    with pytest.raises(gold.FunnelConfigError, match=r"funnels\[0\].steps: add_to_kart not a registered event type"):
        gold.load_funnels(funnels, ["product_view", "add_to_cart"])

"""silver.events from a hand-written bronze fixture: dedup, upcast, PII, stitching, sessions, enrichment, late data.

Bronze is written directly with a Spark Delta write (pipelines.synthetic.bronze); expected values are spelled
out by hand or computed here with plain Python (hmac, ipaddress), never with the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines import silver
from pipelines.config import Settings, load_settings
from pipelines.platform.lake import Lake
from pipelines.silver.pii import (
    DEV_HMAC_KEY,
    USER_AGENT_NAMESPACE,
    PiiConfigError,
    hmac_key,
    load_pii_rules,
    pseudonym,
    truncate_ip,
)
from pipelines.silver.user_agents import parse_user_agent
from pipelines.synthetic.bronze import bronze_row, bronze_table, write_bronze
from pipelines.synthetic.vocabulary import _USER_AGENTS

pytestmark = pytest.mark.integration

D1, D2, D3, D5 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 5)
DESKTOP_UA = _USER_AGENTS[0][2]  # Windows, Chrome
IPHONE_UA = _USER_AGENTS[6][2]
WEB = {
    "device": "desktop",
    "os": "Windows 10",
    "locale": "en-US",
    "ip": "203.0.113.77",
    "user_agent": DESKTOP_UA,
    "app_version": "web-1",
}
PHONE = {
    "device": "mobile",
    "os": "iOS 18.1",
    "locale": "en-GB",
    "ip": "2a02:1:2:3::7",
    "user_agent": IPHONE_UA,
    "app_version": "web-1",
}
SERVER = {"device": "server", "os": "linux", "app_version": "orders-svc 3.14.2"}
USERS_CSV = "tenant_id,user_id,signup_date,plan,country\nt1,u1,2025-01-15,pro,US\nt2,u9,2024-05-01,free,DE\n"


def at(day: date, hhmmss: str) -> str:
    return f"{day.isoformat()}T{hhmmss}.000Z"


def event(
    event_id: str,
    event_type: str,
    when: str,
    *,
    tenant: str = "t1",
    user: str | None = None,
    anon: str | None = None,
    session: str | None = None,
    version: int = 1,
    props: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "version": version,
        "occurred_at": when,
        "tenant_id": tenant,
        "user_id": user,
        "anonymous_id": anon,
        "session_id": session,
        "properties": props or {},
        "context": context if context is not None else WEB,
    }


def page(url: str, page_type: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"url": url, "title": "A page title", "referrer": "https://www.google.com/search?q=me"}
    if page_type:
        props["page_type"] = page_type
    return props


SHOP = "https://shop.t1.example"
EVENTS = [
    event("e01", "page_view", at(D1, "10:00:00"), user="u1", session="s1", props=page(f"{SHOP}/p/sku-1?utm=mail#top")),
    event(
        "e02",
        "product_view",
        at(D1, "10:01:00"),
        user="u1",
        session="s1",
        props={"product_id": "sku-1", "category": "shoes", "price": 80.0, "currency": "USD"},
    ),
    event(
        "e03",
        "add_to_cart",
        at(D1, "10:02:00"),
        user="u1",
        session="s1",
        props={"product_id": "sku-1", "quantity": 2, "price": 80.0, "currency": "USD"},
    ),
    event(
        "e04",
        "checkout_started",
        at(D1, "10:05:00"),
        user="u1",
        session="s1",
        props={"cart_id": "c1", "item_count": 2, "cart_value": 160.0, "currency": "USD"},
    ),
    event(
        "e05",
        "order_completed",
        at(D1, "10:06:00"),
        user="u1",
        context=SERVER,
        props={"order_id": "o1", "amount": 160.0, "currency": "USD", "item_count": 2},
    ),
    event(
        "e06",
        "page_view",
        at(D1, "12:00:00"),
        anon="a1",
        session="s2",
        version=2,
        context=PHONE,
        props=page(f"{SHOP}/", "home"),
    ),
    event(
        "e07",
        "signup",
        at(D2, "09:00:00"),
        user="u2",
        anon="a1",
        session="s3",
        context=PHONE,
        props={"method": "email", "plan": "pro"},
    ),
    event("e08", "login", at(D2, "09:10:00"), user="u2", session="s3", context=PHONE, props={"method": "password"}),
    event("e09", "page_view", at(D1, "20:00:00"), user="u3", props=page(f"{SHOP}/c/shoes")),
    event(
        "e10", "page_view", at(D1, "20:10:00"), user="u3", session="s4", version=2, props=page(f"{SHOP}/cart", "cart")
    ),
    event("e11", "page_view", at(D1, "21:30:00"), user="u3", props=page(f"{SHOP}/help?x=1")),
    event(
        "e12",
        "order_completed",
        at(D2, "11:00:00"),
        user="u3",
        session="s5",
        version=2,
        props={"order_id": "o2", "amount": 45.0, "discount_amount": 5.0, "currency": "EUR", "payment_method": "card"},
    ),
    event(
        "e13",
        "system_alert",
        at(D1, "03:00:00"),
        anon="host-1",
        context={"device": "server", "ip": "10.0.3.4"},
        props={"component": "cdn", "severity": "error", "message": "origin 5xx from 10.0.0.1"},
    ),
    event(
        "e14",
        "page_view",
        at(D1, "10:00:00"),
        tenant="t2",
        user="u1",
        session="s9",
        version=2,
        props=page("https://shop.t2.example/", "home"),
    ),
    event("e15", "login", at(D3, "08:00:00"), user="u1", session="s7", props={"method": "sso"}),
    event("e16", "page_view", at(D5, "18:00:00"), user="u4", session="s8", props=page(f"{SHOP}/p/sku-2")),
    event(
        "e17",
        "product_view",
        at(D5, "18:00:30"),
        user="u4",
        session="s8",
        props={"product_id": "sku-2", "category": "toys", "price": 9.99, "currency": "USD"},
    ),
]
BY_ID = {e["event_id"]: e for e in EVENTS}


def ingest(when: str, seconds: int = 1) -> datetime:
    return datetime.fromisoformat(when.replace("Z", "+00:00")) + timedelta(seconds=seconds)


def fixture_rows() -> list[dict[str, Any]]:
    """Every event once (ingested a second after it occurred), plus two duplicates:

    e01 re-sent the next day (kept copy: the first, offset 0) and e12 re-delivered with the SAME ingested_at
    on another partition (tie broken by topic, partition, offset: partition 0 wins).
    """
    rows = [bronze_row(e, ingest(e["occurred_at"]), "events", 0, n) for n, e in enumerate(EVENTS)]
    rows.append(bronze_row(BY_ID["e01"], ingest(at(D2, "08:00:00")), "events", 1, 500))
    rows.append(bronze_row(BY_ID["e12"], ingest(BY_ID["e12"]["occurred_at"]), "events", 3, 7))
    return rows


def lake_settings(root: Path, users_csv: str = USERS_CSV, *, catalog: bool = False, **overrides: Any) -> Settings:
    """The local profile on its own lake under ``root``; overrides like ``gold__anomaly_window_days=4``.

    ``catalog=False`` (the default) leaves table names alone: every test has its own lake, and naming its
    tables would re-point ``silver.events`` & co. in the shared metastore on every build (tests/test_replay.py
    checks the naming).
    """
    dims = root / "dims"
    dims.mkdir(parents=True, exist_ok=True)
    (dims / "users.csv").write_text(users_csv)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE")}
    environ |= {
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__LAKE__ROOT": str(root / "lake"),
        "LAKEHOUSE__SILVER__DIMENSIONS_DIR": str(dims),
        "LAKEHOUSE__SPARK__MASTER": "local[2]",
        "LAKEHOUSE__CATALOG__METASTORE": "embedded" if catalog else "none",
    }
    environ |= {f"LAKEHOUSE__{name.upper()}": str(value) for name, value in overrides.items()}
    return load_settings(environ=environ)


def read_rows(spark, path: str) -> list[dict[str, Any]]:
    return [row.asDict() for row in spark.read.format("delta").load(path).collect()]


def key_of(settings: Settings, tenant: str, identity: str) -> str:
    return hmac.new(hmac_key(settings), f"{tenant}:{identity}".encode(), hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory) -> tuple[Settings, silver.SilverResult, dict[str, dict[str, Any]]]:
    settings = lake_settings(tmp_path_factory.mktemp("silver"))
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(fixture_rows()))
    result = silver.build(spark, settings, D1, D5)
    rows = read_rows(spark, silver.events_path(settings))
    by_id = {row["event_id"]: row for row in rows}
    assert len(by_id) == len(rows), "an event appears twice in silver"
    return settings, result, by_id


def test_dedup_keeps_first_ingested_copy(built) -> None:
    _, result, rows = built
    assert sorted(rows) == sorted(BY_ID)
    assert (result.bronze_rows, result.events, result.duplicates_dropped) == (len(EVENTS) + 2, len(EVENTS), 2)
    assert (rows["e01"]["bronze_partition"], rows["e01"]["bronze_offset"]) == (0, 0)  # not the next day's copy
    assert (rows["e12"]["bronze_partition"], rows["e12"]["bronze_offset"]) == (0, 11)  # tie on ingested_at
    assert rows["e01"]["ingested_at"].astimezone(UTC) == datetime(2026, 11, 1, 10, 0, 1, tzinfo=UTC)


def test_upcast_to_current_versions(built) -> None:
    settings, _, rows = built
    assert (rows["e01"]["version"], rows["e01"]["source_version"], rows["e01"]["page_type"]) == (2, 1, "product")
    assert [rows[e]["page_type"] for e in ("e09", "e10", "e11", "e06")] == ["category", "cart", "other", "home"]
    assert (rows["e05"]["version"], rows["e05"]["source_version"], rows["e05"]["discount_amount"]) == (2, 1, 0.0)
    assert (rows["e12"]["amount"], rows["e12"]["discount_amount"], rows["e12"]["payment_method"]) == (45.0, 5.0, "card")
    assert json.loads(rows["e05"]["properties"]) == {
        "amount": 160.0,
        "currency": "USD",
        "discount_amount": 0.0,
        "item_count": 2,
        "order_id": key_of(settings, "t1", "o1"),  # pseudonymized (conf/pii.yaml), in the JSON and the column
    }
    assert rows["e05"]["order_id"] == key_of(settings, "t1", "o1")
    assert (rows["e03"]["quantity"], rows["e03"]["price"], rows["e04"]["item_count"]) == (2, 80.0, 2)


def test_pii_never_reaches_silver(built) -> None:
    settings, _, rows = built
    e01 = rows["e01"]
    assert e01["page_url"] == f"{SHOP}/p/sku-1"
    assert json.loads(e01["properties"]) == {
        "page_type": "product",
        "referrer": "https://www.google.com/search",
        "url": f"{SHOP}/p/sku-1",
    }
    assert "message" not in json.loads(rows["e13"]["properties"])
    assert (e01["ip_prefix"], rows["e06"]["ip_prefix"]) == ("203.0.113.0/24", "2a02:1:2::/48")
    raw = {"u1", "u2", "u3", "u4", "a1", "host-1", "203.0.113.77", DESKTOP_UA, "A page title"}
    for row in rows.values():
        for name, value in row.items():
            assert not (isinstance(value, str) and any(r == value or f'"{r}"' in value for r in raw)), (name, value)
    assert e01["user_key"] == key_of(settings, "t1", "u1")
    assert rows["e14"]["user_key"] == key_of(settings, "t2", "u1") != e01["user_key"]  # same raw id, other tenant


def test_anonymous_visitor_is_stitched_to_the_user_on_every_day(built) -> None:
    settings, result, rows = built
    u2 = key_of(settings, "t1", "u2")
    assert [rows[e]["user_key"] for e in ("e06", "e07", "e08")] == [u2, u2, u2]  # D1 (before signup), D2
    assert rows["e06"]["is_identified"] is True
    assert rows["e13"]["is_identified"] is False
    assert result.stitched_events == 1


def test_sessions_given_inherited_or_derived(built) -> None:
    settings, result, rows = built
    assert rows["e05"]["session_id"] == "s1" and rows["e05"]["session_is_derived"]  # server order inside s1
    assert rows["e09"]["session_id"] == "s4" and rows["e09"]["session_is_derived"]  # 10 min before s4's event
    block_start = "e11"  # 80 minutes after e10: a new activity block with no session id at all
    expected = "ds_" + hashlib.sha256(f"t1:{key_of(settings, 't1', 'u3')}:{block_start}".encode()).hexdigest()[:32]
    assert rows["e11"]["session_id"] == expected and rows["e11"]["session_is_derived"]
    assert rows["e10"]["session_id"] == "s4" and not rows["e10"]["session_is_derived"]
    assert rows["e13"]["session_id"] is None  # machine events have no session
    assert result.derived_session_events == 3


def test_users_and_device_enrichment(built) -> None:
    _, result, rows = built
    e01 = rows["e01"]
    assert (e01["user_signup_date"], e01["user_plan"], e01["user_country"], e01["user_cohort_week"]) == (
        date(2025, 1, 15),
        "pro",
        "US",
        date(2025, 1, 13),
    )
    e06 = rows["e06"]  # from the signup event: date, plan property, locale region
    assert (e06["user_signup_date"], e06["user_plan"], e06["user_country"], e06["user_cohort_week"]) == (
        D2,
        "pro",
        "GB",
        date(2026, 11, 2),
    )
    assert rows["e09"]["user_plan"] is None  # u3 is in no source: kept, null, counted
    unmatched = [e for e, r in rows.items() if r["is_identified"] and r["user_plan"] is None]
    assert result.unmatched_user_events == len(unmatched) == 7  # u3 x4, t2's u1, u4 x2
    assert (e01["device_class"], e01["os_family"], e01["browser_family"]) == ("desktop", "Windows", "Chrome")
    assert (e06["device_class"], e06["os_family"]) == ("mobile", "iOS")
    assert (rows["e05"]["device_class"], rows["e05"]["os_family"]) == ("server", None)  # no user agent


def test_generator_user_agents_parse_to_its_device_labels() -> None:
    for device, _, user_agent, _ in _USER_AGENTS:
        assert parse_user_agent(user_agent)[0] == device, user_agent


def test_country_of_a_locale_in_spark_equals_python(spark) -> None:
    from pyspark.sql import functions as F

    from pipelines.silver.dimensions import _country, country_of

    locales = ["en-US", "en_GB", "de", "pt-br", "zh-Hant-TW", "es-419", "x", "", None, "en-U1", "fr-FRA"]
    frame = spark.createDataFrame([(locale,) for locale in locales], "locale string")
    got = [row[0] for row in frame.select(_country(F.col("locale"))).collect()]
    assert got == [country_of(locale) for locale in locales]
    assert got[:4] == ["US", "GB", None, "BR"]


def test_ip_truncation() -> None:
    assert truncate_ip("198.51.100.200") == "198.51.100.0/24"
    assert truncate_ip("2a02:ab:cd:ef::1") == "2a02:ab:cd::/48"
    assert truncate_ip("not an ip") is None
    assert truncate_ip("10.1.2.3", 16, 48) == "10.1.0.0/16"


def test_hmac_key_is_required_outside_the_local_profile(spark, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAKEHOUSE_PII_HMAC_KEY", raising=False)
    prod = load_settings("prod", environ={})
    with pytest.raises(PiiConfigError, match=r"LAKEHOUSE_PII_HMAC_KEY .* is not set"):
        silver.build(spark, prod, D1, D1)
    assert hmac_key(prod, {"LAKEHOUSE_PII_HMAC_KEY": "s3cret"}) == b"s3cret"


def test_the_development_key_is_only_for_a_local_lake_path(tmp_path: Path) -> None:
    """The public key makes reversible pseudonyms: the local profile may use it on a local disk only."""
    local = lake_settings(tmp_path)
    assert hmac_key(local, {}) == DEV_HMAC_KEY
    on_s3 = lake_settings(tmp_path, lake__root="s3a://bucket/lake")
    with pytest.raises(
        PiiConfigError, match=r"lake s3a://bucket/lake refuses .*only the local profile on a local lake path"
    ):
        hmac_key(on_s3, {})


def test_silver_drops_and_counts_unclassified_properties(spark, tmp_path: Path) -> None:
    shipped = (Path(__file__).parents[1] / "conf" / "pii.yaml").read_text()
    rules = tmp_path / "pii.yaml"
    rules.write_text(shipped.replace("  properties.referrer: strip_query", "").replace("  context.locale: keep", ""))
    settings = lake_settings(tmp_path, silver__pii_rules=str(rules))
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(fixture_rows()))
    result = silver.build(spark, settings, D1, D1)
    rows = {r["event_id"]: r for r in read_rows(spark, silver.events_path(settings))}
    assert json.loads(rows["e01"]["properties"]) == {"page_type": "product", "url": f"{SHOP}/p/sku-1"}
    with_referrer = [e for e in EVENTS if e["occurred_at"].startswith("2026-11-01") and "referrer" in e["properties"]]
    assert result.unclassified_values_dropped == len(with_referrer) > 0
    assert all(row["locale"] is None for row in rows.values())


def test_pii_default_deny(tmp_path: Path) -> None:
    """A field no rule classifies is dropped by silver and named by `schemas check`; the shipped rules classify
    every field of every shipped schema."""
    from pipelines.contracts.registry import SchemaRegistry

    settings = lake_settings(tmp_path)
    registry = SchemaRegistry.load(settings.schemas_dir)
    shipped = load_pii_rules(settings.resolve_path(settings.silver.pii_rules))
    assert shipped.unclassified(registry) == []
    partial = tmp_path / "pii.yaml"
    partial.write_text(
        "fields:\n  user_id: pseudonymize\n  anonymous_id: pseudonymize\n  context.ip: truncate_ip\n"
        "  properties.url: strip_query\n"
    )
    rules = load_pii_rules(partial)
    missing = rules.unclassified(registry)
    assert "envelope.json: context.locale" in missing and "page_view/v2.json: properties.title" in missing
    assert "page_view/v1.json: properties.url" not in missing
    assert rules.property_action("title") == "drop" and not rules.keeps_context("locale")


def test_pii_rules_are_validated(tmp_path: Path) -> None:
    rules = tmp_path / "pii.yaml"
    rules.write_text("fields:\n  user_id: keep\n  anonymous_id: pseudonymize\n")
    with pytest.raises(PiiConfigError, match=r"fields.user_id: action 'keep' not allowed"):
        load_pii_rules(rules)
    rules.write_text("fields:\n  user_id: pseudonymize\n  anonymous_id: pseudonymize\n  properties.title: erase\n")
    with pytest.raises(PiiConfigError, match=r"fields\.properties\.title: unknown action 'erase'"):
        load_pii_rules(rules)


def test_late_event_rebuilds_its_day(spark, tmp_path: Path) -> None:
    settings = lake_settings(tmp_path)
    bronze = Lake(settings).bronze_events
    on_time = [BY_ID["e01"], BY_ID["e07"]]
    write_bronze(
        spark,
        bronze,
        bronze_table(bronze_row(e, ingest(e["occurred_at"]), "events", 0, n) for n, e in enumerate(on_time)),
    )
    first = silver.build(spark, settings, D1, D2)
    assert first.late_days == []
    late = event("l01", "page_view", at(D1, "15:00:00"), user="u1", session="s6", props=page(f"{SHOP}/"))
    write_bronze(spark, bronze, bronze_table([bronze_row(late, ingest(at(D3, "08:00:00")), "events", 0, 9)]))
    second = silver.build(spark, settings, D3, D3)
    assert second.late_days == [D1] and second.days == [D1, D3]
    rows = read_rows(spark, silver.events_path(settings))
    assert sorted((r["event_date"], r["event_id"]) for r in rows) == [(D1, "e01"), (D1, "l01"), (D2, "e07")]


def test_a_signup_restitches_the_visitors_earlier_days(spark, tmp_path: Path) -> None:
    """Daily runs: D1 is built while a1 is still anonymous; the D2 run (a1 signs up) rewrites D1 too."""
    settings = lake_settings(tmp_path)
    bronze = Lake(settings).bronze_events
    visits = [BY_ID["e06"], BY_ID["e01"]]  # a1 browses on D1; u1 is unrelated
    write_bronze(
        spark,
        bronze,
        bronze_table(bronze_row(e, ingest(e["occurred_at"]), "events", 0, n) for n, e in enumerate(visits)),
    )
    day_one = silver.build(spark, settings, D1, D1)
    assert day_one.restitched_days == []
    before = {r["event_id"]: r["user_key"] for r in read_rows(spark, silver.events_path(settings))}
    assert before["e06"] == key_of(settings, "t1", "a1")

    write_bronze(
        spark, bronze, bronze_table([bronze_row(BY_ID["e07"], ingest(BY_ID["e07"]["occurred_at"]), "events", 0, 2)])
    )
    day_two = silver.build(spark, settings, D2, D2)
    assert day_two.restitched_days == [D1] and day_two.days == [D1, D2] and day_two.late_days == []
    rows = {r["event_id"]: r for r in read_rows(spark, silver.events_path(settings))}
    u2 = key_of(settings, "t1", "u2")
    assert (rows["e06"]["user_key"], rows["e07"]["user_key"]) == (u2, u2)
    assert rows["e01"]["user_key"] == key_of(settings, "t1", "u1")

    replay = silver.build(spark, settings, D2, D2, include_late=False)  # replays rebuild exactly their range
    assert replay.restitched_days == [] and replay.days == [D2]


def test_dimension_tables_reload_per_tenant_and_insert_only_new_agents(spark, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from pipelines.platform import tables
    from pipelines.silver.dimensions import devices_path, load_users, refresh_devices, users_path

    settings = lake_settings(tmp_path)
    key = hmac_key(settings)
    assert load_users(spark, settings, key).rows == 2  # every tenant, from the file alone

    edited = "tenant_id,user_id,signup_date,plan,country\nt1,u1,2025-01-15,enterprise,US\nt2,u9,2024-05-01,pro,DE\n"
    (tmp_path / "dims" / "users.csv").write_text(edited)
    assert load_users(spark, settings, key, ["t1"]).tenants == ["t1"]
    plans = {(r["tenant_id"], r["user_key"]): r["plan"] for r in read_rows(spark, users_path(settings))}
    assert plans == {("t1", key_of(settings, "t1", "u1")): "enterprise", ("t2", key_of(settings, "t2", "u9")): "free"}
    (tmp_path / "dims" / "users.csv").write_text(edited.splitlines()[0] + "\n")
    assert load_users(spark, settings, key, ["t2"]).rows == 0  # t2 has no users left: emptied
    assert [r["tenant_id"] for r in read_rows(spark, users_path(settings))] == ["t1"]

    path = devices_path(settings)
    assert refresh_devices(spark, settings, spark.createDataFrame([(DESKTOP_UA,), (None,)], "ua string"), key) == 1
    both = spark.createDataFrame([(DESKTOP_UA,), (IPHONE_UA,), (IPHONE_UA,)], "ua string")
    assert refresh_devices(spark, settings, both, key) == 1  # only the unknown agent is parsed and inserted
    assert refresh_devices(spark, settings, both, key) == 0
    devices = {r["user_agent_key"]: r["device_class"] for r in DeltaTable(path).to_pyarrow_table().to_pylist()}
    assert devices == {  # keyed pseudonyms of the agents, never the agents (delta-rs reads what Spark wrote)
        pseudonym(key, USER_AGENT_NAMESPACE, DESKTOP_UA): "desktop",
        pseudonym(key, USER_AGENT_NAMESPACE, IPHONE_UA): "mobile",
    }
    assert [entry["operation"] for entry in tables.history(spark, path)] == ["MERGE", "WRITE"]


HEADER = "tenant_id,user_id,signup_date,plan,country\n"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("t1,u1,2025-01-15,pro,US\nt1,,2025-01-15,pro,US\n", ":3: user_id='': must not be empty"),
        ("t1,u1,2025-02-30,pro,US\n", ":2: signup_date='2025-02-30': expected YYYY-MM-DD"),
        ("t1,u1,2025-1-5,pro,US\n", ":2: signup_date='2025-1-5': expected YYYY-MM-DD"),
        ("t1,u1,,gold,US\n", ":2: plan='gold': expected one of ('free', 'pro', 'enterprise')"),
        ("t1,u1,,,us\n", ":2: country='us': expected an ISO 3166 alpha-2 code such as US"),
        (",,x,y,z\n", ":2: tenant_id='': must not be empty"),  # a line's first failing column is the one named
        ("t1,u1,2025-01-15,pro,US\nt1,u2\n", ":3: expected 5 comma-separated values, got 2"),
    ],
)
def test_a_bad_users_file_line_stops_the_load_naming_file_line_and_column(
    tmp_path: Path, lines: str, message: str
) -> None:
    from pipelines.silver.dimensions import DimensionError, read_users_file

    path = tmp_path / "users.csv"
    path.write_text(HEADER + lines)
    with pytest.raises(DimensionError) as raised:
        read_users_file(path)
    assert str(raised.value) == f"{path}{message}"
    path.write_text("user_id,tenant_id\n")
    with pytest.raises(DimensionError, match=r"users.csv: header must be tenant_id,user_id,signup_date,plan,country"):
        read_users_file(path)


def test_the_users_file_is_read_with_empty_values_as_nulls(tmp_path: Path) -> None:
    from pipelines.silver.dimensions import read_users_file

    path = tmp_path / "users.csv"
    path.write_text(HEADER + 't1,u1,2025-01-15,pro,US\nt2,"u,2",,,\n')
    assert read_users_file(path).to_pylist() == [
        {"tenant_id": "t1", "user_id": "u1", "signup_date": date(2025, 1, 15), "plan": "pro", "country": "US"},
        {"tenant_id": "t2", "user_id": "u,2", "signup_date": None, "plan": None, "country": None},
    ]
    assert read_users_file(tmp_path / "missing.csv").num_rows == 0


def test_unknown_tenants_fail_with_the_known_ones(
    spark, built, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo in --tenant (or in the users file) stops the job before any table is touched, naming the tenants
    the data holds; nothing is silently built for nobody."""
    from conftest import write_config

    from pipelines.cli import main
    from pipelines.platform import tables
    from pipelines.platform.batch import BatchJobError
    from pipelines.silver.dimensions import load_users

    settings, _, _ = built
    version = tables.table_version(spark, silver.events_path(settings))
    with pytest.raises(BatchJobError, match=r"unknown tenant\(s\) t3, tx: bronze.events holds t1, t2$"):
        silver.build(spark, settings, D1, D1, ["t1", "tx", "t3"])
    config = write_config(settings, tmp_path / "lakehouse.yaml")  # profile "test": needs a key of its own
    monkeypatch.setenv(settings.pii.hmac_key_env, "test-key")
    argv = ["--config", str(config), "silver", "build", "--from", "2026-11-01", "--to", "2026-11-01", "--tenant", "tx"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown tenant(s) tx: bronze.events holds t1, t2" in err and "Traceback" not in err
    assert tables.table_version(spark, silver.events_path(settings)) == version

    # the users file may name a tenant bronze has not seen (not sent events yet, or a typo): loaded and reported
    (tmp_path / "users.csv").write_text(USERS_CSV + "t1x,u5,2025-02-01,free,US\n")
    elsewhere = settings.model_copy(
        update={"silver": settings.silver.model_copy(update={"dimensions_dir": str(tmp_path)})}
    )
    loaded = load_users(spark, elsewhere, hmac_key(elsewhere), ["t1"])
    assert loaded.tenants_without_events == ["t1x"] and loaded.tenants == ["t1"]
    with pytest.raises(BatchJobError, match=r"unknown tenant\(s\) t1x: bronze.events holds t1, t2$"):
        load_users(spark, elsewhere, hmac_key(elsewhere), ["t1x"])


DEDUP_DAYS = [date(2026, 11, d) for d in range(1, 21)]


def _copies_lake(spark, root: Path) -> Settings:
    """Four events each re-sent with a re-stamped occurred_at, in the order the copies were ingested:
    r1 1 day later, r2 2 days later, r6 6 days later, r10 10 days later (beyond the 7-day horizon). rb's
    re-sent copy was ingested FIRST but carries the earlier time: the earlier-ingested copy (day 9) is kept."""
    rows = []
    for n, (name, first, second) in enumerate([("r1", 2, 3), ("r2", 4, 6), ("r6", 5, 11), ("r10", 3, 13)]):
        for copy, (day, ingested) in enumerate([(first, first), (second, second)]):
            e = event(name, "login", at(date(2026, 11, day), "09:00:00"), user="u1", props={"method": "password"})
            rows.append(bronze_row(e, ingest(at(date(2026, 11, ingested), "09:00:05")), "events", copy, n))
    late = event("rb", "login", at(date(2026, 11, 9), "09:00:00"), user="u1", props={"method": "password"})
    rows.append(bronze_row(late, ingest(at(date(2026, 11, 10), "09:00:05")), "events", 0, 10))
    early = {**late, "occurred_at": at(date(2026, 11, 5), "09:00:00")}  # re-stamped earlier, ingested later
    rows.append(bronze_row(early, ingest(at(date(2026, 11, 12), "09:00:05")), "events", 1, 10))
    settings = lake_settings(root)
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(rows))
    return settings


def _kept(spark, settings: Settings) -> list[tuple[str, date]]:
    rows = spark.read.format("delta").load(silver.events_path(settings)).select("event_id", "event_date").collect()
    return sorted((r["event_id"], r["event_date"]) for r in rows)


EXPECTED_COPIES = [
    ("r1", date(2026, 11, 2)),
    ("r10", date(2026, 11, 3)),
    ("r10", date(2026, 11, 13)),  # 10 days apart: beyond the horizon, two events
    ("r2", date(2026, 11, 4)),
    ("r6", date(2026, 11, 5)),
    ("rb", date(2026, 11, 9)),  # the first ingested copy, although the other says it happened earlier
]


@pytest.mark.parametrize("order", ["one run", "daily runs forward", "daily runs backward"])
def test_copies_with_restamped_times_are_one_event_within_the_horizon(spark, tmp_path: Path, order: str) -> None:
    """(tenant_id, event_id) is unique in silver within the dedup horizon whatever the copies' occurred_at and
    whichever days are built in which order: the first ingested copy is kept."""
    settings = _copies_lake(spark, tmp_path)
    if order == "one run":
        silver.build(spark, settings, DEDUP_DAYS[0], DEDUP_DAYS[-1], include_late=False)
    else:  # without gates: eight builds, and dedup is the subject here (test_gates.py covers the gates)
        days = DEDUP_DAYS if order == "daily runs forward" else DEDUP_DAYS[::-1]
        for day in days:
            if day in {date(2026, 11, d) for d in (2, 3, 4, 5, 6, 9, 11, 13)}:  # the days holding copies
                silver.build(spark, settings, day, day, include_late=False, skip_gates=True)
    assert _kept(spark, settings) == EXPECTED_COPIES

"""GDPR erasure: one person (a user and the visitor they were before signing up) leaves every table; gold is
rebuilt without them; everyone else's rows are unchanged; the request is recorded without the id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_silver import lake_settings

from pipelines import gold, silver
from pipelines.bronze import ensure_tables
from pipelines.erasure import ErasureError, erase
from pipelines.platform.batch import table_exists
from pipelines.platform.lake import Lake
from pipelines.platform.registry import BRONZE_QUARANTINE_SCHEMA, TABLES
from pipelines.silver.dimensions import users_path
from pipelines.silver.pii import hmac_key, pseudonym
from pipelines.synthetic.bronze import bronze_rows_from_generated, bronze_table, write_bronze
from pipelines.synthetic.generator import GeneratorSpec, generate
from pipelines.synthetic.users import sample_users, write_users_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SPEC = GeneratorSpec(seed=31, tenants=2, users_per_tenant=20, days=2, duplicate_rate=0.05, late_rate=0.0)


def _rows(spark, path: str) -> list[dict]:
    return [row.asDict() for row in spark.read.format("delta").load(path).collect()]


def _dau(spark, settings) -> dict[tuple, int]:
    return {
        (r["tenant_id"], r["date"]): r["dau"] for r in _rows(spark, gold.table_path(settings, "daily_active_users"))
    }


def _quarantine(spark, settings, raw: bytes, offset: int) -> None:
    from datetime import UTC, datetime

    from pyspark.sql.pandas.types import from_arrow_schema

    now = datetime.now(UTC)
    row = (b"k", raw, None, "[]", "not JSON", None, "acme", "user.activity", 0, offset, now, now, now.date())
    frame = spark.createDataFrame([row], from_arrow_schema(BRONZE_QUARANTINE_SCHEMA))
    frame.write.format("delta").mode("append").save(Lake(settings).bronze_quarantine)


def test_erasure_removes_the_person_everywhere_and_keeps_everyone_else(spark, tmp_path: Path) -> None:
    settings = lake_settings(tmp_path / "lake_root", users_csv="tenant_id,user_id,signup_date,plan,country\n")
    messages, _ = generate(SPEC, settings.kafka.topic_for_event_type)
    write_users_file(sample_users(messages), Path(settings.resolve_path(settings.silver.dimensions_dir)) / "users.csv")
    lake = Lake(settings)
    write_bronze(spark, lake.bronze_events, bronze_table(bronze_rows_from_generated(messages)))
    events = [json.loads(m.value) for m in messages if m.kind == "valid"]
    signup = next(e for e in events if e["event_type"] == "signup" and e["tenant_id"] == "acme" and e["anonymous_id"])
    user, visitor = signup["user_id"], signup["anonymous_id"]
    ensure_tables(spark, settings)
    _quarantine(spark, settings, f'{{"user_id": "{user}", "event_type": '.encode(), 1)  # truncated: not JSON
    _quarantine(spark, settings, b'{"user_id": "someone-else", "event_type": ', 2)
    first, last = SPEC.start_date, SPEC.start_date.replace(day=SPEC.start_date.day + SPEC.days - 1)
    silver.build(spark, settings, first, last)
    gold.build(spark, settings, first, last)

    key = hmac_key(settings)
    person_keys = {pseudonym(key, "acme", user), pseudonym(key, "acme", visitor)}
    silver_before = _rows(spark, silver.events_path(settings))
    mine = [r for r in silver_before if r["tenant_id"] == "acme" and r["user_key"] in person_keys]
    assert mine and any(r["is_identified"] is False or r["session_is_derived"] is not None for r in mine)
    person_days = {r["event_date"] for r in mine}
    others_before = sorted(repr(sorted(r.items())) for r in silver_before if r not in mine)
    dau_before = {
        (r["tenant_id"], r["date"]): r["dau"] for r in _rows(spark, gold.table_path(settings, "daily_active_users"))
    }
    bronze_before = _rows(spark, lake.bronze_events)
    bronze_mine = [
        r for r in bronze_before if r["tenant_id"] == "acme" and (r["user_id"] == user or r["anonymous_id"] == visitor)
    ]
    assert any(r["user_id"] is None for r in bronze_mine), "the visitor's anonymous events are part of the person"

    result = erase(spark, settings, "acme", user_id=user)

    assert result.rows_deleted["bronze.events"] == len(bronze_mine)
    assert result.rows_deleted["bronze.quarantine"] == 1
    assert result.rows_deleted["silver.events"] == len(mine)
    assert result.rows_deleted["silver.dim_users"] == 1
    # Scan every table of the lake for the raw ids and the person's pseudonyms.
    for spec in TABLES:
        path = lake.table(spec.layer, spec.name)
        if not table_exists(settings, path):
            continue
        text = "\n".join(repr(row) for row in _rows(spark, path))
        for needle in (user, visitor, *person_keys):
            assert needle not in text, f"{spec.full_name} still holds {needle[:12]}..."
    # Everyone else is untouched; gold counts the person no more.
    others_after = sorted(repr(sorted(r.items())) for r in _rows(spark, silver.events_path(settings)))
    assert others_after == others_before
    assert len(_rows(spark, lake.bronze_events)) == len(bronze_before) - len(bronze_mine)
    assert [r["raw_value"] for r in _rows(spark, lake.bronze_quarantine)] == [
        b'{"user_id": "someone-else", "event_type": '
    ]
    dau_after = {
        (r["tenant_id"], r["date"]): r["dau"] for r in _rows(spark, gold.table_path(settings, "daily_active_users"))
    }
    expected = {k: v - (1 if k[0] == "acme" and k[1] in person_days else 0) for k, v in dau_before.items()}
    assert dau_after == expected
    assert len(_rows(spark, users_path(settings))) > 0

    recorded = _rows(spark, lake.table("ops", "erasure_requests"))
    assert [(r["tenant_id"], r["identity_kind"], r["status"]) for r in recorded] == [("acme", "user_id", "done")]
    assert json.loads(recorded[0]["rows_deleted"])["silver.events"] == len(mine)

    with pytest.raises(ErasureError, match="exactly one of"):
        erase(spark, settings, "acme")
    with pytest.raises(ErasureError, match=r"has no rows in bronze\.events"):
        erase(spark, settings, "nobody", user_id=user)

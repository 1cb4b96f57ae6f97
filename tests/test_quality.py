"""Quality gates (pipelines.quality) on real Spark + Great Expectations 1.24.

Expected values come from the hand-built rows (which rows were made bad, and how), never from the code under
test. Suite-file checks need no Spark; everything else shares the session's SparkSession (``spark``).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.quality import (
    RESULTS_SCHEMA,
    GateFailed,
    SuiteError,
    load_suite,
    load_suites,
    run_gate,
    validate,
    write_results,
)
from pipelines.quality.predicates import QUARANTINE_TYPES
from pipelines.quality.runner import SMALL_FRAME_ROWS, render_docs

EXPECTATIONS_DIR = Path(__file__).resolve().parents[1] / "expectations"
EVENT_TYPES = ["page_view", "product_view", "add_to_cart", "order_completed", "system_alert"]
PARAMS = {
    "event_types": [*EVENT_TYPES, "checkout_started", "login", "signup"],
    "tenants": ["t1", "t2"],
    "max_event_age_days": 7,
    "min_user_match_rate": 0.9,
    "max_quarantine_rate": 0.05,
}
N = 200
BAD_USER_KEYS = {5, 17, 42}  # raw ids instead of pseudonyms
UNKNOWN_TENANT = {7, 8, 9}  # tenant t9
NEGATIVE_AMOUNT = {8, 100}  # row 8 is also of an unknown tenant: it breaks two rules
NULL_AMOUNT = {120}  # GX ignores nulls in value checks: not a failure
NO_SESSION = {30, 31}  # 30 is a system_alert (allowed), 31 a page_view (not)
EVENTS_SCHEMA = (
    "tenant_id string, event_id string, event_type string, user_key string, amount double, session_id string"
)


def key(i: int) -> str:
    return hashlib.sha256(f"user-{i % 17}".encode()).hexdigest()


def event_rows() -> list[tuple[Any, ...]]:
    rows = []
    for i in range(N):
        event_type = "system_alert" if i == 30 else EVENT_TYPES[i % 4]
        rows.append(
            (
                "t9" if i in UNKNOWN_TENANT else ("t1" if i % 2 else "t2"),
                f"e{i:03d}",
                event_type,
                f"raw-user-{i}" if i in BAD_USER_KEYS else key(i),
                None if i in NULL_AMOUNT else (-1.0 if i in NEGATIVE_AMOUNT else float(i % 50)),
                None if i in NO_SESSION else f"s{i % 9}",
            )
        )
    return rows


@pytest.fixture(scope="module")
def events(spark):
    return spark.createDataFrame(event_rows(), EVENTS_SCHEMA)


def write_suite(directory: Path, expectations: list[dict[str, Any]], table: str = "silver.events", **top: Any) -> Path:
    path = directory / f"{table}.yaml"
    path.write_text(yaml.safe_dump({"table": table, **top, "expectations": expectations}, sort_keys=False))
    return path


def rule(name: str, type_: str, kwargs: dict[str, Any], action: str = "fail", **more: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "kwargs": kwargs, "action": action, "why": f"why {name}", **more}


PSEUDONYM = rule(
    "user_key_is_pseudonym", "expect_column_values_to_match_regex", {"column": "user_key", "regex": "^[0-9a-f]{64}$"}
)
TENANT_KNOWN = rule(
    "tenant_known", "expect_column_values_to_be_in_set", {"column": "tenant_id", "value_set": "${tenants}"},
    "quarantine", max_failure_pct=5.0,
)  # fmt: skip
AMOUNT_NON_NEGATIVE = rule(
    "amount_non_negative", "ExpectColumnValuesToBeBetween", {"column": "amount", "min_value": 0},
    "quarantine", max_failure_pct=5.0,
)  # fmt: skip
SESSION_FOR_USERS = rule(
    "session_for_user_events", "expect_column_values_to_not_be_null", {"column": "session_id"},
    "quarantine", max_failure_pct=5.0, where="event_type != 'system_alert'",
)  # fmt: skip


# ---------------------------------------------------------------- suite files (no Spark)


def test_shipped_suites_load() -> None:
    suites = load_suites(EXPECTATIONS_DIR, PARAMS)
    assert set(suites) >= {
        "bronze.events",
        "silver.events",
        "gold.daily_active_users",
        "gold.event_counts",
        "gold.funnels",
        "gold.revenue",
    }
    for table, suite in suites.items():
        assert Path(suite.source).name == f"{table}.yaml" and suite.rules and suite.key_columns
    bronze = suites["bronze.events"]
    assert bronze.rule("event_type_registered").kwargs["value_set"] == PARAMS["event_types"]
    assert bronze.rule("occurred_near_ingestion").kwargs["max_value"] == 7  # a number, not the string "7"
    assert {r.action for r in bronze.rules} == {"fail", "warn"}  # bronze is immutable input: no quarantine
    silver = suites["silver.events"]
    assert silver.rule("user_enrichment_match_rate").kwargs["mostly"] == 0.9
    assert silver.rule("session_for_user_events").where == "event_type != 'system_alert'"


def test_shipped_suite_without_its_params_names_the_placeholder() -> None:
    with pytest.raises(SuiteError, match=r"silver\.events\.yaml: expectations\[3\]\.kwargs\.value_set: unresolved "):
        load_suite(EXPECTATIONS_DIR / "silver.events.yaml", {"min_user_match_rate": 0.9})


MALFORMED = {
    "unknown expectation": (
        [rule("r", "expect_column_values_to_be_purple", {"column": "a"})],
        r"expectations\[0\] \(r\)\.type: unknown GX expectation 'expect_column_values_to_be_purple'; did you mean",
    ),
    "bad kwargs type": (
        [rule("r", "expect_column_values_to_be_in_set", {"column": "a", "value_set": 5})],
        r"expectations\[0\] \(r\)\.kwargs\.value_set: value is not a valid list",
    ),
    "unknown kwarg": (
        [rule("r", "expect_column_values_to_not_be_null", {"column": "a", "colour": "red"})],
        r"expectations\[0\] \(r\)\.kwargs\.colour: extra fields not permitted",
    ),
    "missing kwarg": (
        [rule("r", "expect_column_values_to_not_be_null", {})],
        r"expectations\[0\] \(r\)\.kwargs\.column: field required",
    ),
    "unknown action": (
        [
            rule("ok", "expect_column_values_to_not_be_null", {"column": "a"}),
            rule("r", "expect_column_values_to_not_be_null", {"column": "a"}, "drop"),
        ],
        r"expectations\[1\] \(r\)\.action: unknown action 'drop'; expected one of fail, warn, quarantine",
    ),
    "pct above 100": (
        [rule("r", "expect_column_values_to_not_be_null", {"column": "a"}, "quarantine", max_failure_pct=150)],
        r"expectations\[0\] \(r\)\.max_failure_pct: expected a number in 0\.\.100",
    ),
    "pct not a number": (
        [rule("r", "expect_column_values_to_not_be_null", {"column": "a"}, "quarantine", max_failure_pct="1%")],
        r"expectations\[0\] \(r\)\.max_failure_pct: expected a number in 0\.\.100",
    ),
    "pct without quarantine": (
        [rule("r", "expect_column_values_to_not_be_null", {"column": "a"}, "warn", max_failure_pct=1)],
        r"expectations\[0\] \(r\)\.max_failure_pct: only for action quarantine",
    ),
    "quarantine without pct": (
        [rule("r", "expect_column_values_to_not_be_null", {"column": "a"}, "quarantine")],
        r"expectations\[0\] \(r\)\.max_failure_pct: required for quarantine",
    ),
    "quarantine without predicate": (
        [rule("r", "expect_table_row_count_to_be_between", {"min_value": 1}, "quarantine", max_failure_pct=1)],
        r"expectations\[0\] \(r\)\.action: quarantine needs a row-level Spark predicate, and "
        r"expect_table_row_count_to_be_between has none",
    ),
    "mostly with quarantine": (
        [
            rule(
                "r",
                "expect_column_values_to_not_be_null",
                {"column": "a", "mostly": 0.9},
                "quarantine",
                max_failure_pct=1,
            )
        ],
        r"expectations\[0\] \(r\)\.kwargs\.mostly: not with quarantine",
    ),
    "missing key": (
        [{"name": "r", "type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}, "action": "fail"}],
        r"expectations\[0\]: missing key\(s\) why",
    ),
    "unknown rule key": (
        [{**rule("r", "expect_column_values_to_not_be_null", {"column": "a"}), "severity": "high"}],
        r"expectations\[0\]: unknown key\(s\) \['severity'\]",
    ),
    "row_condition in kwargs": (
        [rule("r", "expect_column_values_to_not_be_null", {"column": "a", "row_condition": "b > 1"})],
        r"expectations\[0\] \(r\)\.kwargs\.row_condition: not allowed here: use the rule's 'where' key",
    ),
    "unresolved placeholder": (
        [rule("r", "expect_column_values_to_be_between", {"column": "a", "max_value": "${nope}"})],
        r"expectations\[0\]\.kwargs\.max_value: unresolved placeholder \$\{nope\}; params given: tenants",
    ),
    "duplicate name": (
        [rule("r", "expect_column_values_to_not_be_null", {"column": "a"})] * 2,
        r"expectations\[1\]\.name: 'r' is used twice",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_suite_fails_at_load_naming_file_and_key(tmp_path: Path, case: str) -> None:
    expectations, message = MALFORMED[case]
    path = write_suite(tmp_path, expectations)
    with pytest.raises(SuiteError, match=re.escape(str(path)) + ": " + message):
        load_suite(path, {"tenants": ["t1"]})


@pytest.mark.parametrize(
    "document, message",
    [
        ({"table": "silver.events", "expectations": [], "owner": "me"}, r"unknown top-level key\(s\) \['owner'\]"),
        ({"table": "silver.events", "expectations": []}, r"expectations: expected a non-empty list"),
        ({"table": "gold.revenue", "expectations": [{}]}, r"table: 'gold.revenue' does not match the file name"),
        ({"expectations": [{}]}, r"table: expected '<layer>.<table>'"),
        ({"table": "silver.events", "derived_columns": {"x y": "1"}, "expectations": [{}]}, r"derived_columns\.x y"),
        ("- just a list", r"expected a mapping with the keys table and expectations"),
    ],
)
def test_malformed_suite_top_level(tmp_path: Path, document: Any, message: str) -> None:
    path = tmp_path / "silver.events.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    with pytest.raises(SuiteError, match=re.escape(str(path)) + ": " + message):
        load_suite(path)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"suite file not found: .*nowhere\.yaml"):
        load_suite(tmp_path / "nowhere.yaml")
    broken = tmp_path / "silver.events.yaml"
    broken.write_text("table: [unclosed")
    with pytest.raises(SuiteError, match=re.escape(str(broken)) + ": not valid YAML"):
        load_suite(broken)


# ---------------------------------------------------------------- gates on Spark


@pytest.mark.integration
def test_fail_rule_fails_the_gate_with_one_line_per_rule(spark, events, tmp_path: Path) -> None:
    rows_of_t9 = rule(
        "no_unknown_tenant", "expect_column_values_to_be_in_set", {"column": "tenant_id", "value_set": ["t1", "t2"]}
    )
    ok = rule("event_id_present", "expect_column_values_to_not_be_null", {"column": "event_id"})
    suite = load_suite(write_suite(tmp_path, [ok, PSEUDONYM, rows_of_t9], key_columns=["tenant_id", "event_id"]))
    results = str(tmp_path / "ops" / "quality_results")

    with pytest.raises(GateFailed) as failed:
        run_gate(events, suite, run_id="run-fail", results_path=results)

    result = failed.value.result
    assert result.outcome == "failed" and [r.name for r in result.failures] == [
        "user_key_is_pseudonym",
        "no_unknown_tenant",
    ]
    lines = str(failed.value).splitlines()
    assert lines[0] == "quality gate failed for silver.events (suite silver.events.yaml, run run-fail):"
    assert len(lines) == 3
    assert re.fullmatch(
        r"  silver\.events: user_key_is_pseudonym \(expect_column_values_to_match_regex\) 3 unexpected \(1\.50%\); "
        r'sample \[\{"event_id":"e005","tenant_id":"t1","user_key":"raw-user-5"\},.*\]; why: why user_key_is_pseudonym',
        lines[1],
    ), lines[1]
    assert "no_unknown_tenant" in lines[2] and "3 unexpected" in lines[2] and '"tenant_id":"t9"' in lines[2]
    pseudonym = next(r for r in result.rules if r.name == "user_key_is_pseudonym")
    assert sorted(s["event_id"] for s in pseudonym.failing_sample) == ["e005", "e017", "e042"]
    # written before raising: the failure is visible in the ops table
    recorded = {
        r["expectation"]: r for r in (row.asDict() for row in spark.read.format("delta").load(results).collect())
    }
    assert recorded["user_key_is_pseudonym"]["action"] == "fail" and recorded["event_id_present"]["action"] == "none"
    assert (
        recorded["event_id_present"]["success"] is True and recorded["user_key_is_pseudonym"]["unexpected_count"] == 3
    )


@pytest.mark.integration
def test_warn_rule_publishes_everything_and_records(spark, events, tmp_path: Path) -> None:
    from pyspark import StorageLevel

    small_amounts = rule(
        "amounts_mostly_small",
        "expect_column_values_to_be_between",
        {"column": "amount", "max_value": 9, "mostly": 0.5},
        "warn",
    )
    session = {**SESSION_FOR_USERS, "action": "warn"}
    del session["max_failure_pct"]
    suite = load_suite(write_suite(tmp_path, [small_amounts, session], key_columns=["event_id"]))

    with validate(events, suite, run_id="run-warn", docs_dir=tmp_path / "docs") as result:
        result.raise_if_failed()  # does not raise
        assert result.outcome == "warned" and result.quarantined is None
        # cached the way Spark caches a DataFrame by default; pyspark's StorageLevel.MEMORY_AND_DISK is serialized
        assert result.persisted is not None
        assert result.persisted.storageLevel == StorageLevel.MEMORY_AND_DISK_DESER
        assert result.passing.count() == N
        assert [r.name for r in result.warnings] == ["amounts_mostly_small", "session_for_user_events"]
        amounts, sessions = result.rules
        # amounts 10..49 of every 50 fail; rows 8 and 100 (-1.0) pass; row 120 (null) is not counted
        expected_bad = sum(1 for i in range(N) if i not in NEGATIVE_AMOUNT | NULL_AMOUNT and i % 50 > 9)
        assert amounts.unexpected_count == expected_bad and amounts.element_count == N
        assert len(amounts.failing_sample) == 20  # capped
        assert sessions.unexpected_count == 1 and sessions.failing_sample == [{"event_id": "e031", "session_id": None}]
        assert sessions.element_count == N - 1  # the system_alert row is outside the rule's where


@pytest.mark.integration
@pytest.mark.parametrize("collect", [False, True], ids=["persisted", "collected"])
def test_quarantine_splits_rows_exactly(spark, events, tmp_path: Path, collect: bool) -> None:
    suite = load_suite(
        write_suite(tmp_path, [PSEUDONYM | {"action": "warn"}, TENANT_KNOWN, AMOUNT_NON_NEGATIVE, SESSION_FOR_USERS]),
        {"tenants": ["t1", "t2"]},
    )

    with validate(events, suite, run_id="run-q", collect=collect) as result:
        assert result.outcome == "quarantined" and not result.failed
        passing = {row.event_id: row for row in result.passing.collect()}
        quarantined = {row.event_id: row for row in result.quarantined.collect()}

    bad = UNKNOWN_TENANT | NEGATIVE_AMOUNT | {31}
    assert sorted(quarantined) == sorted(f"e{i:03d}" for i in bad)
    assert len(passing) + len(quarantined) == N and not set(passing) & set(quarantined)
    assert result.input_rows == N and result.quarantined_rows == len(bad)
    assert list(result.passing.columns) == list(events.columns)  # no helper columns leak
    assert result.quarantined.columns == [*events.columns, "_rule", "_reason"]
    assert quarantined["e008"]._rule == "tenant_known,amount_non_negative"
    assert quarantined["e008"]._reason == (
        "tenant_known: tenant_id=t9 (why tenant_known); amount_non_negative: amount=-1.0 (why amount_non_negative)"
    )
    assert quarantined["e031"]._rule == "session_for_user_events"
    assert quarantined["e031"]._reason == "session_for_user_events: session_id=null (why session_for_user_events)"
    assert "e030" in passing and "e120" in passing  # a system_alert without session; a null amount
    assert "e005" in passing  # a warn rule never removes rows
    by_name = {r.name: r for r in result.rules}
    assert (by_name["tenant_known"].quarantined_rows, by_name["amount_non_negative"].quarantined_rows) == (3, 2)
    assert by_name["tenant_known"].quarantined_pct == pytest.approx(1.5)
    assert by_name["user_key_is_pseudonym"].action_taken == "warn"


@pytest.mark.integration
def test_a_collected_frame_is_validated_and_published_from_the_driver_with_its_types(spark, tmp_path: Path) -> None:
    """``collect=True`` (gold's aggregates): one computation, then every read - GX, the caller's write - plans over
    the rows held by the driver, with the Spark types unchanged (dates, microsecond timestamps, decimals, nulls)."""
    schema = (
        "tenant_id string, date date, at timestamp, revenue decimal(18,2), users long, rate double, tags array<string>"
    )
    rows = [
        (
            "t1",
            date(2026, 3, 1),
            datetime(2026, 3, 1, 23, 59, 59, 123456, tzinfo=UTC),
            Decimal("1234.56"),
            3,
            0.5,
            ["a"],
        ),
        ("t2", date(2026, 3, 2), None, None, 0, None, []),
    ]
    frame = spark.createDataFrame(rows, schema).where("users >= 0")  # a plan, not a local relation
    users_known = rule("users_known", "expect_column_values_to_not_be_null", {"column": "users"})
    suite = load_suite(write_suite(tmp_path, [users_known], table="gold.example", key_columns=["tenant_id", "date"]))

    with validate(frame, suite, run_id="run-collect", collect=True) as result:
        assert result.outcome == "passed" and result.input_rows == 2 and result.persisted is None
        assert result.passing.schema == frame.schema
        assert sorted(result.passing.collect()) == sorted(frame.collect())
        plan = result.passing._jdf.queryExecution().optimizedPlan().toString()
        assert "LocalRelation" in plan and "Filter" not in plan, plan


@pytest.mark.integration
def test_quarantine_over_max_failure_pct_escalates_to_fail(spark, events, tmp_path: Path) -> None:
    strict = TENANT_KNOWN | {"max_failure_pct": 1.0}  # 3 of 200 rows = 1.5%
    suite = load_suite(write_suite(tmp_path, [strict, AMOUNT_NON_NEGATIVE]), {"tenants": ["t1", "t2"]})

    with validate(events, suite, run_id="run-esc") as result:
        assert result.outcome == "failed"
        tenant, amount = result.rules
        assert (tenant.escalated, tenant.action_taken, tenant.quarantined_rows) == (True, "fail", 3)
        assert (amount.escalated, amount.action_taken) == (False, "quarantine")
        with pytest.raises(GateFailed, match=r"tenant_known \(expect_column_values_to_be_in_set\) 3 rows to "
                           r"quarantine \(1\.50% of the input\) exceed max_failure_pct"):  # fmt: skip
            result.raise_if_failed()


@pytest.mark.integration
def test_every_quarantine_predicate_selects_the_rows_gx_counts(spark, tmp_path: Path) -> None:
    """One rule per supported type, on data with nulls, duplicates and edge values: the gate fails a rule
    whose predicate count differs from GX's, so no rule may carry an error, and each must catch its rows."""
    rows = [
        # id, a, b, s, t
        (1, 1, 1, "ab", "x"),
        (2, 5, 3, "abc", "x"),
        (3, 3, 5, None, "y"),
        (4, None, 2, "zzzz", "y"),
        (5, None, None, "a", None),
        (6, 9, 9, "ab", "z"),
        (7, 2, None, "ab", "x"),
    ]
    frame = spark.createDataFrame(rows, "id int, a int, b int, s string, t string")
    q = {"action": "quarantine", "max_failure_pct": 100}
    rules = [
        rule("not_null", "expect_column_values_to_not_be_null", {"column": "a"}, **q),
        rule("null", "expect_column_values_to_be_null", {"column": "t"}, **q),
        rule("in_set", "expect_column_values_to_be_in_set", {"column": "t", "value_set": ["x", "y"]}, **q),
        rule("not_in_set", "expect_column_values_to_not_be_in_set", {"column": "t", "value_set": ["x"]}, **q),
        rule("regex", "expect_column_values_to_match_regex", {"column": "s", "regex": "^ab"}, **q),
        rule("not_regex", "expect_column_values_to_not_match_regex", {"column": "s", "regex": "c$"}, **q),
        rule(
            "between",
            "expect_column_values_to_be_between",
            {"column": "a", "min_value": 2, "max_value": 5, "strict_max": True},
            **q,
        ),
        rule(
            "lengths", "expect_column_value_lengths_to_be_between", {"column": "s", "min_value": 2, "max_value": 3}, **q
        ),
        rule("length", "expect_column_value_lengths_to_equal", {"column": "s", "value": 2}, **q),
        rule("a_gt_b", "expect_column_pair_values_a_to_be_greater_than_b", {"column_A": "a", "column_B": "b"}, **q),
        rule(
            "a_ge_b",
            "expect_column_pair_values_a_to_be_greater_than_b",
            {"column_A": "a", "column_B": "b", "or_equal": True, "ignore_row_if": "neither"},
            **q,
        ),
        rule("a_eq_b", "expect_column_pair_values_to_be_equal", {"column_A": "a", "column_B": "b"}, **q),
        rule("unique", "expect_column_values_to_be_unique", {"column": "s"}, **q, where="id > 1"),
        rule("compound", "expect_compound_columns_to_be_unique", {"column_list": ["s", "t"]}, **q),
    ]
    assert {r["type"] for r in rules} == QUARANTINE_TYPES
    suite = load_suite(write_suite(tmp_path, rules, key_columns=["id"]))

    with validate(frame, suite, run_id="run-mirror") as result:
        errors = {r.name: r.error for r in result.rules if r.error}
        assert not errors
        counts = {r.name: r.quarantined_rows for r in result.rules}
        quarantined_ids = sorted(row.id for row in result.quarantined.collect())
        passing_ids = sorted(row.id for row in result.passing.collect())
    # by hand, from the rows above (GX's semantics: value checks skip nulls, pairs skip rows missing both)
    assert counts == {
        "not_null": 2,  # 4, 5
        "null": 6,  # all but 5
        "in_set": 1,  # z
        "not_in_set": 3,  # x three times
        "regex": 2,  # zzzz, a
        "not_regex": 1,  # abc
        "between": 3,  # 1, 5, 9 (5 excluded by strict_max)
        "lengths": 2,  # zzzz, a
        "length": 3,  # abc, zzzz, a
        "a_gt_b": 3,  # 1>1, 3>5, 9>9 fail; rows with one null side are not counted
        "a_ge_b": 1,  # 3>=5 fails; 5 (both null) is equal null-safe
        "a_eq_b": 4,  # 2, 3, 4 (null vs 2), 7 (2 vs null); 5 ignored
        "unique": 2,  # "ab" at ids 6 and 7 (id 1 outside where)
        "compound": 2,  # (ab, x) at ids 1 and 7
    }
    assert passing_ids == [] and quarantined_ids == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.integration
def test_rule_that_cannot_be_evaluated_fails_even_as_warn(spark, events, tmp_path: Path) -> None:
    on_text = rule("amount_like", "expect_column_values_to_be_between", {"column": "tenant_id", "min_value": 0}, "warn")
    bad_regex = rule("bad_regex", "expect_column_values_to_match_regex", {"column": "user_key", "regex": "(["}, "warn")
    suite = load_suite(write_suite(tmp_path, [on_text, bad_regex]))
    with validate(events, suite, run_id="run-error") as result:
        assert result.outcome == "failed" and [r.action_taken for r in result.rules] == ["fail", "fail"]
        lines = result.message().splitlines()
        assert lines[1] == (
            "  silver.events: amount_like (expect_column_values_to_be_between) could not be evaluated: "
            "ColumnValuesBetween metrics cannot be computed on column of type StringType().; sample []; "
            "why: why amount_like"
        )
        assert "bad_regex" in lines[2] and "PatternSyntaxException: Unclosed character class" in lines[2]


@pytest.mark.integration
def test_suite_must_fit_the_table(spark, events, tmp_path: Path) -> None:
    missing = load_suite(write_suite(tmp_path, [rule("r", "expect_column_values_to_not_be_null", {"column": "nope"})]))
    with pytest.raises(
        SuiteError, match=r"silver\.events\.yaml: expectations\[0\] \(r\)\.kwargs: column\(s\) \['nope'\]"
    ):
        validate(events, missing, run_id="x")
    bad_where = load_suite(write_suite(tmp_path, [PSEUDONYM | {"where": "no_such_column = 1"}]))
    with pytest.raises(SuiteError, match=r"expectations\[0\] \(user_key_is_pseudonym\)\.where: .*no_such_column"):
        validate(events, bad_where, run_id="x")
    bad_derived = load_suite(write_suite(tmp_path, [PSEUDONYM], derived_columns={"doubled": "amount *"}))
    with pytest.raises(SuiteError, match=r"silver\.events\.yaml: derived_columns\.doubled: "):
        validate(events, bad_derived, run_id="x")
    bad_keys = load_suite(write_suite(tmp_path, [PSEUDONYM], key_columns=["event_key"]))
    with pytest.raises(SuiteError, match=r"silver\.events\.yaml: key_columns: \['event_key'\] not in"):
        validate(events, bad_keys, run_id="x")


@pytest.mark.integration
def test_results_rows_written_to_delta_and_read_back(spark, events, tmp_path: Path) -> None:
    suite = load_suite(
        write_suite(tmp_path, [PSEUDONYM | {"action": "warn"}, TENANT_KNOWN], key_columns=["event_id"]), PARAMS
    )
    path = str(tmp_path / "ops" / "quality_results")
    before = datetime.now(UTC)
    with validate(events, suite, run_id="run-results") as result:
        assert write_results(spark, result, path) == 2
        assert write_results(spark, result, path) == 2  # appends

    table = spark.read.format("delta").load(path)
    assert [f"{f.name} {f.dataType.simpleString()}" for f in table.schema.fields] == [
        part.strip() for part in RESULTS_SCHEMA.replace("long", "bigint").split(",")
    ]
    rows = sorted((row.asDict() for row in table.collect()), key=lambda r: (r["expectation"], r["recorded_at"]))
    assert len(rows) == 4
    tenant = rows[0]
    assert tenant["expectation"] == "tenant_known" and tenant["run_id"] == "run-results"
    assert (tenant["table"], tenant["suite"], tenant["configured_action"], tenant["action"]) == (
        "silver.events",
        "silver.events.yaml",
        "quarantine",
        "quarantine",
    )
    assert (tenant["success"], tenant["unexpected_count"], tenant["quarantined_rows"]) == (False, 3, 3)
    assert tenant["unexpected_percent"] == pytest.approx(1.5) and tenant["observed_value"] == "3 unexpected of 200"
    assert json.loads(tenant["failing_sample"]) == [
        {"event_id": "e007", "tenant_id": "t9"},
        {"event_id": "e008", "tenant_id": "t9"},
        {"event_id": "e009", "tenant_id": "t9"},
    ]
    assert before - timedelta(seconds=1) <= tenant["recorded_at"].astimezone(UTC) <= datetime.now(UTC)
    pseudonym = rows[2]
    assert (pseudonym["expectation"], pseudonym["action"], pseudonym["unexpected_count"]) == (
        "user_key_is_pseudonym",
        "warn",
        3,
    )


@pytest.mark.integration
def test_data_docs_accumulate_tables_and_runs(spark, events, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    suite = load_suite(write_suite(tmp_path, [PSEUDONYM | {"action": "warn"}]))
    counts = load_suite(
        write_suite(
            tmp_path, [rule("rows", "expect_table_row_count_to_be_between", {"min_value": 1})], "gold.event_counts"
        )
    )
    for run_id, the_suite in (("docs-1", suite), ("docs-2", suite), ("docs-3", counts)):
        with validate(events, the_suite, run_id=run_id, docs_dir=docs) as result:
            assert result.docs_index == docs.resolve() / "index.html"
    index = (docs / "index.html").read_text()
    # GX's index builder removes pages whose results its context does not know: each run's context is new,
    # so the results must persist for the earlier runs (and the other table) to stay listed.
    for page in (
        "validations/silver/events/docs-1/",
        "validations/silver/events/docs-2/",
        "validations/gold/event_counts/docs-3/",
    ):
        assert page in index, page
        assert list((docs / page).glob("*/*.html")), page
    run_page = next((docs / "validations/silver/events/docs-1").glob("*/*.html")).read_text()
    assert "user_key" in run_page and "raw-user-5" in run_page  # the failing values GX samples
    assert "why user_key_is_pseudonym" in (docs / "expectations/silver/events.html").read_text()  # why -> GX notes


@pytest.mark.integration
def test_gates_of_a_build_render_their_pages_in_one_pass(spark, events, tmp_path: Path) -> None:
    """validate(render=False) keeps the result in the site's store only; render_docs renders several runs' pages
    and the index once. A small frame's GX run plans without adaptive execution and restores the settings."""
    docs = tmp_path / "docs"
    suite = load_suite(write_suite(tmp_path, [PSEUDONYM | {"action": "warn"}]))
    planning = ("spark.sql.adaptive.enabled", "spark.sql.shuffle.partitions")
    before = [spark.conf.get(key) for key in planning]
    assert N <= SMALL_FRAME_ROWS and before[0] == "true"
    stored = []
    for run_id in ("one-pass-1", "one-pass-2"):
        with validate(events, suite, run_id=run_id, docs_dir=docs, render=False) as result:
            assert result.docs_index is None and result.stored is not None and result.input_rows == N
            assert [rule.action_taken for rule in result.rules] == ["warn"]  # same verdict as a rendered run
            stored.append(result.stored)
    assert [spark.conf.get(key) for key in planning] == before
    assert not (docs / "index.html").exists()
    assert render_docs(stored) == docs.resolve() / "index.html"
    index = (docs / "index.html").read_text()
    for run_id in ("one-pass-1", "one-pass-2"):
        assert f"validations/silver/events/{run_id}/" in index
        assert list((docs / "validations/silver/events" / run_id).glob("*/*.html"))


# ---------------------------------------------------------------- the shipped suites on small tables


@pytest.mark.integration
def test_shipped_gold_suites_catch_broken_rows(spark, tmp_path: Path) -> None:
    suites = load_suites(EXPECTATIONS_DIR, PARAMS)
    d1, d2 = date(2026, 11, 1), date(2026, 11, 2)
    dau = spark.createDataFrame(
        [("t1", d1, 3, 5, 9, 1, 2), ("t1", d2, 6, 5, 9, 2, 4), ("t2", d1, 1, 1, 1, 1, 0)],
        "tenant_id string, date date, dau long, wau long, mau long, new_users long, returning_users long",
    )
    with validate(dau, suites["gold.daily_active_users"], run_id="gold-dau") as result:
        assert [r.name for r in result.failures] == ["wau_at_least_dau"]
        (failure,) = result.failures
        assert failure.failing_sample == [{"tenant_id": "t1", "date": d2, "wau": 5, "dau": 6}]

    funnel = [
        ("t1", d1, "purchase", k, step, users)
        for k, (step, users) in enumerate([("view", 10), ("cart", 4), ("order", 6)], 1)
    ]
    funnel += [
        ("t2", d1, "purchase", k, step, users)
        for k, (step, users) in enumerate([("view", 3), ("cart", 3), ("order", 1)], 1)
    ]
    funnels = spark.createDataFrame(
        [(*row, round(row[5] / 10, 4), None) for row in funnel],
        "tenant_id string, date date, funnel string, step_index int, step string, users long, "
        "conversion_from_start double, conversion_from_previous double",
    )
    with validate(funnels, suites["gold.funnels"], run_id="gold-funnels") as result:
        assert [r.name for r in result.failures] == ["users_non_increasing"]
        assert result.failures[0].failing_sample == [
            {"tenant_id": "t1", "date": d1, "funnel": "purchase", "step_index": 3, "previous_step_users": 4, "users": 6}
        ]
        assert "previous_step_users" not in result.passing.columns

    money = "decimal(18,2)"
    revenue = spark.createDataFrame(
        [
            ("t1", d1, "EUR", 2, Decimal("30.00"), Decimal("5.00"), Decimal("35.00"), Decimal("15.00")),
            ("t1", d1, "USD", 3, Decimal("10.00"), Decimal("0.00"), Decimal("10.00"), Decimal("3.33")),
            ("t2", d1, "EUR", 0, Decimal("4.00"), Decimal("0.00"), Decimal("4.00"), None),
        ],
        f"tenant_id string, date date, currency string, orders long, revenue {money}, discounts {money}, "
        f"gross_revenue {money}, average_order_value {money}",
    )
    with validate(revenue, suites["gold.revenue"], run_id="gold-revenue") as result:
        assert [r.name for r in result.failures] == ["no_revenue_without_orders"]
        assert result.failures[0].failing_sample == [
            {"tenant_id": "t2", "date": d1, "currency": "EUR", "revenue": Decimal("4.00")}
        ]


@pytest.mark.integration
def test_small_frames_pass_on_pandas_and_fail_on_spark(spark, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small frame is validated by GX's pandas engine first; a pass there is the gate's result (the same rule
    results as on Spark, ``where`` included), and any failure is settled by a Spark run: pandas never passes
    what Spark fails."""
    from pipelines.quality import runner

    suite = load_suites(EXPECTATIONS_DIR, PARAMS)["gold.revenue"]
    d1 = date(2026, 11, 1)
    money = "decimal(18,2)"
    schema = (
        f"tenant_id string, date date, currency string, orders long, revenue {money}, discounts {money}, "
        f"gross_revenue {money}, average_order_value {money}"
    )
    rows = [
        ("t1", d1, "EUR", 2, Decimal("30.00"), Decimal("5.00"), Decimal("35.00"), Decimal("15.00")),
        ("t1", d1, "USD", 3, Decimal("10.00"), Decimal("0.00"), Decimal("10.00"), Decimal("3.33")),
        ("t2", d1, "EUR", 0, Decimal("0.00"), Decimal("0.00"), Decimal("0.00"), None),
    ]
    # both `where` rules select a strict subset: a condition applied wrongly would fail the frame
    good = spark.createDataFrame(rows, schema)

    def rule_results(df: Any) -> tuple[str, list[tuple[str, bool, int | None, int | None]]]:
        with validate(df, suite, run_id="engines") as result:
            return result.gx_engine, [(r.name, r.success, r.element_count, r.unexpected_count) for r in result.rules]

    engine, on_pandas = rule_results(good)
    assert engine == "pandas" and all(success for _, success, _, _ in on_pandas)
    with monkeypatch.context() as patch:
        patch.setattr(runner, "SMALL_FRAME_ROWS", 0)  # every frame is "large": Spark only
        assert rule_results(good) == ("spark", on_pandas)

    # each rule broken once: the pandas pass reports a failure, and the result comes from Spark
    broken = [
        [*rows, rows[0]],  # one_row_per_currency
        [rows[0], (*rows[1][:3], -1, *rows[1][4:]), rows[2]],  # orders_non_negative (outside both wheres)
        [rows[0], rows[1], (*rows[2][:4], Decimal("4.00"), Decimal("0.00"), Decimal("4.00"), None)],  # no orders
        [(*rows[0][:6], Decimal("36.00"), rows[0][7]), rows[1], rows[2]],  # gross_is_revenue_plus_discounts
        [rows[0], (*rows[1][:7], Decimal("3.40")), rows[2]],  # average_order_value_consistent
        [rows[0], (rows[1][0], d1, "usd", *rows[1][3:]), rows[2]],  # currency_is_iso_code (warn)
    ]
    expected = [
        "one_row_per_currency",
        "orders_non_negative",
        "no_revenue_without_orders",
        "gross_is_revenue_plus_discounts",
        "average_order_value_consistent",
        "currency_is_iso_code",
    ]
    for frame, rule_name in zip(broken, expected, strict=True):
        engine, results = rule_results(spark.createDataFrame(frame, schema))
        assert engine == "spark", rule_name
        assert [name for name, success, _, _ in results if not success] == [rule_name]


@pytest.mark.integration
def test_small_frames_pandas_cannot_judge_go_to_spark(spark, tmp_path: Path) -> None:
    """GX on pandas skips NaN as it skips nulls, Spark counts NaN above every bound: a frame holding NaN is judged
    by Spark. A `where` that raises at run time (ANSI division by zero) is reported as that rule's error, as on a
    large frame. Column names of the form _where_<n> are the gate's own."""
    share = rule("share", "expect_column_values_to_be_between", {"column": "rate", "min_value": 0, "max_value": 1})
    frame = spark.createDataFrame(
        [("t1", 0.5, 1), ("t2", float("nan"), 0), ("t3", None, 2)], "tenant_id string, rate double, n int"
    )
    with validate(frame, load_suite(write_suite(tmp_path, [share])), run_id="nan") as result:
        assert result.gx_engine == "spark"
        assert [(r.name, r.unexpected_count) for r in result.failures] == [("share", 1)]

    positive = rule(
        "rate_positive", "expect_column_values_to_be_between", {"column": "rate", "min_value": 0}, where="1 / n > 0"
    )
    frame = spark.createDataFrame([("t1", 0.5, 1), ("t2", 0.2, 0)], "tenant_id string, rate double, n int")
    with validate(frame, load_suite(write_suite(tmp_path, [positive])), run_id="raising-where") as result:
        assert result.gx_engine == "spark"
        (failure,) = result.failures
        assert failure.name == "rate_positive" and failure.error and "DIVIDE_BY_ZERO" in failure.error

    reserved = spark.createDataFrame([("t1", 0.5, True)], "tenant_id string, rate double, _where_0 boolean")
    with pytest.raises(SuiteError, match=r"column _where_0 of silver.events: names _where_<n> are reserved"):
        validate(reserved, load_suite(write_suite(tmp_path, [positive])), run_id="reserved")


@pytest.mark.integration
def test_shipped_bronze_and_silver_suites(spark, tmp_path: Path) -> None:
    suites = load_suites(EXPECTATIONS_DIR, PARAMS)
    now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    bronze_rows = [
        ("e1", "page_view", 1, now - timedelta(minutes=5), "t1", "events", 0, 1, now),
        ("e2", "page_vue", 1, now - timedelta(minutes=5), "t1", "events", 0, 2, now),  # unregistered type
        ("e3", "login", 1, now - timedelta(days=30), "t2", "events", 1, 1, now),  # too old
        *[(f"f{i}", "login", 1, now - timedelta(hours=i), "t2", "events", 1, 10 + i, now) for i in range(60)],
    ]
    bronze = spark.createDataFrame(
        bronze_rows,
        "event_id string, event_type string, version int, occurred_at timestamp, tenant_id string, topic string, "
        "partition int, offset long, ingested_at timestamp",
    )
    with validate(bronze, suites["bronze.events"], run_id="bronze") as result:
        # bronze is immutable input: its suite fails the build (no quarantine) on what bronze should have refused
        assert [r.name for r in result.failures] == ["event_type_registered", "occurred_near_ingestion"]
        assert result.quarantined is None
        assert {r.name: r.unexpected_count for r in result.failures} == {
            "event_type_registered": 1,
            "occurred_near_ingestion": 1,
        }

    good, raw_ip, d = key(1), "203.0.113.77", date(2026, 11, 1)
    silver_rows = [
        ("t1", "e1", d, "page_view", good, "203.0.113.0/24", "s1", "pro", True),
        ("t1", "e2", d, "system_alert", None, None, None, None, False),
        ("t1", "e3", d, "login", good, "2a02:1:2::/48", "s1", None, True),  # unmatched user: 1 of 3 identified
        ("t1", "e4", d, "page_view", "user-4", raw_ip, "s2", "free", True),  # raw id and raw IP
    ]
    silver = spark.createDataFrame(
        silver_rows,
        "tenant_id string, event_id string, event_date date, event_type string, user_key string, "
        "ip_prefix string, session_id string, user_plan string, is_identified boolean",
    )
    with validate(silver, suites["silver.events"], run_id="silver") as result:
        assert [r.name for r in result.failures] == ["user_key_is_pseudonym", "ip_prefix_is_network"]
        assert [r.name for r in result.warnings] == ["user_enrichment_match_rate"]  # 2/3 < 0.9
        assert result.failures[1].failing_sample == [{"tenant_id": "t1", "event_id": "e4", "ip_prefix": raw_ip}]

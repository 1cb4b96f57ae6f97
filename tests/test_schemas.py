"""The event contract: shipped schemas, validation paths, compatibility rules, pickling, load errors,
and the jsonschema_rs fast path checked against the Python jsonschema reference it must never be looser than.
"""

from __future__ import annotations

import contextlib
import copy
import decimal
import enum
import json
import math
import pickle
import random
import shutil
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from pipelines.config import load_settings
from pipelines.contracts.compatibility import CompatibilityIssue, check_compatibility, check_schema_pair
from pipelines.contracts.registry import (
    _PENDING,
    DRAFT_2020_12,
    SchemaRegistry,
    SchemaRegistryError,
    UnknownSchemaError,
    Violation,
)
from pipelines.contracts.validation import _compile_fast, _parse_json, _plain_json
from pipelines.synthetic.generator import GeneratorSpec, generate

DRAFT = DRAFT_2020_12
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "conf" / "schemas"

EXPECTED_VERSIONS = {
    "add_to_cart": [1],
    "checkout_started": [1],
    "login": [1],
    "order_completed": [1, 2],
    "page_view": [1, 2],
    "product_view": [1],
    "signup": [1],
    "system_alert": [1],
}

# Every field of every (type, version), optional ones included, so a valid example exercises all of them.
EXAMPLE_PROPERTIES: dict[tuple[str, int], dict[str, Any]] = {
    ("page_view", 1): {"url": "https://shop.example/p/1", "referrer": None, "title": "Product 1"},
    ("page_view", 2): {
        "url": "https://shop.example/p/1",
        "referrer": "https://search.example/",
        "title": "Product 1",
        "page_type": "product",
        "scroll_depth": 0.75,
    },
    ("product_view", 1): {"product_id": "p-1", "category": "shoes", "price": 59.9, "currency": "EUR"},
    ("add_to_cart", 1): {"product_id": "p-1", "quantity": 2, "price": 59.9, "currency": "EUR"},
    ("checkout_started", 1): {"cart_id": "c-1", "item_count": 2, "cart_value": 119.8, "currency": "EUR"},
    ("order_completed", 1): {"order_id": "o-1", "amount": 119.8, "currency": "EUR", "item_count": 2},
    ("order_completed", 2): {
        "order_id": "o-1",
        "amount": 109.8,
        "currency": "EUR",
        "item_count": 2,
        "discount_amount": 10,
        "payment_method": "wallet",
    },
    ("signup", 1): {"method": "google", "plan": "pro"},
    ("login", 1): {"method": "sso"},
    ("system_alert", 1): {"component": "ingest", "severity": "critical", "message": "lag > 5 min", "code": "LAG"},
}


def example_event(event_type: str, version: int) -> dict[str, Any]:
    """A valid event of the given type and version, with every envelope field set."""
    return {
        "event_id": "3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6b",
        "event_type": event_type,
        "version": version,
        "occurred_at": "2026-11-20T10:15:30.123Z",
        "tenant_id": "acme-shop_1",
        "user_id": "user-42",
        "anonymous_id": "anon-7",
        "session_id": "sess-9",
        "properties": copy.deepcopy(EXAMPLE_PROPERTIES[(event_type, version)]),
        "context": {
            "device": "mobile",
            "os": "Android 15",
            "locale": "de-DE",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0",
            "app_version": "3.2.1",
        },
    }


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load(SCHEMAS_DIR)


def paths(violations: list[Violation]) -> list[str]:
    return [violation.path for violation in violations]


def test_shipped_registry_holds_the_contract_types_and_versions(registry: SchemaRegistry) -> None:
    assert registry.event_types == sorted(EXPECTED_VERSIONS)
    assert {t: registry.versions(t) for t in registry.event_types} == EXPECTED_VERSIONS
    assert registry.latest_version("page_view") == 2
    assert registry.latest_version("login") == 1
    assert set(EXAMPLE_PROPERTIES) == {(t, v) for t, versions in EXPECTED_VERSIONS.items() for v in versions}


@pytest.mark.parametrize(("event_type", "version"), sorted(EXAMPLE_PROPERTIES))
def test_full_example_of_each_type_and_version_is_valid(
    registry: SchemaRegistry, event_type: str, version: int
) -> None:
    assert registry.validate(example_event(event_type, version)) == []


@pytest.mark.parametrize(("event_type", "version"), sorted(EXAMPLE_PROPERTIES))
def test_minimal_event_with_only_required_fields_is_valid(
    registry: SchemaRegistry, event_type: str, version: int
) -> None:
    event = example_event(event_type, version)
    required = registry.event_schema(event_type, version)["properties"]["properties"]["required"]
    event["properties"] = {k: v for k, v in event["properties"].items() if k in required}
    for optional in ("session_id", "context"):
        del event[optional]
    event["anonymous_id"] = None
    assert registry.validate(event) == []


ACCEPTED_ENVELOPE_VARIANTS: list[dict[str, Any]] = [
    {"occurred_at": "2026-11-20T10:15:30+00:00"},
    {"occurred_at": "2026-11-20T10:15:30Z"},
    {"occurred_at": "2026-11-20T10:15:30.123456789Z"},
    {"event_id": "3F1C2B9E-8A4D-4E6F-9B0A-1C2D3E4F5A6B"},
    {"user_id": None, "anonymous_id": "anon-7"},
    {"session_id": None},
    {"context": {"ip": "2001:db8::1"}},
    {"context": {}},
    {"tenant_id": "t"},
]


@pytest.mark.parametrize("change", ACCEPTED_ENVELOPE_VARIANTS)
def test_accepted_envelope_variants(registry: SchemaRegistry, change: dict[str, Any]) -> None:
    assert registry.validate({**example_event("login", 1), **change}) == []


def _drop(key: str):
    return lambda event: event.pop(key)


# (event_type, version, change applied to example_event, the one violation's path, a fragment of its message)
SINGLE_VIOLATIONS: list[tuple[str, int, Any, str, str]] = [
    # missing fields
    ("order_completed", 2, {"properties": {"amount": 1, "currency": "EUR"}}, "$.properties.order_id", "missing"),
    ("login", 1, _drop("tenant_id"), "$.tenant_id", "missing"),
    ("login", 1, _drop("properties"), "$.properties", "missing"),
    # wrong types
    (
        "order_completed",
        1,
        {"properties": {"order_id": "o", "amount": "12", "currency": "EUR"}},
        "$.properties.amount",
        "not of type 'number'",
    ),
    (
        "add_to_cart",
        1,
        {"properties": {"product_id": "p", "quantity": 1.5, "price": 1, "currency": "EUR"}},
        "$.properties.quantity",
        "not of type 'integer'",
    ),
    ("login", 1, {"version": "1"}, "$.version", "not of type 'integer'"),
    ("login", 1, {"version": True}, "$.version", "not of type 'integer'"),
    ("login", 1, {"properties": ["sso"]}, "$.properties", "not of type 'object'"),
    ("login", 1, {"user_id": 42}, "$.user_id", "not of type"),
    # value constraints of the properties
    (
        "order_completed",
        1,
        {"properties": {"order_id": "o", "amount": -1, "currency": "EUR"}},
        "$.properties.amount",
        "minimum",
    ),
    (
        "order_completed",
        1,
        {"properties": {"order_id": "o", "amount": 1, "currency": "eur"}},
        "$.properties.currency",
        "does not match",
    ),
    (
        "add_to_cart",
        1,
        {"properties": {"product_id": "p", "quantity": 0, "price": 1, "currency": "EUR"}},
        "$.properties.quantity",
        "minimum",
    ),
    ("page_view", 2, {"properties": {"url": "u", "scroll_depth": 1.5}}, "$.properties.scroll_depth", "maximum"),
    ("page_view", 2, {"properties": {"url": "u", "page_type": "blog"}}, "$.properties.page_type", "not one of"),
    ("signup", 1, {"properties": {"method": "email", "plan": "gold"}}, "$.properties.plan", "not one of"),
    (
        "system_alert",
        1,
        {"properties": {"component": "c", "severity": "fatal", "message": "m"}},
        "$.properties.severity",
        "not one of",
    ),
    # identifiers and timestamps
    ("login", 1, {"event_id": "not-a-uuid"}, "$.event_id", "UUID"),
    ("login", 1, {"event_id": "3f1c2b9e8a4d4e6f9b0a1c2d3e4f5a6b"}, "$.event_id", "UUID"),
    ("login", 1, {"event_id": "3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6g"}, "$.event_id", "UUID"),
    ("login", 1, {"occurred_at": "2026-11-20T10:15:30+02:00"}, "$.occurred_at", "UTC"),
    ("login", 1, {"occurred_at": "2026-11-20T10:15:30"}, "$.occurred_at", "UTC"),
    ("login", 1, {"occurred_at": "2026-11-20 10:15:30Z"}, "$.occurred_at", "RFC 3339"),
    ("login", 1, {"occurred_at": "20/11/2026 10:15"}, "$.occurred_at", "RFC 3339"),
    ("login", 1, {"occurred_at": "2026-02-30T10:15:30Z"}, "$.occurred_at", "RFC 3339"),
    ("login", 1, {"occurred_at": "2026-11-20T25:15:30Z"}, "$.occurred_at", "RFC 3339"),
    ("login", 1, {"occurred_at": 1763633730}, "$.occurred_at", "not of type 'string'"),
    ("login", 1, {"tenant_id": "Acme Shop"}, "$.tenant_id", "tenant"),
    ("login", 1, {"tenant_id": "a" * 64}, "$.tenant_id", "tenant"),
    ("login", 1, {"version": 0}, "$.version", "minimum"),
    # the identity rule
    ("login", 1, {"user_id": None, "anonymous_id": None}, "$", "at least one of user_id and anonymous_id"),
    # unknown type and version
    ("login", 1, {"event_type": "logout"}, "$.event_type", "unknown event_type 'logout'"),
    ("login", 1, {"version": 2}, "$.version", "unknown version 2"),
    # closed objects
    ("login", 1, {"extra": 1}, "$.extra", "unexpected field"),
    (
        "login",
        1,
        {"properties": {"method": "sso", "remember_me": True}},
        "$.properties.remember_me",
        "unexpected field",
    ),
    (
        "page_view",
        1,
        {"properties": {"url": "u", "page_type": "home"}},
        "$.properties.page_type",
        "unexpected field",
    ),
    ("login", 1, {"context": {"browser": "x"}}, "$.context.browser", "unexpected field"),
    # context
    ("login", 1, {"context": {"ip": "203.0.113.300"}}, "$.context.ip", "IPv4 or IPv6"),
    ("login", 1, {"context": {"device": "watch"}}, "$.context.device", "not one of"),
    ("login", 1, {"context": "mobile"}, "$.context", "not of type 'object'"),
]


def apply_change(event: dict[str, Any], change: Any) -> dict[str, Any]:
    if callable(change):
        change(event)
    else:
        event.update(change)
    return event


@pytest.mark.parametrize(("event_type", "version", "change", "path", "fragment"), SINGLE_VIOLATIONS)
def test_each_violation_is_reported_alone_at_its_path(
    registry: SchemaRegistry, event_type: str, version: int, change: Any, path: str, fragment: str
) -> None:
    violations = registry.validate(apply_change(example_event(event_type, version), change))
    assert paths(violations) == [path], violations
    assert fragment in violations[0].message


def test_all_violations_are_reported_together_sorted_by_path(registry: SchemaRegistry) -> None:
    event = example_event("order_completed", 2)
    event.update(
        event_id="nope",
        occurred_at="2026-11-20T10:15:30-05:00",
        user_id=None,
        anonymous_id=None,
        debug=True,
        properties={"amount": "free", "currency": "EUR", "payment_method": "cash", "coupon": "X"},
        context={"ip": "localhost"},
    )
    violations = registry.validate(event)
    assert paths(violations) == [
        "$",
        "$.context.ip",
        "$.debug",
        "$.event_id",
        "$.occurred_at",
        "$.properties.amount",
        "$.properties.coupon",
        "$.properties.order_id",
        "$.properties.payment_method",
    ]
    assert violations == sorted(violations, key=lambda v: (v.path, v.message))


def test_unknown_type_or_version_still_reports_envelope_violations(registry: SchemaRegistry) -> None:
    event = {**example_event("login", 1), "event_type": "logout", "tenant_id": "BAD", "extra": 1}
    assert paths(registry.validate(event)) == ["$.event_type", "$.extra", "$.tenant_id"]
    event = {**example_event("login", 1), "version": 9, "occurred_at": "yesterday"}
    assert paths(registry.validate(event)) == ["$.occurred_at", "$.version"]


def test_an_absent_identity_field_means_null(registry: SchemaRegistry) -> None:
    """A producer that only knows user_id (or only anonymous_id) leaves the other out."""
    for known in ("user_id", "anonymous_id"):
        event = example_event("login", 1)
        del event["anonymous_id" if known == "user_id" else "user_id"]
        for optional in ("session_id", "context"):
            del event[optional]
        assert registry.validate(event) == []
        _, violations = registry.validate_json(json.dumps(event))
        assert violations == []


def test_without_any_identity_the_event_is_one_violation(registry: SchemaRegistry) -> None:
    event = example_event("login", 1)
    del event["user_id"], event["anonymous_id"]
    violations = registry.validate(event)
    assert paths(violations) == ["$"]
    assert "at least one of user_id and anonymous_id" in violations[0].message


@pytest.mark.parametrize("not_an_event", [[], "login", 42, None, True])
def test_a_non_object_is_one_violation_at_the_root(registry: SchemaRegistry, not_an_event: object) -> None:
    violations = registry.validate(not_an_event)
    assert paths(violations) == ["$"]
    assert "must be a JSON object" in violations[0].message


def test_validate_json_parses_and_validates(registry: SchemaRegistry) -> None:
    event = example_event("page_view", 2)
    raw = json.dumps(event).encode()
    assert registry.validate_json(raw) == (event, [])
    assert registry.validate_json(raw.decode()) == (event, [])

    bad = {**event, "version": 3}
    parsed, violations = registry.validate_json(json.dumps(bad))
    assert parsed == bad
    assert paths(violations) == ["$.version"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"event_id": "x",', "invalid JSON"),
        (b"", "invalid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"price": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b"[" * 100_000, "invalid JSON"),
    ],
)
def test_validate_json_rejects_what_is_not_json(registry: SchemaRegistry, raw: bytes | str, fragment: str) -> None:
    parsed, violations = registry.validate_json(raw)
    assert parsed is None
    assert paths(violations) == ["$"]
    assert violations[0].message.startswith("invalid JSON")
    assert fragment in violations[0].message


def test_validate_json_of_a_json_array_is_not_an_event(registry: SchemaRegistry) -> None:
    assert registry.validate_json(b"[1, 2]") == (None, [Violation("$", "event must be a JSON object, got array")])


def test_event_schema_is_the_composed_full_schema(registry: SchemaRegistry) -> None:
    schema = registry.event_schema("order_completed", 2)
    Draft202012Validator.check_schema(schema)
    assert schema["properties"]["event_type"]["const"] == "order_completed"
    assert schema["properties"]["version"]["const"] == 2
    assert "payment_method" in schema["properties"]["properties"]["properties"]
    assert schema["additionalProperties"] is False

    # A consumer using the composed schema with plain jsonschema sees the same verdicts.
    plain = Draft202012Validator(schema, format_checker=FormatChecker())
    assert plain.is_valid(example_event("order_completed", 2))
    assert not plain.is_valid(example_event("order_completed", 1) | {"occurred_at": "2026-11-20T10:15:30+01:00"})
    assert not plain.is_valid(example_event("order_completed", 2) | {"version": 1})

    schema["properties"]["properties"]["required"].append("coupon")
    assert registry.validate(example_event("order_completed", 2)) == [], "event_schema must return a copy"


def test_lookups_of_unknown_types_and_versions_raise(registry: SchemaRegistry) -> None:
    with pytest.raises(UnknownSchemaError, match="unknown event_type 'logout'"):
        registry.versions("logout")
    with pytest.raises(UnknownSchemaError, match="unknown version 3 of event_type 'page_view'"):
        registry.event_schema("page_view", 3)


def test_registry_pickles_without_compiled_validators_and_still_validates(registry: SchemaRegistry) -> None:
    bad = {**example_event("order_completed", 2), "event_id": "x", "properties": {"order_id": "o"}}
    expected = registry.validate(bad)
    assert expected, "the registry has compiled validators before pickling"

    restored = pickle.loads(pickle.dumps(registry))
    assert set(restored.__getstate__()) == {"envelope", "properties_schemas"}
    assert restored.validate(bad) == expected
    assert restored.validate(example_event("page_view", 1)) == []
    assert restored.event_types == registry.event_types


def test_shipped_schemas_are_backward_compatible(registry: SchemaRegistry) -> None:
    assert check_compatibility(registry) == []


OBJECT_V1: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "amount"],
    "properties": {
        "id": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "note": {"type": ["string", "null"]},
        "kind": {"type": "string", "enum": ["a", "b"]},
        "address": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
        },
    },
}


def _evolve(change: Any) -> dict[str, Any]:
    schema = copy.deepcopy(OBJECT_V1)
    change(schema)
    return schema


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        (lambda s: s["properties"].pop("note"), "$.note", "field removed"),
        (lambda s: s["properties"]["amount"].update(type="string"), "$.amount", "type changed from number to string"),
        (lambda s: s["properties"]["amount"].update(type="integer"), "$.amount", "type changed from number to integer"),
        (lambda s: s["properties"]["note"].update(type="string"), "$.note", "type changed from null|string to string"),
        (lambda s: s["required"].append("note"), "$.note", "optional field made required"),
        (
            lambda s: (s["properties"].update(channel={"type": "string"}), s["required"].append("channel")),
            "$.channel",
            "new required field added",
        ),
        (lambda s: s["properties"]["kind"].update(enum=["a"]), "$.kind", "enum narrowed: ['b'] no longer allowed"),
        (lambda s: s["properties"]["note"].update(enum=["x", None]), "$.note", "values restricted"),
        (lambda s: s["properties"]["kind"].update(const="a"), "$.kind", "enum narrowed"),
        (lambda s: s["properties"]["address"]["properties"].pop("zip"), "$.address.zip", "field removed"),
        (
            lambda s: s["properties"]["address"]["properties"]["zip"].update(type="integer"),
            "$.address.zip",
            "type changed from string to integer",
        ),
        (lambda s: s["properties"]["address"]["required"].append("zip"), "$.address.zip", "made required"),
        (lambda s: s["properties"].update(address={"type": "string"}), "$.address", "type changed from object"),
        (lambda s: s["properties"]["address"].update(additionalProperties=False), "$.address", "now forbidden"),
        (lambda s: s["properties"]["amount"].update(minimum=1), "$.amount", "minimum tightened from 0 to 1"),
        (lambda s: s["properties"]["amount"].update(maximum=100), "$.amount", "maximum tightened from None to 100"),
        (lambda s: s["properties"]["id"].update(pattern="^[0-9]+$"), "$.id", "pattern changed"),
        (lambda s: s["properties"]["id"].update(anyOf=[{"minLength": 1}]), "$.id", "cannot prove"),
    ],
)
def test_check_schema_pair_flags_each_breaking_change(change: Any, path: str, reason: str) -> None:
    issues = check_schema_pair(OBJECT_V1, _evolve(change))
    assert [issue.path for issue in issues] == [path], issues
    assert reason in issues[0].reason


@pytest.mark.parametrize(
    "change",
    [
        lambda s: None,
        lambda s: s["properties"].update(coupon={"type": "string"}),
        lambda s: s["properties"]["address"]["properties"].update(country={"type": "string"}),
        lambda s: s["properties"]["kind"].update(enum=["a", "b", "c"]),
        lambda s: s["properties"]["amount"].pop("minimum"),
        lambda s: s["required"].remove("amount"),
    ],
)
def test_check_schema_pair_accepts_compatible_evolution(change: Any) -> None:
    assert check_schema_pair(OBJECT_V1, _evolve(change)) == []


def test_check_schema_pair_reports_several_issues_sorted() -> None:
    def change(schema: dict[str, Any]) -> None:
        schema["properties"].pop("note")
        schema["properties"]["kind"]["type"] = "integer"
        schema["required"].append("kind")

    issues = check_schema_pair(OBJECT_V1, _evolve(change))
    assert [(i.path, i.reason) for i in issues] == [
        ("$.kind", "optional field made required"),
        ("$.kind", "type changed from string to integer"),
        ("$.note", "field removed"),
    ]


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, target)
    return target


def _write(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")


def test_check_compatibility_names_type_versions_and_field(tmp_path: Path) -> None:
    root = _copy_schemas(tmp_path)
    v3 = json.loads((root / "order_completed" / "v2.json").read_text())
    v3["properties"].pop("payment_method")
    v3["properties"]["amount"]["type"] = "string"
    _write(root / "order_completed" / "v3.json", v3)

    issues = check_compatibility(SchemaRegistry.load(root))
    assert issues == [
        CompatibilityIssue("order_completed", 2, 3, "$.properties.amount", "type changed from number to string"),
        CompatibilityIssue("order_completed", 2, 3, "$.properties.payment_method", "field removed"),
    ]


def test_check_compatibility_requires_contiguous_versions(tmp_path: Path) -> None:
    root = _copy_schemas(tmp_path)
    shutil.copy(root / "login" / "v1.json", root / "login" / "v3.json")
    (root / "signup" / "v1.json").rename(root / "signup" / "v2.json")

    issues = check_compatibility(SchemaRegistry.load(root))
    assert [(i.event_type, i.from_version, i.to_version, i.path) for i in issues] == [
        ("login", 0, 3, "$.version"),
        ("signup", 0, 2, "$.version"),
    ]
    assert "missing v2" in issues[0].reason
    assert "missing v1" in issues[1].reason


OBJECT_SCHEMA = {"type": "object", "additionalProperties": False}


@pytest.mark.parametrize(
    ("written", "named", "content", "fragment"),
    [
        ("login/v1.json", "login/v1.json", '{"type": "object", ', "not valid JSON"),
        ("login/v1.json", "login/v1.json", "[]", "must be a JSON object"),
        ("login/v1.json", "login/v1.json", {**OBJECT_SCHEMA, "required": "method"}, "not a valid JSON Schema"),
        ("login/v1.json", "login/v1.json", {"type": "object", "properties": {}}, "additionalProperties false"),
        (
            "login/v1.json",
            "login/v1.json",
            {**OBJECT_SCHEMA, "$schema": "http://json-schema.org/draft-07/schema#"},
            "$schema must be",
        ),
        ("login/version2.json", "login/version2.json", OBJECT_SCHEMA, "bad schema file name"),
        ("login/v0.json", "login/v0.json", OBJECT_SCHEMA, "bad schema file name"),
        ("login/v01.json", "login/v01.json", OBJECT_SCHEMA, "bad schema file name"),
        ("login/draft/v1.json", "login/draft", OBJECT_SCHEMA, "bad schema file name"),
        ("Log-In/v1.json", "Log-In", OBJECT_SCHEMA, "unexpected entry"),
        ("stray.json", "stray.json", {}, "unexpected entry"),
        (
            "envelope.json",
            "envelope.json",
            {"type": "object", "properties": {"a": {"type": "strin"}}},
            "not a valid JSON Schema",
        ),
        ("envelope.json", "envelope.json", {"type": "object"}, "must declare 'properties'"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, written: str, named: str, content: Any, fragment: str) -> None:
    root = _copy_schemas(tmp_path)
    _write(root / written, content)
    with pytest.raises(SchemaRegistryError) as raised:
        SchemaRegistry.load(root)
    assert str(raised.value).startswith(f"{root / named}: ")
    assert fragment in str(raised.value)


def test_load_errors_for_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(SchemaRegistryError, match="does not exist"):
        SchemaRegistry.load(tmp_path / "nowhere")
    root = _copy_schemas(tmp_path)
    (root / "envelope.json").unlink()
    with pytest.raises(SchemaRegistryError, match=r"envelope\.json: envelope schema is missing"):
        SchemaRegistry.load(root)
    root = _copy_schemas(tmp_path / "again")
    (root / "refund").mkdir()
    with pytest.raises(SchemaRegistryError, match="refund: event type directory holds no"):
        SchemaRegistry.load(root)


def test_notes_and_hidden_files_beside_schemas_are_ignored(tmp_path: Path) -> None:
    root = _copy_schemas(tmp_path)
    _write(root / "README.md", "# schemas")
    _write(root / "login" / ".v1.json.swp", "junk")
    assert SchemaRegistry.load(root).versions("login") == [1]


# --- The fast path (jsonschema_rs) against the reference (Python jsonschema) ---------------------------

TIMESTAMPS = [
    "2026-11-20T10:15:30Z",
    "2026-11-20T10:15:30+00:00",
    "2026-12-31T23:59:59.999999999Z",
    "2024-02-29T12:00:00Z",
    "2000-02-29T00:00:00Z",
    "2026-02-29T12:00:00Z",
    "1900-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-11-00T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2016-12-31T23:59:60Z",  # a real leap second: jsonschema_rs accepts it, the reference does not
    "2026-11-20T10:15:60Z",
    "2026-11-20T24:00:00Z",
    "0000-01-01T00:00:00Z",  # year zero: jsonschema_rs accepts it, the reference does not
    "0001-01-01T00:00:00Z",
    "2026-11-20t10:15:30z",
    "2026-11-20T10:15:30-00:00",
    "2026-11-20T10:15:30.Z",
    "2026-11-20T10:15:30.1234567890Z",
    "2026-11-20 10:15:30Z",
    "+026-11-20T10:15:30Z",
    "２０２６-11-20T10:15:30Z",
]
IP_ADDRESSES = [
    "203.0.113.7",
    "0.0.0.0",
    "255.255.255.255",
    "256.1.1.1",
    "01.2.3.4",
    "1.2.3",
    "1.2.3.4.5",
    " 1.2.3.4",
    "١.2.3.4",
    "2001:db8::1",
    "2001:DB8:0:0:0:0:0:1",
    "::",
    "::1",
    "1::",
    "1:2:3:4:5:6:7::",
    "1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8:9",
    "1::2::3",
    "::ffff:192.0.2.1",
    "::ffff:192.0.2.01",
    "1:2:3:4:5:6:1.2.3.4",
    "fe80::1%eth0",
    "[::1]",
    "2001:db8::g",
    "12345::1",
    "localhost",
    "",
]
EVENT_IDS = [
    "3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6b",
    "3F1C2B9E-8A4D-4E6F-9B0A-1C2D3E4F5A6B",
    "00000000-0000-0000-0000-000000000000",
    "{3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6b}",
    "urn:uuid:3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6b",
    "3f1c2b9e8a4d4e6f9b0a1c2d3e4f5a6b",
    "3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6",
    " 3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6b",
]
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    1.0,
    1.5,
    -0.0,
    0.5,
    2**63,
    -(2**64),
    1e308,
    "",
    "x",
    "EUR",
    "eur",
    "home",
    "card",
    "sso",
    "pro",
    "critical",
    "desktop",
    "a" * 64,
    "Acme",
    "ácme",
    [],
    ["x"],
    {},
    {"a": 1},
]
ENVELOPE_FIELDS = ["event_id", "event_type", "version", "occurred_at", "tenant_id", "user_id", "anonymous_id"]
ENVELOPE_FIELDS += ["session_id", "properties", "context", "extra"]
PROPERTY_NAMES = sorted({name for properties in EXAMPLE_PROPERTIES.values() for name in properties} | {"coupon"})
CONTEXT_FIELDS = ["device", "os", "locale", "ip", "user_agent", "app_version", "browser"]


def _mutate(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One to three random edits of the kinds producers get wrong: any field, any value, formats included."""
    for _ in range(rng.randint(1, 3)):
        properties = event["properties"] if isinstance(event.get("properties"), dict) else {}
        context = event["context"] if isinstance(event.get("context"), dict) else {}
        edit = rng.randrange(9)
        if edit == 0:
            event[rng.choice(ENVELOPE_FIELDS)] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif edit == 1:
            properties[rng.choice(PROPERTY_NAMES)] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif edit == 2:
            target = rng.choice([event, properties, context])
            if target:
                del target[rng.choice(sorted(target))]
        elif edit == 3:
            context[rng.choice(CONTEXT_FIELDS)] = rng.choice([*IP_ADDRESSES, *ODD_VALUES[:8]])
            event.setdefault("context", context)
        elif edit == 4:
            event["context"] = {**context, "ip": rng.choice(IP_ADDRESSES)}
        elif edit == 5:
            event["occurred_at"] = rng.choice(TIMESTAMPS)
        elif edit == 6:
            event["event_id"] = rng.choice(EVENT_IDS)
        elif edit == 7:
            event["event_type"] = rng.choice([*EXPECTED_VERSIONS, "logout", "Login", 1, None])
        else:
            event["version"] = rng.choice([1, 2, 3, 0, -1, "1", 1.0, 2.0, True, None, 2**70])
    return event


def _generated_messages() -> list[bytes]:
    spec = GeneratorSpec(seed=11, tenants=2, users_per_tenant=40, days=2, malformed_rate=0.1, old_version_share=0.5)
    messages, _ = generate(spec, load_settings("local", environ={}).kafka.topic_for_event_type)
    return [message.value for message in messages]


def _differential_corpus() -> list[Any]:
    """Every hand-written case of this file, the generator's stream (defects included) and random mutations."""
    corpus: list[Any] = []
    for event_type, version in sorted(EXAMPLE_PROPERTIES):
        corpus.append(example_event(event_type, version))
        minimal = example_event(event_type, version)
        minimal["properties"] = {}
        corpus.append(minimal)
        for change in ACCEPTED_ENVELOPE_VARIANTS:
            corpus.append({**example_event(event_type, version), **copy.deepcopy(change)})
    for event_type, version, change, _, _ in SINGLE_VIOLATIONS:
        corpus.append(apply_change(example_event(event_type, version), copy.deepcopy(change)))
    generated = []
    for raw in _generated_messages():
        with contextlib.suppress(ValueError):
            generated.append(json.loads(raw))
    corpus += generated
    rng = random.Random(20261120)
    objects = [event for event in generated if isinstance(event, dict)]
    corpus += [_mutate(copy.deepcopy(rng.choice(objects)), rng) for _ in range(2500)]
    return corpus


def reference_is_valid(registry: SchemaRegistry, event: object) -> bool:
    return registry._reference_violations(event) == []


def fast_accepts(registry: SchemaRegistry, event: object) -> bool:
    return type(event) is dict and _plain_json(event) and registry._fast_accepts(event)


@pytest.fixture(scope="module")
def corpus() -> list[Any]:
    return _differential_corpus()


def test_fast_path_and_reference_agree_on_a_large_varied_corpus(registry: SchemaRegistry, corpus: list[Any]) -> None:
    verdicts: Counter[bool] = Counter()
    for event in corpus:
        reference = registry._reference_violations(event)
        fast = fast_accepts(registry, event)
        assert fast == (reference == []), (event, reference)
        assert registry.validate(event) == reference
        verdicts[fast] += 1
    assert verdicts[True] > 1000 and verdicts[False] > 1000, verdicts  # both verdicts are well exercised


def test_validate_json_agrees_with_parse_then_reference(registry: SchemaRegistry, corpus: list[Any]) -> None:
    raws = _generated_messages() + [json.dumps(event).encode() for event in corpus[-500:]]
    for raw in raws:
        try:
            event = json.loads(raw.decode(), parse_constant=_reject)
        except ValueError:
            assert registry.validate_json(raw)[0] is None
            continue
        if isinstance(event, dict):
            assert registry.validate_json(raw) == (event, registry._reference_violations(event))


def _reject(token: str) -> Any:
    raise ValueError(f"{token} is not a valid JSON value")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_id", "acme\n"),  # Python's re: $ matches before a final newline; ECMA 262 and Rust: it does not
        ("occurred_at", "2026-11-20T10:15:30Z\n"),
        ("event_id", "3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6b\n"),
        ("properties.price", math.nan),  # NaN < 0 is False, so the reference's minimum check lets it through
        ("properties.price", math.inf),
    ],
)
def test_where_the_fast_path_is_stricter_the_reference_decides(
    registry: SchemaRegistry, field: str, value: Any
) -> None:
    event = example_event("product_view", 1)
    target, name = (event["properties"], field.split(".")[1]) if "." in field else (event, field)
    target[name] = value
    assert reference_is_valid(registry, event)
    assert not fast_accepts(registry, event)
    assert registry.validate(event) == []


def test_a_lone_surrogate_jsonschema_rs_cannot_encode_gets_the_reference_verdict(registry: SchemaRegistry) -> None:
    event = example_event("login", 1)
    event["properties"]["method"] = "sso\ud800"  # json.loads makes these from "\\ud800" escapes
    assert paths(registry.validate(event)) == ["$.properties.method"]
    event = {**example_event("login", 1), "tenant_id": "acme\udfff"}  # a pattern: jsonschema_rs must encode it
    assert paths(registry.validate(event)) == ["$.tenant_id"]
    event["tenant_id"] = "acme"
    event["session_id"] = "\ud800"  # only type-checked: both libraries accept it
    assert registry.validate(event) == []


class _Plan(enum.Enum):
    PRO = "pro"


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        # jsonschema_rs reads a Decimal as a number (Decimal(2) as an integer), a tuple as an array and an
        # Enum by its value: only plain JSON values take the fast path.
        ({"properties": {"method": "email", "plan": _Plan.PRO}}, "$.properties.plan", "not one of"),
        ({"properties": ("method", "email")}, "$.properties", "not of type 'object'"),
        ({"version": decimal.Decimal(1)}, "$.version", "not of type 'integer'"),
    ],
)
def test_values_that_are_not_plain_json_get_the_reference_verdict(
    registry: SchemaRegistry, change: dict[str, Any], path: str, fragment: str
) -> None:
    violations = registry.validate({**example_event("signup", 1), **change})
    assert {violation.path for violation in violations} == {path}
    assert any(fragment in violation.message for violation in violations), violations


def test_decimal_integers_are_judged_by_the_reference(registry: SchemaRegistry) -> None:
    event = example_event("add_to_cart", 1)
    event["properties"]["quantity"] = decimal.Decimal(2)
    assert paths(registry.validate(event)) == ["$.properties.quantity"]
    event["properties"]["quantity"] = 2
    event["properties"]["price"] = decimal.Decimal("59.90")  # a number for both libraries
    assert registry.validate(event) == []


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("date-time", TIMESTAMPS),
        ("ipv4", IP_ADDRESSES),
        ("ipv6", IP_ADDRESSES),
        ("uuid", [*EVENT_IDS, "3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f5a6b}", "3f1c2b9e-8a4d-4e6f-9b0a-1c2d3e4f-5a6b"]),
    ],
)
def test_native_formats_never_accept_what_the_reference_rejects(name: str, values: list[str]) -> None:
    schema = {"$schema": DRAFT, "type": "string", "format": name}
    fast = _compile_fast(schema)
    reference = Draft202012Validator(schema, format_checker=FormatChecker())
    rng = random.Random(name)
    fuzzed = [_fuzz(rng.choice(values), rng) for _ in range(3000)]
    stricter = []
    for value in [*values, *fuzzed]:
        if fast.is_valid(value):
            assert reference.is_valid(value), value
        elif reference.is_valid(value):
            stricter.append(value)
    # Differences found: the reference accepts a trailing newline after a date-time, and UUIDs with extra
    # hyphens or a stray brace (uuid.UUID strips them); jsonschema_rs rejects both, which is safe.
    assert all(value.endswith("\n") or name == "uuid" for value in stricter), stricter


def _fuzz(value: str, rng: random.Random) -> str:
    chars = list(value)
    for _ in range(rng.randint(0, 3)):
        position = rng.randint(0, len(chars))
        edit = rng.randrange(3)
        if edit == 0:
            chars.insert(position, rng.choice("0123456789abcdefABCDEF:.-+TtZz{}% \n"))
        elif chars and edit == 1:
            del chars[min(position, len(chars) - 1)]
        elif chars:
            chars[min(position, len(chars) - 1)] = rng.choice("0123456789:.-eEfF")
    return "".join(chars)


def test_date_time_guard_and_day_of_month_match_the_reference() -> None:
    schema = {"$schema": DRAFT, "type": "string", "format": "date-time"}
    fast = _compile_fast(schema)
    reference = Draft202012Validator(schema, format_checker=FormatChecker())
    for year in ("0000", "0001", "0004", "1900", "2000", "2024", "2026", "2100", "9999"):
        for month in range(14):
            for day in range(33):
                for time_of_day in ("T00:00:00Z", "t23:59:59.5+23:59", "T23:59:60Z", "T24:00:00-01:00"):
                    value = f"{year}-{month:02d}-{day:02d}{time_of_day}"
                    assert fast.is_valid(value) == reference.is_valid(value), value


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}$",
        r"^[a-z0-9][a-z0-9_-]{0,62}$",
        r"^(Z|\+00:00)$",
        r"^(?:ab|c)+?x*$",
        r"[^a-z]",
        r"^a.b$",
        r"^\.\[\]\/$",
    ],
)
def test_portable_patterns_take_the_fast_path_and_agree(pattern: str) -> None:
    schema = {"$schema": DRAFT, "type": "string", "pattern": pattern}
    fast = _compile_fast(schema)
    assert fast is not None
    reference = Draft202012Validator(schema)
    values = ["", "a", "ab", "abx", "cabx", "a-b", "a\nb", "a\rb", "a\u2028b", "Z", "+00:00", "AB", "é", ".[]/", "1a"]
    values.append("abcdef12-1a2B")
    for value in values + [value + "\n" for value in values]:
        if fast.is_valid(value):
            assert reference.is_valid(value), value
        elif reference.is_valid(value):
            assert value.endswith("\n"), value  # Python's $ matches before a final newline


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": r"^\d+$"},  # Unicode digit tables differ between the engines
        {"type": "string", "pattern": r"^\w+$"},
        {"type": "string", "pattern": r"(?i)^abc$"},
        {"type": "string", "pattern": r"^a*+$"},  # possessive in Python 3.11, not in Rust
        {"type": "string", "pattern": r"^[a-z&&[^x]]$"},  # a class intersection in Rust only
        {"type": "string", "pattern": r"^(?=a)"},
        {"type": "string", "pattern": "^é$"},
        {"type": "number", "multipleOf": 0.1},  # jsonschema_rs accepts 0.3, Python's float division does not
        {"not": {"type": "string", "pattern": "^a$"}},  # a stricter inner check would make the whole looser
        {"oneOf": [{"type": "string"}, {"pattern": "^a$"}]},
        {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
        {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"},
        {"type": "string", "x-unknown": 1},
    ],
)
def test_schemas_the_fast_path_cannot_judge_exactly_are_left_to_the_reference(schema: dict[str, Any]) -> None:
    assert _compile_fast({"$schema": DRAFT, **schema}) is None


def test_multiple_of_in_a_properties_schema_is_judged_by_the_reference(tmp_path: Path) -> None:
    root = _copy_schemas(tmp_path)
    _write(
        root / "tip" / "v1.json",
        {**OBJECT_SCHEMA, "required": ["amount"], "properties": {"amount": {"type": "number", "multipleOf": 0.1}}},
    )
    registry = SchemaRegistry.load(root)
    event = {**example_event("login", 1), "event_type": "tip", "properties": {"amount": 0.3}}
    assert paths(registry.validate(event)) == ["$.properties.amount"]  # 0.3 / 0.1 == 2.9999999999999996
    assert registry.validate({**event, "properties": {"amount": 0.5}}) == []


def test_unknown_formats_and_formats_without_a_native_check_use_the_reference_checker() -> None:
    schema = {
        "$schema": DRAFT,
        "type": "object",
        "properties": {"host": {"type": "string", "format": "ipv4"}, "re": {"format": "regex"}, "z": {"format": "zz"}},
    }
    fast = _compile_fast(schema)
    reference = Draft202012Validator(schema, format_checker=FormatChecker())
    for instance in [{"re": "a("}, {"re": "^a+$"}, {"z": "anything"}, {"host": "1.2.3.4"}, {"host": "1.2.3.04"}]:
        assert fast.is_valid(instance) == reference.is_valid(instance), instance


def _parse_outcome(parse: Any, text: Any) -> tuple[str, str]:
    """What a parser made of ``text``: its value's repr (so -0.0, key order and types count) or its error."""
    try:
        return "ok", repr(parse(text))
    except (ValueError, RecursionError, TypeError) as error:
        return type(error).__name__, str(error)


def _json_loads(text: Any) -> Any:
    return json.loads(text, parse_constant=_reject)


@pytest.mark.parametrize(
    "text",
    [
        "\ufeff{}",
        '{"a": NaN}',
        '{"a": -Infinity}',
        '{"a": 1e400, "b": -0, "c": 12345678901234567890123, "d": -0.0, "e": 1e-400}',
        '{"a": "\\ud800", "a": 2}',  # a lone surrogate escape: json accepts it, msgspec does not
        '{"b": 1, "a": 2, "b": 3}',
        '"a\tb"',
        '"a\x01b"',
        '"\x7f"',
        "  {} ",
        "\x0c{}",
        "{} x",
        "",
        "1" * 5000,  # above Python's 4300-digit int limit
        "[" * 100_000,
        "[" * 900 + "]" * 900,
        b'{"a": 1}',
        bytearray(b"{}"),
        memoryview(b"{}"),
        42,
        None,
    ],
)
def test_parse_json_matches_json_loads_results_and_errors(text: Any) -> None:
    assert _parse_outcome(_parse_json, text) == _parse_outcome(_json_loads, text)


def _random_text(rng: random.Random) -> str:
    return "".join(
        rng.choice('aZ09 "\\/\b\f\n\r\t\x00\x1f\x7f\u00e9\u2028\ufeff\U0001f600') for _ in range(rng.randrange(8))
    )


def _random_json_value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, with the awkward ones over-represented: escapes, huge ints, subnormal and random-bit floats."""
    kind = rng.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-(2**70), 2**70) if rng.random() < 0.3 else rng.randint(-1000, 1000)
    if kind == 2:
        return struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0]  # inf and nan are skipped later
    if kind == 3:
        return rng.choice([0.1, 1e-320, 2.2250738585072011e-308, 1.7976931348623157e308, -0.0, 5e-324, 1 / 3])
    if kind in (4, 5):
        return _random_text(rng)
    if kind == 6:
        return [_random_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_random_text(rng): _random_json_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_parse_json_matches_json_loads_on_random_and_broken_documents() -> None:
    rng = random.Random(7)
    documents = []
    for _ in range(1500):
        value = _random_json_value(rng)
        if isinstance(value, float) and not math.isfinite(value):
            continue
        documents.append(json.dumps(value, ensure_ascii=rng.random() < 0.5))
    numbers = [
        f"{rng.choice(['', '-', '+'])}{rng.choice(['0', '00', '1', '12', '9' * 20])}"
        f"{rng.choice(['', '.', '.5', '.0001', '.' + '3' * 25])}{rng.choice(['', 'e', 'E5', 'e-7', 'e+400', 'e-400'])}"
        for _ in range(1000)
    ]
    broken = []
    for document in rng.sample(documents, 800):
        chars = list(document)
        for _ in range(rng.randint(1, 3)):
            position = rng.randint(0, len(chars))
            chars.insert(position, rng.choice('{}[]",:0-.eE \\\t\nuNaIfinity\x00'))
            if rng.random() < 0.5 and chars:
                del chars[rng.randrange(len(chars))]
        broken.append("".join(chars))
    outcomes = Counter()
    for text in documents + numbers + broken:
        expected = _parse_outcome(_json_loads, text)
        assert _parse_outcome(_parse_json, text) == expected, text
        outcomes[expected[0]] += 1
    assert outcomes["ok"] > 1500 and outcomes["JSONDecodeError"] > 300, outcomes


def test_fast_validators_are_compiled_lazily_and_rebuilt_after_unpickling() -> None:
    def compiled(registry: SchemaRegistry) -> list[tuple[str, int]]:
        return sorted(key for key, validator in registry._fast_validators.items() if validator is not _PENDING)

    registry = SchemaRegistry.load(SCHEMAS_DIR)
    assert compiled(registry) == []
    event = example_event("page_view", 2)
    assert registry._fast_accepts(event)
    assert compiled(registry) == [("page_view", 2)]
    assert registry._fast_validators[("page_view", 2)] is not None, "the shipped schemas all take the fast path"

    restored = pickle.loads(pickle.dumps(registry))
    assert compiled(restored) == []
    assert restored._fast_accepts(event)
    assert not restored._fast_accepts({**event, "properties": {"url": 1}})


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 1, "maximum": 3},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        {"type": "string", "minLength": 2, "maxLength": 3},
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
        {"enum": [1, "a", None, [1, 2], {"a": 1}]},
        {"const": {"a": [1, 2.0]}},
        {"type": ["string", "null"]},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        {"allOf": [{"minimum": 0}, {"maximum": 1}]},
        {"type": "object", "required": ["a"], "properties": {"a": {}}, "additionalProperties": {"type": "integer"}},
        {"type": "object", "additionalProperties": False},
    ],
)
def test_every_keyword_of_the_fast_path_agrees_with_the_reference(schema: dict[str, Any]) -> None:
    schema = {"$schema": DRAFT, **schema}
    fast = _compile_fast(schema)
    reference = Draft202012Validator(schema, format_checker=FormatChecker())
    instances: list[Any] = [0, 1, 1.0, 2, 3, 3.5, 4, True, False, None, -0.0, 0.5, 1e308, 2**64, -(2**70)]
    instances += ["", "a", "ab", "abcd", "😀😀", "é", [], [1], [1, 2], [1, 2, 3], [1.0], [True], ["a"]]
    instances += [{}, {"a": 1}, {"a": 1.0}, {"a": True}, {"a": [1, 2.0]}, {"a": [1, True]}, {"a": 1, "b": 2}, {"b": 1}]
    for instance in instances:
        assert fast.is_valid(instance) == reference.is_valid(instance), instance

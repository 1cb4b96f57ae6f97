"""The event contract: shipped schemas, validation paths, compatibility rules, pickling, load errors."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from pipelines.schemas import (
    CompatibilityIssue,
    SchemaRegistry,
    SchemaRegistryError,
    UnknownSchemaError,
    Violation,
    check_compatibility,
    check_schema_pair,
)

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


@pytest.mark.parametrize(
    "change",
    [
        {"occurred_at": "2026-11-20T10:15:30+00:00"},
        {"occurred_at": "2026-11-20T10:15:30Z"},
        {"occurred_at": "2026-11-20T10:15:30.123456789Z"},
        {"event_id": "3F1C2B9E-8A4D-4E6F-9B0A-1C2D3E4F5A6B"},
        {"user_id": None, "anonymous_id": "anon-7"},
        {"session_id": None},
        {"context": {"ip": "2001:db8::1"}},
        {"context": {}},
        {"tenant_id": "t"},
    ],
)
def test_accepted_envelope_variants(registry: SchemaRegistry, change: dict[str, Any]) -> None:
    assert registry.validate({**example_event("login", 1), **change}) == []


def _drop(key: str):
    return lambda event: event.pop(key)


@pytest.mark.parametrize(
    ("event_type", "version", "change", "path", "fragment"),
    [
        # missing fields
        ("order_completed", 2, {"properties": {"amount": 1, "currency": "EUR"}}, "$.properties.order_id", "missing"),
        ("login", 1, _drop("tenant_id"), "$.tenant_id", "missing"),
        ("login", 1, _drop("properties"), "$.properties", "missing"),
        # wrong types
        ("order_completed", 1, {"properties": {"order_id": "o", "amount": "12", "currency": "EUR"}},
         "$.properties.amount", "not of type 'number'"),
        ("add_to_cart", 1, {"properties": {"product_id": "p", "quantity": 1.5, "price": 1, "currency": "EUR"}},
         "$.properties.quantity", "not of type 'integer'"),
        ("login", 1, {"version": "1"}, "$.version", "not of type 'integer'"),
        ("login", 1, {"version": True}, "$.version", "not of type 'integer'"),
        ("login", 1, {"properties": ["sso"]}, "$.properties", "not of type 'object'"),
        ("login", 1, {"user_id": 42}, "$.user_id", "not of type"),
        # value constraints of the properties
        ("order_completed", 1, {"properties": {"order_id": "o", "amount": -1, "currency": "EUR"}},
         "$.properties.amount", "minimum"),
        ("order_completed", 1, {"properties": {"order_id": "o", "amount": 1, "currency": "eur"}},
         "$.properties.currency", "does not match"),
        ("add_to_cart", 1, {"properties": {"product_id": "p", "quantity": 0, "price": 1, "currency": "EUR"}},
         "$.properties.quantity", "minimum"),
        ("page_view", 2, {"properties": {"url": "u", "scroll_depth": 1.5}}, "$.properties.scroll_depth", "maximum"),
        ("page_view", 2, {"properties": {"url": "u", "page_type": "blog"}}, "$.properties.page_type", "not one of"),
        ("signup", 1, {"properties": {"method": "email", "plan": "gold"}}, "$.properties.plan", "not one of"),
        ("system_alert", 1, {"properties": {"component": "c", "severity": "fatal", "message": "m"}},
         "$.properties.severity", "not one of"),
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
        ("login", 1, {"properties": {"method": "sso", "remember_me": True}}, "$.properties.remember_me",
         "unexpected field"),
        ("page_view", 1, {"properties": {"url": "u", "page_type": "home"}}, "$.properties.page_type",
         "unexpected field"),
        ("login", 1, {"context": {"browser": "x"}}, "$.context.browser", "unexpected field"),
        # context
        ("login", 1, {"context": {"ip": "203.0.113.300"}}, "$.context.ip", "IPv4 or IPv6"),
        ("login", 1, {"context": {"device": "watch"}}, "$.context.device", "not one of"),
        ("login", 1, {"context": "mobile"}, "$.context", "not of type 'object'"),
    ],
)
def test_each_violation_is_reported_alone_at_its_path(
    registry: SchemaRegistry, event_type: str, version: int, change: Any, path: str, fragment: str
) -> None:
    event = example_event(event_type, version)
    if callable(change):
        change(event)
    else:
        event.update(change)
    violations = registry.validate(event)
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


def test_missing_identity_fields_are_each_reported(registry: SchemaRegistry) -> None:
    event = example_event("login", 1)
    del event["user_id"], event["anonymous_id"]
    assert paths(registry.validate(event)) == ["$", "$.anonymous_id", "$.user_id"]


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


@pytest.mark.parametrize(
    ("relative", "content", "fragment"),
    [
        ("login/v1.json", '{"type": "object", ', "not valid JSON"),
        ("login/v1.json", "[]", "must be a JSON object"),
        ("login/v1.json", {"type": "object", "additionalProperties": False, "required": "method"}, "not a valid JSON Schema"),
        ("login/v1.json", {"type": "object", "properties": {}}, "additionalProperties false"),
        ("login/v1.json", {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}, "$schema must be"),
        ("login/version2.json", {"type": "object", "additionalProperties": False}, "bad schema file name"),
        ("login/v0.json", {"type": "object", "additionalProperties": False}, "bad schema file name"),
        ("login/v01.json", {"type": "object", "additionalProperties": False}, "bad schema file name"),
        ("Log-In", {"type": "object", "additionalProperties": False}, "unexpected entry"),
        ("login/draft/v1.json", {"type": "object", "additionalProperties": False}, "bad schema file name"),
        ("stray.json", {}, "unexpected entry"),
        ("envelope.json", {"type": "object", "properties": {"a": {"type": "strin"}}}, "not a valid JSON Schema"),
        ("envelope.json", {"type": "object"}, "must declare 'properties'"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, relative: str, content: Any, fragment: str) -> None:
    root = _copy_schemas(tmp_path)
    if relative == "Log-In":
        _write(root / relative / "v1.json", content)
    else:
        _write(root / relative, content)
    with pytest.raises(SchemaRegistryError) as raised:
        SchemaRegistry.load(root)
    assert str(root / relative) in str(raised.value)
    assert fragment in str(raised.value)


def test_load_errors_for_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(SchemaRegistryError, match="does not exist"):
        SchemaRegistry.load(tmp_path / "nowhere")
    root = _copy_schemas(tmp_path)
    (root / "envelope.json").unlink()
    with pytest.raises(SchemaRegistryError, match="envelope.json: envelope schema is missing"):
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

"""The backward-compatibility check between consecutive versions of each event type.

A new version may only add optional fields: data valid under the old schema must stay valid under
the new one, with the same field types. Keywords whose meaning the checker does not model are
reported for review instead of being assumed safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pipelines.contracts.registry import SchemaRegistry, _child_path

# Keywords whose meaning check_schema_pair does not model: any change to them is reported for review.
_OPAQUE_KEYWORDS = ("anyOf", "oneOf", "allOf", "not", "$ref", "if", "then", "else", "patternProperties")
# (keyword, True when a larger value accepts fewer instances)
_BOUNDS = (
    ("minimum", True),
    ("exclusiveMinimum", True),
    ("minLength", True),
    ("minItems", True),
    ("maximum", False),
    ("exclusiveMaximum", False),
    ("maxLength", False),
    ("maxItems", False),
)


@dataclass(frozen=True)
class Incompatibility:
    """One backward-incompatible difference between two schemas, located by ``path``."""

    path: str
    reason: str


@dataclass(frozen=True)
class CompatibilityIssue:
    """An incompatibility between two versions of one event type in the registry."""

    event_type: str
    from_version: int
    to_version: int
    path: str
    reason: str


def check_compatibility(registry: SchemaRegistry) -> list[CompatibilityIssue]:
    """Backward-compatibility problems between consecutive versions of every event type.

    A gap in the version numbers is reported with ``from_version`` 0 and path ``$.version``.
    """
    issues: list[CompatibilityIssue] = []
    for event_type in registry.event_types:
        versions = registry.versions(event_type)
        expected = list(range(1, versions[-1] + 1))
        if versions != expected:
            missing = sorted(set(expected) - set(versions))
            issues.append(
                CompatibilityIssue(
                    event_type,
                    0,
                    versions[-1],
                    "$.version",
                    f"versions must be contiguous from 1; missing {', '.join(f'v{n}' for n in missing)}",
                )
            )
        for older, newer in pairwise(versions):
            for problem in check_schema_pair(
                registry.properties_schema(event_type, older),
                registry.properties_schema(event_type, newer),
                path="$.properties",
            ):
                issues.append(CompatibilityIssue(event_type, older, newer, problem.path, problem.reason))
    return issues


def check_schema_pair(old: dict[str, Any], new: dict[str, Any], path: str = "$") -> list[Incompatibility]:
    """Why ``new`` cannot replace ``old`` backward-compatibly: only optional fields may be added.

    Data valid under ``old`` must stay valid under ``new``, with the same field types, so every
    field keeps its type, enums only grow, bounds only loosen, and nested objects follow the same rule.
    """
    return sorted(_pair_issues(old, new, path), key=lambda issue: (issue.path, issue.reason))


def _pair_issues(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Incompatibility]:
    old_types, new_types = _types_of(old), _types_of(new)
    if old_types != new_types:
        yield Incompatibility(path, f"type changed from {_describe_types(old_types)} to {_describe_types(new_types)}")
        return
    yield from _enum_issues(old, new, path)
    yield from _bound_issues(old, new, path)
    for keyword in ("pattern", "format"):
        if keyword in new and new.get(keyword) != old.get(keyword):
            yield Incompatibility(path, f"{keyword} changed from {old.get(keyword)!r} to {new[keyword]!r}")
    for keyword in _OPAQUE_KEYWORDS:
        if old.get(keyword) != new.get(keyword):
            yield Incompatibility(path, f"'{keyword}' changed; the checker cannot prove this compatible")
    if "object" in new_types or "properties" in old or "properties" in new:
        yield from _object_issues(old, new, path)
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        yield from _pair_issues(old["items"], new["items"], f"{path}[*]")
    elif old.get("items") != new.get("items"):
        yield Incompatibility(path, "'items' changed; the checker cannot prove this compatible")


def _object_issues(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Incompatibility]:
    old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(old_fields):
        field_path = _child_path(path, name)
        if name not in new_fields:
            yield Incompatibility(field_path, "field removed")
        else:
            yield from _pair_issues(old_fields[name], new_fields[name], field_path)
    for name in sorted(new_required - old_required):
        if name in old_fields:
            yield Incompatibility(_child_path(path, name), "optional field made required")
        else:
            yield Incompatibility(_child_path(path, name), "new required field added")
    if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
        yield Incompatibility(path, "additional properties were allowed and are now forbidden")


def _enum_issues(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Incompatibility]:
    old_values, new_values = _allowed_values(old), _allowed_values(new)
    if new_values is None:
        return
    if old_values is None:
        yield Incompatibility(path, f"values restricted to {new_values} where any value was allowed")
        return
    removed = [value for value in old_values if value not in new_values]
    if removed:
        yield Incompatibility(path, f"enum narrowed: {removed} no longer allowed")


def _bound_issues(old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Incompatibility]:
    for keyword, larger_is_tighter in _BOUNDS:
        if keyword not in new:
            continue
        before, after = old.get(keyword), new[keyword]
        if before is None or (after > before if larger_is_tighter else after < before):
            yield Incompatibility(path, f"{keyword} tightened from {before!r} to {after!r}")


def _allowed_values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return list(schema["enum"]) if "enum" in schema else None


def _types_of(schema: dict[str, Any]) -> frozenset[str]:
    declared = schema.get("type")
    if declared is None:
        return frozenset()
    return frozenset([declared] if isinstance(declared, str) else declared)


def _describe_types(types: frozenset[str]) -> str:
    return "|".join(sorted(types)) if types else "any"

"""Event contract: the schema registry, event validation and the backward-compatibility check.

Layout of the schema directory (``conf/schemas`` by default)::

    envelope.json              fields every event carries
    <event_type>/v<N>.json     schema of the ``properties`` object of that type and version

The registry composes envelope + ``event_type``/``version`` constants + properties schema into
one JSON Schema (draft 2020-12) per (type, version). Validators are compiled lazily, once per
(type, version), because validation runs per event inside Spark executors; the registry pickles
to its raw schemas only, so Spark can ship it and each executor rebuilds its own validators.

Two validators judge each event. The Python ``jsonschema`` library is the reference: it defines the
contract and words every violation. It runs ~3k events/s, so a ``jsonschema_rs`` (Rust) validator
answers first, and an event it accepts is valid without asking the reference. Everything else (an
invalid event, or one the fast path cannot judge) goes to the reference, so results are the
reference's exactly as long as the fast path never accepts what the reference rejects. It does not,
by construction: it only judges plain JSON values (``jsonschema_rs`` reads a tuple as an array and a
``Decimal`` as a number), only schemas whose keywords and regex syntax mean the same in both
libraries, and its ``date-time`` format carries an extra guard because ``jsonschema_rs`` accepts
strings the reference rejects (leap seconds, year 0000, non-digit years).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError

ENVELOPE_FILE = "envelope.json"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_EVENT_TYPE_DIR = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.json$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_MESSAGE = 240
# Keywords jsonschema_rs evaluates like the reference on plain JSON values, grouped by where subschemas
# sit; a schema using any other keyword is validated by the reference alone. jsonschema_rs is stricter
# on a few values (see _FAST_PATTERN), which is safe only where a stricter subschema cannot make the
# whole schema looser: hence no "not" and no "oneOf".
_FAST_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples"})
_FAST_ASSERTIONS = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    }
)
_FAST_SUBSCHEMA = frozenset({"additionalProperties", "items"})
_FAST_SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf"})
# Formats whose jsonschema_rs check accepts nothing the reference rejects (differential tests in
# tests/test_schemas.py); date-time only together with _DATE_TIME_GUARD. Any other format is checked
# by calling the reference's own checker from Rust.
_FAST_NATIVE_FORMATS = frozenset({"date-time", "ipv4", "ipv6", "uuid"})
# What the reference (rfc3339_validator) accepts syntactically, minus its trailing-newline quirk:
# seconds 00-59, hours 00-23, year not 0000, digits only. jsonschema_rs checks the day of the month.
_DATE_TIME_GUARD = (
    "^(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-(?:0[1-9]|1[0-2])-[0-9]{2}"
    "[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
# Regex syntax Python's re and Rust's regex read alike: ASCII literals, escaped metacharacters, ASCII
# classes without Rust's set operators (&&, --, ~~, nested []), non-capturing groups, alternation,
# anchors and repeats, each repeat following an atom (Python 3.11 reads a*+ as possessive). No \d, \w
# or \s (the engines' Unicode tables differ), no flags, no lookaround. Python's $ also matches before a
# final newline and Rust's does not, which only makes the fast path stricter.
_ESCAPED_META = r"\\[.^$|?*+()\[\]{}\\/-]"
_REGEX_ATOM = (
    rf"""[A-Za-z0-9 _,:;@#%=!'"<>/-] | {_ESCAPED_META} | \. | \)"""
    rf"""| \[\^?-?(?:[A-Za-z0-9](?:-[A-Za-z0-9])?|[ _.,:;@#%=!'"<>/+*?(){{}}|$]|{_ESCAPED_META})+-?\]"""
)
_FAST_PATTERN = re.compile(
    rf"(?: (?:{_REGEX_ATOM}) (?:(?:[*+?]|\{{[0-9]+(?:,[0-9]*)?\}})\??)? | [\^$|] | \((?:\?:)? )*", re.VERBOSE
)
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
_PENDING = object()  # a fast validator not compiled yet
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


class SchemaRegistryError(ValueError):
    """The schema directory is unusable; the message names the offending file."""


class UnknownSchemaError(LookupError):
    """Asked for an event type or version the registry does not hold."""


@dataclass(frozen=True)
class Violation:
    """One reason an event breaks the contract; ``path`` is JSONPath-like (``$.properties.amount``)."""

    path: str
    message: str


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


class SchemaRegistry:
    """All event schemas of the contract; use :meth:`load` to build one from a directory."""

    def __init__(self, envelope: dict[str, Any], properties_schemas: dict[tuple[str, int], dict[str, Any]]) -> None:
        self._envelope = envelope
        self._properties_schemas = dict(properties_schemas)
        self._reset_caches()

    def _reset_caches(self) -> None:
        versions: dict[str, list[int]] = {}
        for event_type, version in self._properties_schemas:
            versions.setdefault(event_type, []).append(version)
        self._versions = {event_type: sorted(found) for event_type, found in versions.items()}
        self._composed: dict[tuple[str, int], dict[str, Any]] = {}
        self._validators: dict[tuple[str, int] | None, Draft202012Validator] = {}
        # (type, version) -> compiled jsonschema_rs validator; _PENDING until first use, None when the
        # schema uses something the fast path cannot judge exactly like the reference.
        self._fast_validators: dict[tuple[str, int], Any] = dict.fromkeys(self._properties_schemas, _PENDING)

    def __getstate__(self) -> dict[str, Any]:
        """Only the raw schemas travel: compiled validators are rebuilt lazily where they are used."""
        return {"envelope": self._envelope, "properties_schemas": self._properties_schemas}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._envelope = state["envelope"]
        self._properties_schemas = state["properties_schemas"]
        self._reset_caches()

    @classmethod
    def load(cls, directory: str | Path) -> SchemaRegistry:
        """Read and check every schema file; any problem raises SchemaRegistryError naming the file."""
        root = Path(directory)
        if not root.is_dir():
            raise SchemaRegistryError(f"{root}: schema directory does not exist")
        envelope_path = root / ENVELOPE_FILE
        if not envelope_path.is_file():
            raise SchemaRegistryError(f"{envelope_path}: envelope schema is missing")
        envelope = _read_schema(envelope_path)
        if not isinstance(envelope.get("properties"), dict):
            raise SchemaRegistryError(f"{envelope_path}: envelope schema must declare 'properties'")

        properties_schemas: dict[tuple[str, int], dict[str, Any]] = {}
        for entry in sorted(root.iterdir()):
            if _ignored(entry) or entry == envelope_path:
                continue
            if not entry.is_dir() or not _EVENT_TYPE_DIR.match(entry.name):
                raise SchemaRegistryError(
                    f"{entry}: unexpected entry; expected {ENVELOPE_FILE} or an event type directory "
                    f"named like {_EVENT_TYPE_DIR.pattern}"
                )
            for version_path in sorted(entry.iterdir()):
                if _ignored(version_path):
                    continue
                match = _VERSION_FILE.match(version_path.name)
                if not version_path.is_file() or not match:
                    raise SchemaRegistryError(f"{version_path}: bad schema file name; expected v<N>.json with N >= 1")
                schema = _read_schema(version_path)
                if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
                    raise SchemaRegistryError(
                        f"{version_path}: a properties schema must have type 'object' and additionalProperties false"
                    )
                properties_schemas[(entry.name, int(match.group(1)))] = schema
            if not any(event_type == entry.name for event_type, _ in properties_schemas):
                raise SchemaRegistryError(f"{entry}: event type directory holds no v<N>.json schema")

        registry = cls(envelope, properties_schemas)
        for event_type, version in properties_schemas:
            try:
                Draft202012Validator.check_schema(registry.event_schema(event_type, version))
            except SchemaError as error:
                file = root / event_type / f"v{version}.json"
                raise SchemaRegistryError(f"{file}: composed event schema is invalid: {error.message}") from error
        return registry

    @property
    def envelope(self) -> dict[str, Any]:
        """The envelope schema as loaded (fields every event carries)."""
        return self._envelope

    @property
    def event_types(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, event_type: str) -> list[int]:
        try:
            return list(self._versions[event_type])
        except KeyError:
            raise UnknownSchemaError(f"unknown event_type {event_type!r}; known: {self.event_types}") from None

    def latest_version(self, event_type: str) -> int:
        return self.versions(event_type)[-1]

    def properties_schema(self, event_type: str, version: int) -> dict[str, Any]:
        """The schema of the ``properties`` object alone, as written in its file."""
        self._require(event_type, version)
        return copy.deepcopy(self._properties_schemas[(event_type, version)])

    def event_schema(self, event_type: str, version: int) -> dict[str, Any]:
        """The full schema of one (type, version): envelope + constants + properties schema."""
        return copy.deepcopy(self._composed_schema(event_type, version))

    def _require(self, event_type: str, version: int) -> None:
        if version not in self.versions(event_type):
            raise UnknownSchemaError(
                f"unknown version {version!r} of event_type {event_type!r}; known: {self.versions(event_type)}"
            )

    def _composed_schema(self, event_type: str, version: int) -> dict[str, Any]:
        key = (event_type, version)
        if key not in self._composed:
            self._require(event_type, version)
            properties = {k: v for k, v in self._properties_schemas[key].items() if k not in ("$schema", "$id")}
            schema = copy.deepcopy(self._envelope)
            schema["$schema"] = DRAFT_2020_12
            schema["$id"] = f"urn:lakehouse:schema:{event_type}:v{version}"
            schema["title"] = f"{event_type} v{version}"
            schema["properties"]["event_type"] = {"type": "string", "const": event_type}
            schema["properties"]["version"] = {"type": "integer", "const": version}
            schema["properties"]["properties"] = copy.deepcopy(properties)
            self._composed[key] = schema
        return self._composed[key]

    def _validator(self, key: tuple[str, int] | None) -> Draft202012Validator:
        """Compiled once per (type, version); ``None`` is the envelope alone, for unknown types/versions."""
        validator = self._validators.get(key)
        if validator is None:
            schema = self._envelope if key is None else self._composed_schema(*key)
            validator = Draft202012Validator(schema, format_checker=FormatChecker())
            self._validators[key] = validator
        return validator

    def _fast_validator(self, key: tuple[str, int]) -> jsonschema_rs.Validator | None:
        """The jsonschema_rs validator of a known (type, version), or None when only the reference may judge."""
        validator = self._fast_validators[key]
        if validator is _PENDING:
            validator = _compile_fast(self._composed_schema(*key))
            self._fast_validators[key] = validator
        return validator

    def _fast_accepts(self, event: dict[str, Any]) -> bool:
        """True only when jsonschema_rs proves a plain-JSON event valid; False means "ask the reference"."""
        event_type, version = event.get("event_type"), event.get("version")
        if type(version) is float and version.is_integer():  # 2.0 is the integer 2 in JSON Schema
            version = int(version)
        if type(event_type) is not str or type(version) is not int:  # bool is no version, even if Python says int
            return False
        key = (event_type, version)
        if key not in self._fast_validators:
            return False
        validator = self._fast_validator(key)
        try:
            return validator is not None and validator.is_valid(event)
        except Exception:  # e.g. a lone surrogate jsonschema_rs cannot encode: the reference decides
            return False

    def validate(self, event: object) -> list[Violation]:
        """Every contract violation of ``event``, sorted by path; ``[]`` when it is valid."""
        if type(event) is dict and _plain_json(event) and self._fast_accepts(event):
            return []
        return self._reference_violations(event)

    def _reference_violations(self, event: object) -> list[Violation]:
        """The Python jsonschema verdict: the contract's definition, and the wording of every violation."""
        if not isinstance(event, dict):
            return [Violation("$", f"event must be a JSON object, got {_json_type(event)}")]
        extra: list[Violation] = []
        key: tuple[str, int] | None = None
        event_type, version = event.get("event_type"), event.get("version")
        if isinstance(event_type, str):
            if event_type not in self._versions:
                extra.append(Violation("$.event_type", f"unknown event_type {event_type!r}; known: {self.event_types}"))
            elif _is_version_number(version) and version >= 1:
                if version in self._versions[event_type]:
                    key = (event_type, int(version))
                else:
                    extra.append(
                        Violation(
                            "$.version",
                            f"unknown version {version!r} of event_type {event_type!r}; "
                            f"known: {self._versions[event_type]}",
                        )
                    )
        violations = set(extra)
        for error in self._validator(key).iter_errors(event):
            violations.update(_violations_from(error))
        return sorted(violations, key=lambda v: (v.path, v.message))

    def validate_json(self, raw: bytes | str) -> tuple[dict[str, Any] | None, list[Violation]]:
        """Parse then validate one message; the event is None when it is not a JSON object."""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
            event = _parse_json(text)
        except UnicodeDecodeError as error:
            return None, [Violation("$", f"invalid JSON: not UTF-8 ({error.reason} at byte {error.start})")]
        except (ValueError, RecursionError) as error:
            return None, [Violation("$", f"invalid JSON: {_truncate(str(error) or type(error).__name__)}")]
        if not isinstance(event, dict):
            return None, [Violation("$", f"event must be a JSON object, got {_json_type(event)}")]
        # The parser only builds plain JSON values, so the walk validate() needs is skipped.
        if self._fast_accepts(event):
            return event, []
        return event, self._reference_violations(event)


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


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SchemaRegistryError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(schema, dict):
        raise SchemaRegistryError(f"{path}: a schema must be a JSON object, got {_json_type(schema)}")
    if schema.get("$schema", DRAFT_2020_12) != DRAFT_2020_12:
        raise SchemaRegistryError(f"{path}: $schema must be {DRAFT_2020_12!r}, got {schema['$schema']!r}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        location = _format_path(error.absolute_path)
        raise SchemaRegistryError(f"{path}: not a valid JSON Schema at {location}: {error.message}") from error
    return schema


def _ignored(entry: Path) -> bool:
    """Editor droppings and notes next to the schemas are not schemas."""
    return entry.name.startswith(".") or entry.suffix.lower() == ".md"


def _violations_from(error: ValidationError) -> Iterable[Violation]:
    """Turn one jsonschema error into violations located at the field concerned."""
    where = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        return [
            Violation(_format_path([*where, name]), "required field is missing")
            for name in error.validator_value
            if name not in error.instance
        ]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        return [
            Violation(_format_path([*where, name]), "unexpected field: the schema does not allow it")
            for name in error.instance
            if name not in known
        ]
    # A described field states what it expects once, even when several of its keywords fail
    # (a non-UTC timestamp breaks both pattern and format): equal violations collapse in a set.
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if not description or error.validator == "type":
        message = error.message
    elif isinstance(error.instance, dict | list):
        message = description
    else:
        message = f"expected {description}; got {_truncate(repr(error.instance), 80)}"
    return [Violation(_format_path(where), _truncate(message))]


def _format_path(parts: Iterable[Any]) -> str:
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = _child_path(path, str(part))
    return path


def _child_path(path: str, name: str) -> str:
    return f"{path}.{name}" if _PLAIN_KEY.match(name) else f"{path}[{json.dumps(name)}]"


def _is_version_number(value: object) -> bool:
    """JSON Schema treats 2.0 as an integer; bool is not a number here even though Python says so."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _reject_constant(token: str) -> Any:
    """NaN and Infinity are Python extensions, not JSON."""
    raise ValueError(f"{token} is not a valid JSON value")


# json.loads with keyword arguments builds a new decoder per call (a third of its cost on an event).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
try:  # msgspec (installed with Airflow) parses an event ~3x faster than json; without it json parses everything
    from msgspec.json import Decoder as _MsgspecDecoder
except ImportError:  # pragma: no cover - depends on the environment
    _MsgspecDecoder = None
_FAST_DECODE = _MsgspecDecoder().decode if _MsgspecDecoder is not None else None


def _parse_json(text: Any) -> Any:
    """``json.loads(text, parse_constant=_reject_constant)``: the same values and errors, faster.

    msgspec tries first. Where it succeeds it builds what json builds, and it rejects all json rejects
    (NaN, Infinity, control characters in strings, ...; tests/test_schemas.py compares them). Where it
    fails (invalid JSON, but also 1e400 or a lone surrogate escape, which json accepts), json parses
    again and gives its own result or error.
    """
    if isinstance(text, str) and not text.startswith("\ufeff"):
        if _FAST_DECODE is not None:
            with contextlib.suppress(Exception):
                return _FAST_DECODE(text)
        return _DECODER.decode(text)
    return json.loads(text, parse_constant=_reject_constant)  # its own BOM and argument-type errors


def _plain_json(value: object) -> bool:
    """Only dict, list, str, int, float, bool and None, exactly: what the fast path judges like the reference."""
    try:
        return _only_json_values(value)
    except RecursionError:  # nested deeper than Python recurses: the reference judges it
        return False


def _only_json_values(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _JSON_SCALARS and not _only_json_values(item)):
                return False
        return True
    if kind is list:
        return all(type(item) in _JSON_SCALARS or _only_json_values(item) for item in value)
    return kind in _JSON_SCALARS


class _NotFastSchema(Exception):
    """The schema uses something jsonschema_rs might judge differently from the reference."""


def _compile_fast(schema: dict[str, Any]) -> jsonschema_rs.Validator | None:
    """A jsonschema_rs validator accepting nothing the reference rejects, or None when that cannot be assured."""
    formats: set[str] = set()
    try:
        fast_schema = _fast_schema(schema, formats)
        reference_formats = FormatChecker()
        return jsonschema_rs.Draft202012Validator(
            fast_schema,
            validate_formats=True,
            formats={name: _reference_format(reference_formats, name) for name in formats - _FAST_NATIVE_FORMATS},
        )
    except Exception:  # _NotFastSchema, or jsonschema_rs rejecting a schema or regex: the reference judges alone
        return None


def _fast_schema(schema: Any, formats: set[str]) -> Any:
    """A copy of ``schema`` for jsonschema_rs, collecting the formats it uses; raises _NotFastSchema."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict):
        raise _NotFastSchema(f"subschema {schema!r}")
    fast: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in _FAST_ANNOTATIONS or keyword in _FAST_ASSERTIONS:
            fast[keyword] = value
        elif keyword in _FAST_SUBSCHEMA:
            fast[keyword] = _fast_schema(value, formats)
        elif keyword in _FAST_SUBSCHEMA_LISTS:
            fast[keyword] = [_fast_schema(item, formats) for item in value]
        elif keyword == "properties":
            fast[keyword] = {name: _fast_schema(item, formats) for name, item in value.items()}
        elif keyword == "pattern" and isinstance(value, str) and _FAST_PATTERN.fullmatch(value):
            fast[keyword] = value
        elif keyword == "format" and isinstance(value, str):
            fast[keyword] = value
            formats.add(value)
        else:
            raise _NotFastSchema(f"keyword {keyword!r}")
    if fast.get("format") == "date-time":
        return {"allOf": [fast, {"pattern": _DATE_TIME_GUARD}]}
    return fast


def _reference_format(checker: FormatChecker, name: str) -> Callable[[str], bool]:
    """The reference's own check of one format, for jsonschema_rs to call; formats it does not know pass."""
    if name not in checker.checkers:
        return lambda _instance: True

    def conforms(instance: str) -> bool:
        return checker.conforms(instance, name)

    return conforms


def _truncate(message: str, limit: int = _MAX_MESSAGE) -> str:
    """Violations are stored with quarantined events: a huge offending value must not bloat them."""
    return message if len(message) <= limit else message[: limit - 3] + "..."

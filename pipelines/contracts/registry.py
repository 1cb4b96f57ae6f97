"""The schema registry: loads the event schemas and validates events against them.

Layout of the schema directory (``conf/schemas`` by default)::

    envelope.json              fields every event carries
    <event_type>/v<N>.json     schema of the ``properties`` object of that type and version

The registry composes envelope + ``event_type``/``version`` constants + properties schema into
one JSON Schema (draft 2020-12) per (type, version). Validators are compiled lazily, once per
(type, version), because validation runs per event inside Spark executors; the registry pickles
to its raw schemas only, so Spark can ship it and each executor rebuilds its own validators.

The Python ``jsonschema`` library is the reference: it defines the contract and words every
violation. A faster ``jsonschema_rs`` validator may accept an event first; why that never changes
the verdict is explained in ``pipelines.contracts.validation``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError

from pipelines.contracts.validation import _compile_fast, _parse_json, _plain_json

ENVELOPE_FILE = "envelope.json"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_EVENT_TYPE_DIR = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.json$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_MESSAGE = 240
_PENDING = object()  # a fast validator not compiled yet


class SchemaRegistryError(ValueError):
    """The schema directory is unusable; the message names the offending file."""


class UnknownSchemaError(LookupError):
    """Asked for an event type or version the registry does not hold."""


@dataclass(frozen=True)
class Violation:
    """One reason an event breaks the contract; ``path`` is JSONPath-like (``$.properties.amount``)."""

    path: str
    message: str


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


def _truncate(message: str, limit: int = _MAX_MESSAGE) -> str:
    """Violations are stored with quarantined events: a huge offending value must not bloat them."""
    return message if len(message) <= limit else message[: limit - 3] + "..."

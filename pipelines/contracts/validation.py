"""The fast validation path: a ``jsonschema_rs`` validator and a JSON parser that agree with the reference.

Two validators judge each event. The Python ``jsonschema`` library is the reference: it defines the
contract and words every violation. It runs ~3k events/s, so a ``jsonschema_rs`` (Rust) validator
answers first, and an event it accepts is valid without asking the reference. Everything else (an
invalid event, or one the fast path cannot judge) goes to the reference, so results are the
reference's exactly as long as the fast path never accepts what the reference rejects. It does not,
by construction: it only judges plain JSON values (``jsonschema_rs`` reads a tuple as an array and a
``Decimal`` as a number), only schemas whose keywords and regex syntax mean the same in both
libraries, and its ``date-time`` format carries an extra guard because ``jsonschema_rs`` accepts
strings the reference rejects (leap seconds, year 0000, non-digit years).

Parsing a message follows the same rule: msgspec parses first, ``json`` whenever msgspec fails, so
values and errors are ``json``'s. ``SchemaRegistry`` (``pipelines.contracts.registry``) uses both.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

import jsonschema_rs
from jsonschema import FormatChecker

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

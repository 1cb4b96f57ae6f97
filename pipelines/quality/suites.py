"""Suite files (``expectations/<layer>.<table>.yaml``): load, resolve ``${params}`` and validate up front.

A suite is reviewable YAML rather than GX's JSON so a change to a data contract reads like a config diff::

    table: silver.events                 # must equal the file name without .yaml
    description: "..."                   # optional
    key_columns: [tenant_id, event_id]   # optional: the columns failing-row samples name (a row's identity)
    derived_columns:                     # optional: Spark SQL expressions added before validation, dropped after
      ingest_gap_days: "abs(unix_seconds(ingested_at) - unix_seconds(occurred_at)) / 86400.0"
    expectations:
      - name: unique_event_per_tenant    # unique in the file; the rule's name in results and messages
        type: expect_compound_columns_to_be_unique   # a GX 1.x expectation, snake_case or CamelCase
        kwargs: {column_list: [tenant_id, event_id]}
        where: "event_type != 'system_alert'"        # optional Spark SQL row filter (GX row_condition)
        action: fail                     # fail | warn | quarantine
        max_failure_pct: 1.0             # quarantine only, required there: above it the rule fails the gate
        why: "silver holds each event once"

``${name}`` in kwargs, ``where`` and ``derived_columns`` is replaced by ``params[name]``: a value that is exactly
``${name}`` takes the parameter as is (a list for ``value_set``, a number for ``max_value``), inside a longer
string it is formatted with ``str``. Everything that can be checked without data is checked here - unknown
keys, types and actions, kwargs (by instantiating the GX class), placeholders, quarantine support - so a bad
suite stops a deploy, not a nightly run. Column names are checked against the DataFrame by the gate.

GX itself is imported lazily (it takes seconds): importing this module starts neither GX nor Spark.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from pipelines.config import read_yaml_mapping
from pipelines.quality.predicates import QUARANTINE_TYPES

ACTIONS = ("fail", "warn", "quarantine")
SUITE_KEYS = ("table", "description", "key_columns", "derived_columns", "expectations")
RULE_KEYS = ("name", "type", "kwargs", "where", "action", "max_failure_pct", "why")
REQUIRED_RULE_KEYS = ("name", "type", "action", "why")
# GX kwargs the gate owns: a suite setting them would silently fight the gate.
RESERVED_KWARGS = {
    "row_condition": "use the rule's 'where' key (a Spark SQL condition)",
    "condition_parser": "use the rule's 'where' key (a Spark SQL condition)",
    "meta": "the gate uses meta to match results to rules",
    "notes": "use the rule's 'why' key",
    "result_format": "the gate sets the result format",
    "catch_exceptions": "the gate always catches and reports exceptions",
    "id": "GX assigns ids",
}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TABLE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


class SuiteError(ValueError):
    """A suite file is invalid, or does not fit the table it is run on; the message names the file and key."""


def gx_module() -> ModuleType:
    """``great_expectations``, imported on first use with its usage analytics off (no network calls from jobs)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations

    return great_expectations


def preload_gx() -> None:
    """Import GX and index its expectation classes in a background thread (about 3-4 s, once per process).

    A build process imports GX at its first gate; started when a gated build begins, the import overlaps the
    Spark jobs that come before that gate (the driver thread mostly waits on the JVM then). A failure here is
    ignored: the first real use imports again and raises where the gate can report it.
    """

    def load() -> None:
        with contextlib.suppress(Exception):  # the first real use raises it again
            _expectation_classes()

    threading.Thread(target=load, name="gx-preload", daemon=True).start()


@lru_cache(maxsize=1)
def _expectation_classes() -> dict[str, type]:
    """Every concrete GX expectation class by its snake_case type and by its class name."""
    import inspect

    gx = gx_module()
    base = gx.expectations.Expectation
    found: dict[str, type] = {}
    for name in dir(gx.expectations):
        cls = getattr(gx.expectations, name)
        if inspect.isclass(cls) and issubclass(cls, base) and not inspect.isabstract(cls):
            found[cls.expectation_type] = cls
            found[cls.__name__] = cls
    return found


def expectation_class(type_name: str) -> type | None:
    """The GX class for ``expect_column_values_to_not_be_null`` or ``ExpectColumnValuesToNotBeNull``; else None."""
    return _expectation_classes().get(type_name)


@dataclass(frozen=True)
class Rule:
    """One expectation of a suite with its params resolved and its kwargs accepted by GX."""

    index: int
    name: str
    type: str  # GX snake_case type, e.g. expect_column_values_to_not_be_null
    kwargs: Mapping[str, Any]
    action: str
    why: str
    where: str | None = None
    max_failure_pct: float | None = None

    def expectation(self, on_pandas: bool = False) -> Any:
        """A fresh GX expectation for one validation (GX mutates the instances a suite holds: ids, rendering).

        ``on_pandas``: for GX's pandas engine, on a frame where Spark already evaluated ``where`` into the boolean
        column :attr:`where_column` (the condition stays Spark SQL whatever the engine).
        """
        cls = expectation_class(self.type)  # imports GX the right way first (analytics off)
        assert cls is not None, self.type  # checked by load_suite
        from great_expectations.expectations.row_conditions import PassThroughCondition

        extra: dict[str, Any] = {"meta": {"rule": self.name}, "notes": self.why}
        if self.where is not None:
            # A PassThroughCondition is what GX makes of a legacy row_condition string, minus the deprecation
            # warning: Spark applies it with DataFrame.filter(where), pandas with DataFrame.query(where).
            condition = f"`{self.where_column}`" if on_pandas else self.where
            extra["row_condition"] = PassThroughCondition(pass_through_filter=condition)
            if on_pandas:  # the Data Docs show the condition as written: say what the column holds
                extra["notes"] = f"{self.why} (`{self.where_column}`: Spark's value of `{self.where}`)"
        return cls(**self.kwargs, **extra)

    @property
    def where_column(self) -> str:
        """The boolean column that holds ``where`` (null counted as false) when the rows go to pandas."""
        return f"_where_{self.index}"

    def columns(self) -> list[str]:
        """The columns the kwargs name (checked against the table before running)."""
        named = [self.kwargs.get(key) for key in ("column", "column_A", "column_B")]
        named += list(self.kwargs.get("column_list") or [])
        return [c for c in named if isinstance(c, str)]


@dataclass(frozen=True)
class Suite:
    source: str
    table: str
    rules: tuple[Rule, ...]
    key_columns: tuple[str, ...] = ()
    derived_columns: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None

    @property
    def name(self) -> str:
        """The suite's name in GX and in results: the file name without ``.yaml`` (equal to the table)."""
        return Path(self.source).name.removesuffix(".yaml")

    def rule(self, name: str) -> Rule:
        return next(rule for rule in self.rules if rule.name == name)


def load_suite(path: str | os.PathLike[str], params: Mapping[str, Any] | None = None) -> Suite:
    """Parse, resolve and validate one suite file; every problem names the file, expectation index and key."""
    source = str(path)
    params = dict(params or {})
    raw = read_yaml_mapping(path, "suite file", SuiteError, "a mapping with the keys table and expectations")
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise SuiteError(f"{source}: unknown top-level key(s) {unknown}; expected {', '.join(SUITE_KEYS)}")
    table = raw.get("table")
    if not isinstance(table, str) or not _TABLE.match(table):
        raise SuiteError(f"{source}: table: expected '<layer>.<table>' (e.g. silver.events), got {table!r}")
    stem = Path(source).name.removesuffix(".yaml")
    if stem != table:
        raise SuiteError(f"{source}: table: {table!r} does not match the file name; name the file {table}.yaml")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise SuiteError(f"{source}: description: expected a string, got {description!r}")
    key_columns = raw.get("key_columns") or []
    if not isinstance(key_columns, list) or not all(isinstance(c, str) and c for c in key_columns):
        raise SuiteError(f"{source}: key_columns: expected a list of column names, got {key_columns!r}")
    derived = _derived_columns(source, raw.get("derived_columns"), params)
    expectations = raw.get("expectations")
    if not isinstance(expectations, list) or not expectations:
        raise SuiteError(f"{source}: expectations: expected a non-empty list")
    rules: list[Rule] = []
    for index, item in enumerate(expectations):
        rule = _rule(source, index, item, params)
        if any(r.name == rule.name for r in rules):
            raise SuiteError(f"{source}: expectations[{index}].name: {rule.name!r} is used twice; names are unique")
        rules.append(rule)
    return Suite(source, table, tuple(rules), tuple(key_columns), derived, description)


def load_suites(directory: str | os.PathLike[str], params: Mapping[str, Any] | None = None) -> dict[str, Suite]:
    """Every ``*.yaml`` suite of ``directory`` by table name (one ``params`` for all: unused ones are ignored)."""
    files = sorted(Path(directory).glob("*.yaml"))
    if not files:
        raise SuiteError(f"no suite files (*.yaml) in {directory}")
    suites = [load_suite(path, params) for path in files]
    return {suite.table: suite for suite in suites}


def _derived_columns(source: str, raw: Any, params: Mapping[str, Any]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SuiteError(f"{source}: derived_columns: expected a mapping of column name -> Spark SQL expression")
    derived: dict[str, str] = {}
    for name, expression in raw.items():
        where = f"{source}: derived_columns.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise SuiteError(f"{where}: a column name is letters, digits and _, got {name!r}")
        if not isinstance(expression, str) or not expression.strip():
            raise SuiteError(f"{where}: expected a Spark SQL expression (a string), got {expression!r}")
        derived[name] = _resolve(expression, params, source, f"derived_columns.{name}")
    return derived


def _rule(source: str, index: int, item: Any, params: Mapping[str, Any]) -> Rule:
    where = f"{source}: expectations[{index}]"
    if not isinstance(item, dict):
        raise SuiteError(f"{where}: expected a mapping with the keys {', '.join(REQUIRED_RULE_KEYS)}")
    missing = [key for key in REQUIRED_RULE_KEYS if key not in item]
    if missing:
        raise SuiteError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(item) - set(RULE_KEYS))
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {unknown}; expected {', '.join(RULE_KEYS)}")
    name = item["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise SuiteError(f"{where}.name: letters, digits and _ (a stable id for results), got {name!r}")
    where = f"{source}: expectations[{index}] ({name})"
    why = item["why"]
    if not isinstance(why, str) or not why.strip():
        raise SuiteError(f"{where}.why: say why the rule exists (a non-empty string), got {why!r}")

    type_name = item["type"]
    cls = expectation_class(type_name) if isinstance(type_name, str) else None
    if cls is None:
        known = sorted(k for k in _expectation_classes() if k.startswith("expect_"))
        close = difflib.get_close_matches(str(type_name), known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see great_expectations.expectations"
        raise SuiteError(f"{where}.type: unknown GX expectation {type_name!r}{hint}")
    type_name = cls.expectation_type

    action = item["action"]
    if action not in ACTIONS:
        raise SuiteError(f"{where}.action: unknown action {action!r}; expected one of {', '.join(ACTIONS)}")

    kwargs = item.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise SuiteError(f"{where}.kwargs: expected a mapping of GX argument -> value, got {kwargs!r}")
    for key in kwargs:
        if key in RESERVED_KWARGS:
            raise SuiteError(f"{where}.kwargs.{key}: not allowed here: {RESERVED_KWARGS[key]}")
    kwargs = {
        key: _resolve(value, params, source, f"expectations[{index}].kwargs.{key}") for key, value in kwargs.items()
    }

    row_filter = item.get("where")
    if row_filter is not None:
        if not isinstance(row_filter, str) or not row_filter.strip():
            raise SuiteError(f"{where}.where: expected a Spark SQL condition (a string), got {row_filter!r}")
        row_filter = _resolve(row_filter, params, source, f"expectations[{index}].where")

    pct = item.get("max_failure_pct")
    if action == "quarantine":
        if "max_failure_pct" not in item:
            raise SuiteError(f"{where}.max_failure_pct: required for quarantine (the share of rows it may remove)")
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
            raise SuiteError(f"{where}.max_failure_pct: expected a number in 0..100 (a percentage), got {pct!r}")
        if "mostly" in kwargs:
            raise SuiteError(
                f"{where}.kwargs.mostly: not with quarantine: every failing row is quarantined; "
                "max_failure_pct says how many may be"
            )
        if type_name not in QUARANTINE_TYPES:
            raise SuiteError(
                f"{where}.action: quarantine needs a row-level Spark predicate, and {type_name} has none; "
                f"use fail or warn, or one of: {', '.join(sorted(QUARANTINE_TYPES))}"
            )
    elif "max_failure_pct" in item:
        raise SuiteError(f"{where}.max_failure_pct: only for action quarantine (this rule is {action})")

    rule = Rule(index, name, type_name, kwargs, action, why.strip(), row_filter, None if pct is None else float(pct))
    try:
        rule.expectation()  # GX validates the kwargs (pydantic): types, required and unknown arguments
    except Exception as exc:
        raise SuiteError(f"{where}.{'; '.join(_kwargs_problems(exc))}") from None
    return rule


def _kwargs_problems(exc: Exception) -> list[str]:
    """``kwargs.<arg>: <message>`` for each argument GX's pydantic validation rejected."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [f"kwargs: {type(exc).__name__}: {exc}"]
    by_arg: dict[str, list[str]] = {}
    for error in errors():
        arg = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
        by_arg.setdefault(arg, []).append(str(error.get("msg")))
    problems = []
    for arg, messages in by_arg.items():
        # Most GX fields also accept a suite-parameter dict ({"$PARAMETER": ...}); its "not a valid dict"
        # alternative only hides the real message.
        shown = [m for m in messages if m != "value is not a valid dict"] or messages
        problems.append(f"kwargs{'.' + arg if arg else ''}: {'; '.join(shown)}")
    return problems


def _resolve(value: Any, params: Mapping[str, Any], source: str, path: str) -> Any:
    """``value`` with every ``${name}`` replaced from ``params`` (recursively in lists and mappings)."""
    if isinstance(value, list):
        return [_resolve(v, params, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _resolve(v, params, source, f"{path}.{k}") for k, v in value.items()}
    if not isinstance(value, str):
        return value
    whole = _PLACEHOLDER.fullmatch(value)
    if whole:
        return _param(whole.group(1), params, source, path)

    def text(match: re.Match[str]) -> str:
        found = _param(match.group(1), params, source, path)
        if isinstance(found, list | tuple | dict | set):
            raise SuiteError(f"{source}: {path}: ${{{match.group(1)}}} is a collection; use it as the whole value")
        return str(found)

    return _PLACEHOLDER.sub(text, value)


def _param(name: str, params: Mapping[str, Any], source: str, path: str) -> Any:
    if name not in params:
        given = ", ".join(sorted(params)) or "none"
        raise SuiteError(f"{source}: {path}: unresolved placeholder ${{{name}}}; params given: {given}")
    return params[name]

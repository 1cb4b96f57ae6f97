"""The quality gate: run a suite on a DataFrame with GX, then decide what may be published.

Actions, per rule that fails (a rule passes or fails as GX says, ``mostly`` included):

fail
    the gate fails: the caller publishes nothing (:meth:`GateResult.raise_if_failed` raises
    :class:`GateFailed`, one line per failed rule).
warn
    published anyway; the failure is recorded (results table, Data Docs, ``GateResult.warnings``).
quarantine
    the rows GX counted as unexpected are split off: ``GateResult.quarantined`` holds them with ``_rule``
    and ``_reason`` (every quarantine rule the row breaks, in suite order), ``GateResult.passing`` the rest -
    an exact partition of the input. When a rule would remove more than ``max_failure_pct`` percent of the
    input rows it escalates to fail: a mass failure is an incident, not a few bad rows.

A rule GX could not evaluate (an exception: a column of the wrong type, a bad regex) fails the gate whatever
its action: an unknown result is not a pass. Suite problems that need the table (a missing column, a bad
``where`` or derived-column expression) raise :class:`SuiteError` before GX runs.

Cost: the input (plus derived columns) is persisted and counted once - the count computes it, GX's metric
jobs then read the cache, and the row count picks the engine (a small frame is tried on GX's pandas engine
first, see ``runner``) - or, for a caller's aggregate of a few rows (``collect``), the input is computed once
into the driver and validated and published from there; GX runs every rule in one validation; the split
costs one aggregation (per-rule counts, checked against GX's) and only happens when a quarantine rule failed.
"""

from __future__ import annotations

import json
import operator
import os
import time
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.platform.spark import persist_for_reuse
from pipelines.quality.predicates import offending_values, unexpected
from pipelines.quality.runner import SAMPLE_SIZE, RuleOutcome, StoredRun, render_docs, run_suite
from pipelines.quality.suites import Suite, SuiteError, load_suite

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyspark.sql import Column, DataFrame

RULE_COLUMN = "_rule"
REASON_COLUMN = "_reason"
NO_ACTION = "none"  # the action taken for a rule that passed
OUTCOMES = ("passed", "warned", "quarantined", "failed")


@dataclass
class RuleResult:
    """One rule's result: what GX observed and what the gate did about it."""

    name: str
    type: str
    action: str  # configured: fail | warn | quarantine
    why: str
    success: bool
    action_taken: str  # none | warn | quarantine | fail
    observed_value: str | None = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None  # as GX reports it: of the non-null values in the rule's domain
    failing_sample: list[dict[str, Any]] = field(default_factory=list)  # at most 20 failing rows' keys
    quarantined_rows: int = 0
    quarantined_pct: float | None = None  # of the input rows: what max_failure_pct limits
    escalated: bool = False  # a quarantine over max_failure_pct, turned into a failure
    error: str | None = None

    def line(self, table: str) -> str:
        """One line for a failure message: rule, table, count, sample, why."""
        if self.error:
            what = f"could not be evaluated: {self.error}"
        elif self.escalated:
            what = (
                f"{self.quarantined_rows} rows to quarantine ({self.quarantined_pct:.2f}% of the input) "
                "exceed max_failure_pct"
            )
        elif self.unexpected_count is not None:
            what = f"{self.unexpected_count} unexpected ({(self.unexpected_percent or 0.0):.2f}%)"
        else:
            what = f"observed {self.observed_value}"
        sample = json.dumps(self.failing_sample[:3], default=str, separators=(",", ":"), sort_keys=True)
        return f"{table}: {self.name} ({self.type}) {what}; sample {sample}; why: {self.why}"


@dataclass
class GateResult:
    """The outcome of one gate run. ``passing`` is what may be published (unless the gate failed).

    ``passing`` and ``quarantined`` read the validated frame, persisted or collected to the driver (the input is
    computed once): use the result as a context manager, or call :meth:`release` once they are written.
    """

    run_id: str
    table: str
    suite: str  # the suite file's name
    rules: list[RuleResult]
    passing: DataFrame
    quarantined: DataFrame | None = None  # the input's columns + _rule, _reason; None: nothing quarantined
    quarantined_rows: int = 0  # rows in ``quarantined`` (a row breaking two rules counts once)
    input_rows: int | None = None  # rows validated
    stored: StoredRun | None = None  # the GX result kept for the Data Docs
    docs_index: Path | None = None  # set once the result's page is rendered
    seconds: float = 0.0
    gx_seconds: float = 0.0
    gx_engine: str = "spark"  # whose results these are: spark, or pandas (a small frame that passed there)
    persisted: DataFrame | None = field(default=None, repr=False)

    @property
    def outcome(self) -> str:
        """passed | warned | quarantined | failed (the most severe action taken)."""
        taken = {rule.action_taken for rule in self.rules}
        if "fail" in taken:
            return "failed"
        if "quarantine" in taken:
            return "quarantined"
        return "warned" if "warn" in taken else "passed"

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    @property
    def failures(self) -> list[RuleResult]:
        return [rule for rule in self.rules if rule.action_taken == "fail"]

    @property
    def warnings(self) -> list[RuleResult]:
        return [rule for rule in self.rules if rule.action_taken == "warn"]

    def message(self) -> str:
        head = f"quality gate {self.outcome} for {self.table} (suite {self.suite}, run {self.run_id}):"
        return "\n".join([head, *(f"  {rule.line(self.table)}" for rule in self.failures)])

    def raise_if_failed(self) -> None:
        if self.failed:
            raise GateFailed(self)

    def release(self) -> None:
        """Unpersist the validated frame (a frame the caller had persisted itself is left alone)."""
        if self.persisted is not None:
            self.persisted.unpersist()
            self.persisted = None

    def __enter__(self) -> GateResult:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class GateFailed(RuntimeError):
    """A quality gate failed: publish nothing. One line per failed rule: table, rule, count, sample, why."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.message())
        self.result = result


def validate(
    df: DataFrame,
    suite: Suite,
    *,
    run_id: str,
    docs_dir: str | os.PathLike[str] | None = None,
    render: bool = True,
    collect: bool = False,
) -> GateResult:
    """Run ``suite`` on ``df`` and apply the rules' actions; never raises for bad data (see ``raise_if_failed``).

    ``docs_dir``: the Data Docs site to add this validation to (``GateResult.docs_index`` is its index.html);
    ``render=False`` only keeps the result in the site's store, for a caller that renders several gates' pages
    at once (``runner.render_docs(result.stored, ...)``). The returned frames read the persisted input: release
    the result after writing them.

    ``collect=True``: the caller knows ``df`` is an aggregate whose size is bounded by tenants x days x a small
    factor (a gold table, a reconciliation). Its rows are computed in one Spark job and held by the driver,
    and everything after - GX, the split and the caller's write of ``passing`` - reads that local copy.
    Persisting instead costs a count job planned over the frame's whole lineage plus a planned read of the
    cache per later action: at 1M events, gold's seven gates cost 5.6 s beyond the build persisted and 2.0 s
    collected (BENCHMARKS.md). The copy lives in driver memory: a year's backfill of 100 tenants with 50 event
    types is ~1.8M event_counts rows, roughly 100 MB - fine for a driver, not for row-level data.
    """
    started = time.monotonic()
    frame = _prepare(df, suite)
    rows: int | None = None
    owned = False  # persist once; a frame the caller persisted is reused as is
    if collect:
        frame, rows = _local_copy(frame)
    elif not frame.is_cached:
        frame, owned = persist_for_reuse(frame), True
    try:
        if rows is None:
            rows = frame.count()  # computes (and caches) the input once, before GX's metric jobs read it
        gx_run = run_suite(frame, suite, run_id, docs_dir, rows)
        rules = [_rule_result(rule, gx_run.outcomes[rule.name]) for rule in suite.rules]
        result = GateResult(
            run_id=run_id,
            table=suite.table,
            suite=Path(suite.source).name,
            rules=rules,
            passing=frame.select(*df.columns) if suite.derived_columns else frame,
            input_rows=rows,
            stored=gx_run.stored,
            gx_seconds=gx_run.seconds,
            gx_engine=gx_run.engine,
            persisted=frame if owned else None,
        )
        if render and gx_run.stored is not None:
            result.docs_index = render_docs([gx_run.stored])
        _split(result, suite, frame, list(df.columns))
    except BaseException:
        if owned:
            frame.unpersist()
        raise
    result.seconds = round(time.monotonic() - started, 2)
    return result


def run_gate(
    df: DataFrame,
    suite: Suite | str | os.PathLike[str],
    *,
    run_id: str,
    params: Mapping[str, Any] | None = None,
    docs_dir: str | os.PathLike[str] | None = None,
    results_path: str | None = None,
) -> GateResult:
    """Load (if a path), validate, append the results to ``results_path`` (Delta), then raise if the gate failed.

    The results and Data Docs are written before raising, so a failed gate is visible in ops tables.
    """
    from pipelines.quality.results import write_results

    loaded = suite if isinstance(suite, Suite) else load_suite(suite, params)
    result = validate(df, loaded, run_id=run_id, docs_dir=docs_dir)
    if results_path is not None:
        write_results(df.sparkSession, result, results_path)
    if result.failed:
        result.release()
        raise GateFailed(result)
    return result


def _local_copy(frame: DataFrame) -> tuple[DataFrame, int]:
    """``frame`` computed once and held by the driver (Arrow, the Spark types kept), as a DataFrame over those
    rows, and its row count."""
    table = frame.toArrow()
    return frame.sparkSession.createDataFrame(table, schema=frame.schema), table.num_rows


def _prepare(df: DataFrame, suite: Suite) -> DataFrame:
    """``df`` with the derived columns; every column, ``where`` and expression checked against the table."""
    from pyspark.errors import AnalysisException, ParseException
    from pyspark.sql import functions as F

    source = suite.source
    clash = [name for name in suite.derived_columns if name in df.columns]
    if clash:
        raise SuiteError(f"{source}: derived_columns.{clash[0]}: the table already has a column of that name")
    frame = df
    for name, expression in suite.derived_columns.items():  # one by one: a later one may use an earlier one
        try:
            frame = frame.withColumn(name, F.expr(expression))
            frame.schema  # noqa: B018 - analysis is where an unknown column or function shows up
        except (AnalysisException, ParseException) as exc:
            raise SuiteError(f"{source}: derived_columns.{name}: {_first_line(exc)}") from None
    columns = set(frame.columns)
    reserved = sorted(columns & {rule.where_column for rule in suite.rules})
    if reserved:  # a small frame's `where` conditions travel to pandas in columns of these names
        raise SuiteError(f"{source}: column {reserved[0]} of {suite.table}: names _where_<n> are reserved for the gate")
    missing_keys = [c for c in suite.key_columns if c not in columns]
    if missing_keys:
        raise SuiteError(f"{source}: key_columns: {missing_keys} not in {suite.table}'s columns {sorted(columns)}")
    for rule in suite.rules:
        where = f"{source}: expectations[{rule.index}] ({rule.name})"
        missing = [c for c in rule.columns() if c not in columns]
        if missing:
            raise SuiteError(f"{where}.kwargs: column(s) {missing} not in {suite.table}'s columns {sorted(columns)}")
        if rule.where is not None:
            try:
                frame.select(F.expr(rule.where)).schema  # noqa: B018
            except (AnalysisException, ParseException) as exc:
                raise SuiteError(f"{where}.where: {_first_line(exc)}") from None
    return frame


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def _rule_result(rule: Any, outcome: RuleOutcome) -> RuleResult:
    raw = outcome.result
    observed = raw.get("observed_value")
    count = raw.get("unexpected_count")
    elements = raw.get("element_count")
    if observed is None and count is not None:
        observed = f"{count} unexpected of {elements}"
    sample = raw.get("partial_unexpected_index_list")
    if sample is None:  # no key columns: the failing values themselves
        sample = [{"value": value} for value in raw.get("partial_unexpected_list") or []]
    result = RuleResult(
        name=rule.name,
        type=rule.type,
        action=rule.action,
        why=rule.why,
        success=outcome.success and outcome.error is None,
        action_taken=NO_ACTION,
        observed_value=None if observed is None else (observed if isinstance(observed, str) else _json(observed)),
        element_count=None if elements is None else int(elements),
        unexpected_count=None if count is None else int(count),
        unexpected_percent=None if raw.get("unexpected_percent") is None else float(raw["unexpected_percent"]),
        failing_sample=[dict(item) for item in sample][:SAMPLE_SIZE],
        error=outcome.error,
    )
    if outcome.error:
        result.action_taken = "fail"
    elif not result.success:
        result.action_taken = rule.action  # quarantine may still escalate to fail in _split
    return result


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _any(flags: Mapping[str, Any]) -> Column:
    from pyspark.sql import functions as F

    return reduce(operator.or_, [F.col(flag) for flag in flags])


def _split(result: GateResult, suite: Suite, frame: DataFrame, columns: list[str]) -> None:
    """Quarantine: flag each failing quarantine rule's rows, count them, escalate, split (sets the frames)."""
    from pyspark.sql import functions as F

    rules = [suite.rule(r.name) for r in result.rules if r.action_taken == "quarantine"]
    if not rules:
        return
    flags = {f"_q{i}": unexpected(rule) for i, rule in enumerate(rules)}
    flagged = frame.withColumns(flags)
    counts = flagged.agg(
        *[F.sum(F.col(flag).cast("long")).alias(flag) for flag in flags],
        F.sum(_any(flags).cast("long")).alias("_any"),
    ).first()
    assert counts is not None
    total = result.input_rows or 0
    by_name = {r.name: r for r in result.rules}
    for flag, rule in zip(flags, rules, strict=True):
        rule_result = by_name[rule.name]
        found = int(counts[flag] or 0)
        rule_result.quarantined_rows = found
        if found != rule_result.unexpected_count:
            # The predicate and GX disagree: splitting on it would publish rows GX counted as bad (or drop good).
            rule_result.error = (
                f"the quarantine predicate selects {found} rows but GX counted {rule_result.unexpected_count}; "
                "pipelines.quality.predicates does not mirror this expectation's options"
            )
            rule_result.action_taken = "fail"
            continue
        rule_result.quarantined_pct = 100.0 * found / max(total, 1)
        if rule.max_failure_pct is not None and rule_result.quarantined_pct > rule.max_failure_pct:
            rule_result.escalated = True
            rule_result.action_taken = "fail"
    any_flag = _any(flags)
    reasons = [
        F.when(F.col(flag), F.concat(F.lit(f"{rule.name}: "), offending_values(rule), F.lit(f" ({rule.why})")))
        for flag, rule in zip(flags, rules, strict=True)
    ]
    names = [F.when(F.col(flag), F.lit(rule.name)) for flag, rule in zip(flags, rules, strict=True)]
    result.passing = flagged.filter(~any_flag).select(*columns)
    result.quarantined = flagged.filter(any_flag).select(
        *columns, F.concat_ws(",", *names).alias(RULE_COLUMN), F.concat_ws("; ", *reasons).alias(REASON_COLUMN)
    )
    result.quarantined_rows = int(counts["_any"] or 0)

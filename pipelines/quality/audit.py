"""Write-audit-publish: the quality gates of one silver or gold build.

A build computes its candidates as DataFrames and hands each to :meth:`JobGates.audit` before publishing
anything. The audit runs the table's suite (``<quality.expectations_dir>/<layer>.<table>.yaml``) with the
run's parameters and adds the validation to the Data Docs site (``quality.docs_dir``).
:meth:`JobGates.raise_if_any_failed` then appends the results of every audit so far to ``ops.quality_results``
in one commit (a gold build audits seven candidates: one commit, not seven; silver's input and candidate checks
share one), renders their Data Docs pages in one pass (one index rebuild, not seven), and raises if a gate
failed; the build publishes the passing rows only after it, so a failed gate leaves every target table at the
Delta version it had and its results recorded.

Quarantine is for row-level data (``silver.events``): failing rows go to ``silver/quarantine`` with the rule
and the reason, the rest is published. Bronze is immutable input and gold rows are aggregates (a wrong DAU
row means a wrong build, not a bad row), so their suites may only ``fail`` or ``warn``; a suite that asks to
quarantine there is refused at load.

``--skip-gates`` runs no suite and records the skip in ``ops.quality_results`` (action ``skipped``), so a
published table without an audit is visible.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import Settings
from pipelines.platform.lake import Lake
from pipelines.quality.gate import GateFailed, GateResult, validate
from pipelines.quality.results import RESULTS_COLUMNS, result_rows, write_rows
from pipelines.quality.runner import StoredRun, render_docs
from pipelines.quality.suites import SuiteError, load_suite, preload_gx

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SKIPPED = "skipped"
NO_SUITE = "no suite"


@dataclass
class GateSummary:
    """One line of a build's gate report."""

    table: str
    outcome: str  # passed | warned | quarantined | failed | skipped | no suite
    failed_rules: list[str]
    warned_rules: list[str]
    quarantined_rows: int = 0


class JobGates:
    """The gates of one job run (one ``run_id`` for all of its tables)."""

    def __init__(self, spark: SparkSession, settings: Settings, job: str, *, skip: bool = False) -> None:
        self.spark = spark
        self.settings = settings
        self.skip = skip
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = f"{job}-{stamp}-{uuid.uuid4().hex[:8]}"
        self.results_path = Lake(settings).table("ops", "quality_results")
        self.docs_dir = Path(settings.resolve_path(settings.quality.docs_dir))
        self.expectations_dir = Path(settings.resolve_path(settings.quality.expectations_dir))
        self.summaries: list[GateSummary] = []
        self._params: dict[str, Any] | None = None
        self._unrecorded: list[dict[str, Any]] = []  # results rows not yet in ops.quality_results
        self._unrendered: list[StoredRun] = []  # validations without their Data Docs page yet
        if not skip:
            preload_gx()

    @property
    def docs_index(self) -> Path:
        return self.docs_dir / "index.html"

    def params(self) -> dict[str, Any]:
        """What the shipped suites refer to as ``${...}``: registered types, tenants, limits from the config."""
        if self._params is None:
            from pipelines.contracts.registry import SchemaRegistry
            from pipelines.platform.batch import known_tenants

            tenants = self.settings.quality.tenants or known_tenants(self.settings, Lake(self.settings).bronze_events)
            self._params = {
                "event_types": SchemaRegistry.load(self.settings.schemas_dir).event_types,
                "tenants": sorted(tenants),
                "max_event_age_days": self.settings.bronze.max_event_age_days,
                "min_user_match_rate": self.settings.quality.min_user_match_rate,
                "max_quarantine_rate": self.settings.quality.max_quarantine_rate,
            }
        return self._params

    def audit(
        self, table: str, frame: DataFrame, *, allow_quarantine: bool = False, aggregate: bool = False
    ) -> GateResult | None:
        """Validate ``frame`` (the candidate rows of ``table``); None when gates are skipped or the table has no
        suite. The caller publishes ``result.passing`` only if no gate of the run failed, then releases it.

        ``aggregate``: ``frame`` has a few rows (per tenant and day, say): validated - and published - from a
        copy collected to the driver (``gate.validate``'s ``collect``)."""
        if self.skip:
            self._record_skip(table)
            self.summaries.append(GateSummary(table, SKIPPED, [], []))
            return None
        path = self.expectations_dir / f"{table}.yaml"
        if not path.exists():
            self.summaries.append(GateSummary(table, NO_SUITE, [], []))
            return None
        suite = load_suite(path, self.params())
        quarantining = [rule.name for rule in suite.rules if rule.action == "quarantine"]
        if quarantining and not allow_quarantine:
            raise SuiteError(
                f"{path}: {', '.join(quarantining)}: action quarantine is not supported for {table} (its rows are "
                "immutable input or aggregates); use fail or warn"
            )
        result = validate(frame, suite, run_id=self.run_id, docs_dir=self.docs_dir, render=False, collect=aggregate)
        self._unrecorded.extend(result_rows(result))
        if result.stored is not None:
            self._unrendered.append(result.stored)
        self.summaries.append(
            GateSummary(
                table,
                result.outcome,
                [rule.name for rule in result.failures],
                [rule.name for rule in result.warnings],
                result.quarantined_rows,
            )
        )
        return result

    def _record_skip(self, table: str) -> None:
        row: dict[str, Any] = dict.fromkeys(RESULTS_COLUMNS)
        row |= {
            "run_id": self.run_id,
            "table": table,
            "suite": f"{table}.yaml",
            "expectation": "*",
            "action": SKIPPED,
            "recorded_at": datetime.now(UTC),
        }
        self._unrecorded.append(row)

    def record(self) -> None:
        """Append the results of the audits (and skips) since the last call to ops.quality_results (one commit)
        and render their Data Docs pages (one pass)."""
        if self._unrendered:
            render_docs(self._unrendered)
            self._unrendered = []
        if self._unrecorded:
            write_rows(self.spark, self._unrecorded, self.results_path)
            self._unrecorded = []

    def raise_if_any_failed(self, results: list[GateResult | None], *, more_gates: bool = False) -> None:
        """Record the results, then publish nothing when any gate of the run failed: one exception naming every
        failed rule of every table.

        ``more_gates``: the build has gates still to run (silver checks its input long before its candidates);
        passing results then wait for the next check, so a build makes one results commit. A failure is always
        recorded before raising."""
        failed = [result for result in results if result is not None and result.failed]
        if failed or not more_gates:
            self.record()
        if failed:
            error = GateFailed(failed[0])
            if len(failed) > 1:
                error.args = ("\n".join(result.message() for result in failed),)
            raise error


def release(results: list[GateResult | None]) -> None:
    for result in results:
        if result is not None:
            result.release()

"""Gate results as rows of the ops Delta table ``ops.quality_results`` (one row per rule and run).

The table is the history Data Docs do not give: trends of a rule's unexpected count, which runs warned or
quarantined, and the keys of failing rows to start an investigation from. Appends only; the caller owns the
path (and retention). ``failing_sample`` is JSON: a list of up to 20 objects (key columns and checked values).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines.platform.spark import local_frame

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pipelines.quality.gate import GateResult

RESULTS_SCHEMA = (
    "run_id string, table string, suite string, expectation string, expectation_type string, "
    "configured_action string, action string, success boolean, observed_value string, element_count long, "
    "unexpected_count long, unexpected_percent double, quarantined_rows long, failing_sample string, "
    "error string, recorded_at timestamp"
)
RESULTS_COLUMNS = tuple(part.strip().split(" ")[0] for part in RESULTS_SCHEMA.split(","))


def result_rows(result: GateResult, recorded_at: datetime | None = None) -> list[dict[str, Any]]:
    """One dict per rule, keyed by :data:`RESULTS_COLUMNS`; ``action`` is the action TAKEN (``none`` if it passed)."""
    when = recorded_at or datetime.now(UTC)
    return [
        {
            "run_id": result.run_id,
            "table": result.table,
            "suite": result.suite,
            "expectation": rule.name,
            "expectation_type": rule.type,
            "configured_action": rule.action,
            "action": rule.action_taken,
            "success": rule.success,
            "observed_value": rule.observed_value,
            "element_count": rule.element_count,
            "unexpected_count": rule.unexpected_count,
            "unexpected_percent": rule.unexpected_percent,
            "quarantined_rows": rule.quarantined_rows,
            "failing_sample": json.dumps(rule.failing_sample, default=str, sort_keys=True),
            "error": rule.error,
            "recorded_at": when,
        }
        for rule in result.rules
    ]


def write_results(spark: SparkSession, result: GateResult, path: str) -> int:
    """Append ``result``'s rows to the Delta table at ``path`` (created on first write); returns the row count."""
    rows = result_rows(result)
    write_rows(spark, rows, path)
    return len(rows)


def write_rows(spark: SparkSession, rows: list[dict[str, Any]], path: str) -> None:
    """Append rows keyed by :data:`RESULTS_COLUMNS` (any number of gates' results) in one Delta commit."""
    frame = local_frame(spark, [tuple(row[c] for c in RESULTS_COLUMNS) for row in rows], RESULTS_SCHEMA)
    frame.write.format("delta").mode("append").save(path)

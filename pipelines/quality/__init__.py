"""Data-quality gates: Great Expectations suites (``expectations/*.yaml``) run on Spark DataFrames.

Typical use in a job, before publishing a table::

    from pipelines.quality import load_suite, run_gate

    suite = load_suite("expectations/silver.events.yaml", {"event_types": [...], "min_user_match_rate": 0.95})
    with run_gate(frame, suite, run_id=run_id, docs_dir=docs, results_path=ops_results) as gate:
        write(gate.passing)                        # raises GateFailed first if a fail rule broke
        if gate.quarantined is not None:
            write_quarantine(gate.quarantined)     # input columns + _rule, _reason

Modules: ``suites`` (file format, loading), ``gate`` (actions and the decision), ``predicates`` (row
predicates for quarantine), ``runner`` (the GX validation and Data Docs), ``results`` (ops table rows).
Importing the package starts neither Spark nor GX.
"""

from pipelines.quality.gate import GateFailed, GateResult, RuleResult, run_gate, validate
from pipelines.quality.results import RESULTS_SCHEMA, result_rows, write_results
from pipelines.quality.suites import ACTIONS, Rule, Suite, SuiteError, load_suite, load_suites

__all__ = [
    "ACTIONS",
    "RESULTS_SCHEMA",
    "GateFailed",
    "GateResult",
    "Rule",
    "RuleResult",
    "Suite",
    "SuiteError",
    "load_suite",
    "load_suites",
    "result_rows",
    "run_gate",
    "validate",
    "write_results",
]

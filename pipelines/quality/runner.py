"""One GX validation of a suite on a Spark DataFrame, and its Data Docs.

Everything GX-specific lives here, so the gate reads plain dicts and GX upgrades touch one module:

* an ephemeral context per validation (nothing to deploy, no ``gx/`` folder in the repo), usage analytics
  and progress bars off;
* the Spark DataFrame data source with ``persist=False``: the gate persists the frame itself, once, and
  unpersists it; GX would ``persist()`` and never release it;
* every rule of the suite in one checkpoint run (GX plans the metrics together: far fewer Spark jobs than
  a run per rule), and at most two such runs. The first asks for ``BASIC`` results without samples: counts
  and observed values only, a third of the Spark jobs of ``SUMMARY`` (17 instead of 49 for silver.events'
  8 rules), since GX computes the sample metrics of every rule, passing or not. Only when a rule failed
  does the suite run again with ``SUMMARY`` and the table's key columns as ``unexpected_index_column_names``:
  up to 20 failing rows' keys per rule, which is all the samples need (``COMPLETE`` would collect every
  failing value to the driver). The detailed run is the one recorded and rendered; on the same persisted
  frame it reaches the same verdicts. A gate that passes - the common case - pays for counts only;
* a small frame (at most ``SMALL_FRAME_ROWS`` rows: gold's aggregates, reconciliation frames) is first
  validated by GX's pandas engine on a copy collected in one Spark job, each rule's ``where`` evaluated by
  Spark into a boolean column on the way (the condition stays Spark SQL). On Spark, such a gate is some 15
  tiny jobs whose cost is planning, not data: about 1.3 s per gold gate, against 0.06 s for GX on pandas
  plus the collect. When every rule passes there, that is the result. Otherwise - a rule failed or raised -
  the suite runs on Spark as below, and only Spark's results are used: the verdicts, samples, error
  messages and quarantine split of a failing gate are the Spark engine's, whatever the frame's size. The
  engines see the same values, so they can differ only where they judge them differently: Python's regex
  flavour for the few ``match_regex`` rules (the suites keep to the syntax both share), integer columns with
  nulls arriving as floats, and NaN (skipped like a null by GX on pandas, above every bound on Spark: a frame
  holding NaN goes straight to Spark, as does one that cannot be collected or judged on pandas). A rule that
  fails on pandas only costs the Spark run; ``test_small_frames_pass_on_pandas_and_fail_on_spark`` holds the
  two engines to the same results.
  The Spark run of a small frame plans without adaptive execution and with one shuffle partition
  (adaptive execution re-plans each tiny shuffle as its own stage; restored after the run);
* Data Docs in the caller's folder, rendered by :func:`render_docs` for any number of runs at once (a build
  renders its gates' pages once, not once per gate: each rendering rebuilds the index, re-reading up to
  ``INDEX_RUNS`` stored results). The ephemeral context's own site points at a random temp folder and
  its stores live in memory, and GX's index builder DELETES pages whose results are not in the context's
  stores - so with in-memory stores every run would wipe the pages of earlier runs and other tables. The
  context here keeps its suites and validation results as JSON under ``<docs>/.gx_store`` instead: the
  site accumulates every table and run, like a file context's would; its index lists the newest
  ``INDEX_RUNS`` runs.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.platform.spark import session_conf
from pipelines.quality.suites import Suite, gx_module

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SAMPLE_SIZE = 20
_CAUSE = re.compile(r"(?:[a-z_]\w*\.)*([A-Z]\w*(?:Exception|Error)): ")
_WRAPPERS = {"SparkException", "Py4JJavaError"}
DOCS_SITE = "lakehouse_quality"
STORE_DIR = ".gx_store"
# Validation runs the Data Docs index links, newest first. GX re-reads every linked result from the store each
# time it rebuilds the index (once per gate run): unbounded, the index cost grows with the lake's age (32 gate
# runs read 2,700 stored results). Older pages stay in the site; only the index stops listing them.
INDEX_RUNS = 200
SMALL_FRAME_ROWS = 100_000
SMALL_FRAME_PLANNING = {"spark.sql.adaptive.enabled": "false", "spark.sql.shuffle.partitions": "1"}


@dataclass
class RuleOutcome:
    """What GX said about one rule: success, its ``result`` dict (SUMMARY) and the exception, if it raised."""

    success: bool
    result: dict[str, Any]
    error: str | None = None


@dataclass
class GxRun:
    outcomes: dict[str, RuleOutcome]  # by rule name
    stored: StoredRun | None  # where the run's result is kept for the Data Docs (None: no docs folder)
    seconds: float
    engine: str = "spark"  # the GX engine whose results these are: spark, or pandas (a small frame that passed)


@dataclass(frozen=True)
class StoredRun:
    """A validation result kept in a Data Docs folder's store, not yet rendered (see :func:`render_docs`)."""

    docs_dir: Path
    result_id: Any  # GX's ValidationResultIdentifier
    suite_name: str


def _context(docs_dir: Path | None) -> Any:
    gx = gx_module()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
    stores = dict(defaults.stores)
    sites: dict[str, Any] = {}
    if docs_dir is not None:
        store = docs_dir / STORE_DIR
        stores["expectations_store"] = {
            "class_name": "ExpectationsStore",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(store / "suites")},
        }
        stores["validation_results_store"] = {
            "class_name": "ValidationResultsStore",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(store / "results")},
        }
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": INDEX_RUNS},
        }
    config = DataContextConfig(
        store_backend_defaults=defaults,
        stores=stores,
        data_docs_sites=sites,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _exception(info: Any) -> str | None:
    """The message of an exception GX caught for a rule, if any.

    GX 1.24 reports it in two shapes: ``{"raised_exception": True, "exception_message": ...}``, or - when a
    metric failed to compute (e.g. a Spark error) - one such dict per metric id.
    """
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return _brief(str(info.get("exception_message") or "exception")) if info.get("raised_exception") else None
    messages = {_exception(value) for value in info.values()} - {None}
    return "; ".join(sorted(m for m in messages if m)) or None


def _brief(message: str) -> str:
    """The cause of a (Py4J-wrapped) exception in one line: the Java stack trace is noise in a gate message."""
    causes = [m for m in _CAUSE.finditer(message) if m.group(1) not in _WRAPPERS]
    if not causes:
        return message.strip().split("\n")[0][:300]
    cause = causes[0]
    rest = message[cause.end() :].split("\n")[0]
    return f"{cause.group(1)}: {rest}".strip()[:300]


def run_suite(
    df: DataFrame, suite: Suite, run_id: str, docs_dir: str | Path | None = None, rows: int | None = None
) -> GxRun:
    """Validate ``df`` (already persisted, derived columns added) against every rule of ``suite`` at once:
    counts first, then - only if a rule failed - again with samples of the failing rows' keys.

    ``docs_dir``: keep the result in that Data Docs folder's store (render it with :func:`render_docs`).
    ``rows``: the frame's row count, if known; a small frame is tried on GX's pandas engine first.
    """
    started = time.monotonic()
    docs = Path(docs_dir).resolve() if docs_dir is not None else None
    context = _context(docs)
    small = rows is not None and rows <= SMALL_FRAME_ROWS
    counts = {"result_format": "BASIC", "partial_unexpected_count": 0}
    with session_conf(df.sparkSession, SMALL_FRAME_PLANNING) if small else nullcontext():
        if small:
            passed = _passed_on_pandas(context, df, suite, run_id, counts)
            if passed is not None:
                outcomes, result_id = passed
                stored = StoredRun(docs, result_id, suite.name) if docs is not None else None
                return GxRun(outcomes, stored, round(time.monotonic() - started, 2), "pandas")
        definition = _definition(context, suite, on_pandas=False)
        outcomes, result_id = _checkpoint_run(context, definition, df, suite, run_id, counts)
        if not _all_passed(outcomes):
            detail: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE}
            if suite.key_columns:
                detail["unexpected_index_column_names"] = list(suite.key_columns)
            context.validation_results_store.remove_key(result_id)
            outcomes, result_id = _checkpoint_run(context, definition, df, suite, run_id, detail)
    stored = StoredRun(docs, result_id, suite.name) if docs is not None else None
    return GxRun(outcomes, stored, round(time.monotonic() - started, 2), "spark")


def _all_passed(outcomes: dict[str, RuleOutcome]) -> bool:
    return all(outcome.success and outcome.error is None for outcome in outcomes.values())


def _definition(context: Any, suite: Suite, *, on_pandas: bool) -> Any:
    """A validation definition of every rule of ``suite`` over a whole-frame batch of a Spark or pandas source."""
    gx = gx_module()
    if on_pandas:
        source = context.data_sources.add_pandas("pandas")
    else:
        source = context.data_sources.add_spark("spark", persist=False)
    batch = source.add_dataframe_asset(suite.table).add_batch_definition_whole_dataframe("whole_dataframe")
    expectation_suite = gx.ExpectationSuite(name=suite.name)
    for rule in suite.rules:
        expectation_suite.add_expectation(rule.expectation(on_pandas=on_pandas))
    expectation_suite = context.suites.add_or_update(expectation_suite)
    return context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=expectation_suite)
    )


def _passed_on_pandas(
    context: Any, df: DataFrame, suite: Suite, run_id: str, result_format: dict[str, Any]
) -> tuple[dict[str, RuleOutcome], Any] | None:
    """The outcomes and stored result id of ``suite`` on GX's pandas engine, if every rule passed there; else None
    (nothing stored): the frame could not be collected or judged on pandas, or a rule failed or raised."""
    try:
        collected = _collected(df, suite)
        if collected is None:
            return None
        definition = _definition(context, suite, on_pandas=True)
        with warnings.catch_warnings():  # GX's pandas regex check uses str.contains, which warns on groups
            warnings.filterwarnings("ignore", "This pattern is interpreted as a regular expression", UserWarning)
            outcomes, result_id = _checkpoint_run(context, definition, collected, suite, run_id, result_format)
    except Exception:  # e.g. a `where` that raises under ANSI mode: the Spark run reports it as the rule's error
        return None
    if _all_passed(outcomes):
        return outcomes, result_id
    context.validation_results_store.remove_key(result_id)  # one result per gate run in the Data Docs
    return None


def _collected(df: DataFrame, suite: Suite) -> Any:
    """The rows of a small ``df`` as a pandas frame (one Spark job, through Arrow), with each rule's ``where``
    evaluated by Spark into :attr:`Rule.where_column` - a null condition counts as false, as in ``filter``.

    None when a floating-point column holds NaN: GX on pandas skips NaN as it skips nulls, while on Spark NaN is
    a value above every other and breaks a ``max_value``; such a frame is Spark's to judge. Converted by pyarrow,
    timestamps keep Spark's microseconds (pandas' nanoseconds end in 2262).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    flags = [
        F.coalesce(F.expr(rule.where), F.lit(False)).alias(rule.where_column)
        for rule in suite.rules
        if rule.where is not None
    ]
    table = df.select("*", *flags).toArrow()
    for column in table.columns:
        if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
            return None
    return table.to_pandas()


def render_docs(runs: Sequence[StoredRun]) -> Path | None:
    """Render the pages of ``runs`` (and their suites) and the index of their Data Docs folder, in one pass per
    folder - what GX's UpdateDataDocsAction does for one run. Returns the index.html of the last folder."""
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    index: Path | None = None
    for docs in dict.fromkeys(run.docs_dir for run in runs):
        mine = [run for run in runs if run.docs_dir == docs]
        suites = [ExpectationSuiteIdentifier(name=name) for name in dict.fromkeys(run.suite_name for run in mine)]
        _context(docs).build_data_docs(
            site_names=[DOCS_SITE], resource_identifiers=[*(run.result_id for run in mine), *suites]
        )
        index = docs / "index.html" if (docs / "index.html").exists() else None
    return index


def _checkpoint_run(
    context: Any, definition: Any, df: DataFrame, suite: Suite, run_id: str, result_format: dict[str, Any]
) -> tuple[dict[str, RuleOutcome], Any]:
    """One checkpoint run of ``definition`` (every rule of ``suite``) with ``result_format``: the outcomes by rule
    name and the stored result's id."""
    gx = gx_module()
    from great_expectations.core.run_identifier import RunIdentifier

    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(name=suite.name, validation_definitions=[definition], result_format=result_format)
    )
    outcome = checkpoint.run(
        batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=run_id, run_time=datetime.now(UTC))
    )
    ((result_id, validation),) = outcome.run_results.items()
    outcomes: dict[str, RuleOutcome] = {}
    for item in validation.results:  # not in suite order: matched by the rule name GX carries in meta
        name = (item.expectation_config.meta or {}).get("rule")
        outcomes[name] = RuleOutcome(bool(item.success), dict(item.result or {}), _exception(item.exception_info))
    missing = [rule.name for rule in suite.rules if rule.name not in outcomes]
    for name in missing:  # defensive: a rule without a result is not a pass
        outcomes[name] = RuleOutcome(False, {}, "GX returned no result for this rule")
    return outcomes, result_id

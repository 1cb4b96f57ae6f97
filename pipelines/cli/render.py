"""What every command group shares: the two consoles, loading the profile, a batch SparkSession, the
date-range and gate options, and the quality-gate table that silver, gold, replay, run and quality all print."""

from __future__ import annotations

import argparse
import time
from datetime import date

from rich.console import Console
from rich.table import Table

from pipelines.config import Settings, load_settings

console = Console(stderr=False)
err_console = Console(stderr=True)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(profile=args.profile, path=args.config)


def _batch_spark(settings: Settings, job: str):
    from pipelines.platform.spark import build_spark

    return build_spark(settings, app_name=f"{settings.spark.app_name}-{job}")


def _say(message: str) -> None:
    err_console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", soft_wrap=True)  # whole lines: logs, greps


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _add_range_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_date", type=_day, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="to_date", type=_day, required=True, help="last day (inclusive), YYYY-MM-DD")
    parser.add_argument("--tenant", action="append", help="only this tenant (repeatable; default: all tenants)")


def _add_gate_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-gates", action="store_true", help="publish without running the quality gates (recorded as skipped)"
    )


def _print_gates(summaries: list, docs_index: str | None) -> None:
    table = Table(title="quality gates")
    for column in ("table", "outcome", "failed rules", "warned rules", "quarantined rows"):
        table.add_column(column)
    for gate in summaries:
        style = {"failed": "red", "warned": "yellow", "quarantined": "yellow", "skipped": "yellow"}.get(gate.outcome)
        outcome = f"[{style}]{gate.outcome}[/{style}]" if style else gate.outcome
        failed, warned = ", ".join(gate.failed_rules) or "-", ", ".join(gate.warned_rules) or "-"
        table.add_row(gate.table, outcome, failed, warned, str(gate.quarantined_rows))
    console.print(table)
    if docs_index:
        console.print(f"Data Docs: {docs_index}")

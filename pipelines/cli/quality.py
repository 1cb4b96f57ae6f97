"""``quality validate``: a table's quality suite run on its published rows, writing nothing but the results."""

from __future__ import annotations

import argparse
from datetime import timedelta

from pipelines.cli.render import _add_range_options, _batch_spark, _print_gates, _settings, console


def cmd_quality_validate(args: argparse.Namespace) -> int:
    """Run a table's suite on its published rows for a date range: nothing is written but the results."""
    from pipelines.platform.batch import partition_predicate, read_table
    from pipelines.platform.lake import Lake
    from pipelines.platform.registry import LAYERS
    from pipelines.quality.audit import JobGates

    settings = _settings(args)
    layer, _, name = args.table.partition(".")
    if layer not in LAYERS or not name:
        raise ValueError(f"--table must be <layer>.<name> with layer one of {', '.join(LAYERS)}, got {args.table!r}")
    spark = _batch_spark(settings, "quality")
    gates = JobGates(spark, settings, "quality")
    date_column = "date" if layer == "gold" else "event_date"
    days = [args.from_date + timedelta(days=n) for n in range((args.to_date - args.from_date).days + 1)]
    frame = read_table(
        spark, settings, Lake(settings).table(layer, name), partition_predicate(args.tenant, date_column, days)
    )
    result = gates.audit(args.table, frame, allow_quarantine=True)
    gates.record()
    if result is None:
        raise ValueError(f"no suite for {args.table}: expected {gates.expectations_dir / (args.table + '.yaml')}")
    with result:
        _print_gates(gates.summaries, str(gates.docs_index))
        for rule in result.rules:
            if not rule.success:
                console.print(f"  {rule.line(result.table)}", highlight=False)
    return 1 if result.failed else 0


def add_quality_command(commands: argparse._SubParsersAction) -> None:
    quality = commands.add_parser("quality", help="data-quality gates (Great Expectations suites in expectations/)")
    quality_commands = quality.add_subparsers(dest="action", required=True, metavar="ACTION")
    quality_validate = quality_commands.add_parser(
        "validate", help="run a table's suite on its published rows (exit 1 if a fail rule breaks)"
    )
    quality_validate.add_argument("--table", required=True, help="e.g. silver.events or gold.daily_active_users")
    _add_range_options(quality_validate)
    quality_validate.set_defaults(func=cmd_quality_validate)

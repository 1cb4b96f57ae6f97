"""``maintenance run``: retention, compaction and vacuum of every table (see pipelines.platform.maintenance)."""

from __future__ import annotations

import argparse

from rich.table import Table

from pipelines.cli.render import _batch_spark, _say, _settings, console


def cmd_maintenance_run(args: argparse.Namespace) -> int:
    from pipelines.platform.maintenance import run_maintenance

    settings = _settings(args)
    spark = _batch_spark(settings, "maintenance")
    actions = run_maintenance(spark, settings, progress=_say)
    table = Table("table", "action", "files removed", "files added", "rows deleted", "detail", title="maintenance")
    for action in actions:
        table.add_row(
            action.table,
            action.action,
            str(action.files_removed),
            str(action.files_added),
            str(action.rows_deleted),
            action.detail,
        )
    console.print(table)
    console.print("recorded in ops.maintenance_runs")
    return 0


def add_maintenance_command(commands: argparse._SubParsersAction) -> None:
    maintenance = commands.add_parser("maintenance", help="table maintenance: retention, compaction, vacuum")
    maintenance_commands = maintenance.add_subparsers(dest="action", required=True, metavar="ACTION")
    maintenance_commands.add_parser(
        "run", help="apply retention (maintenance.retention_days), compact bronze/ops, vacuum every table"
    ).set_defaults(func=cmd_maintenance_run)

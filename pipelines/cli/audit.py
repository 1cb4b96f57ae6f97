"""``audit``: who replayed, erased, skipped a gate or changed a schema, when, and the outcome (ops.audit_log)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from rich.table import Table

from pipelines.cli.render import _day, _settings, console


def cmd_audit(args: argparse.Namespace) -> int:
    from pipelines.ops.audit import entries

    since = datetime.combine(args.since, datetime.min.time(), UTC) if args.since else None
    found = entries(_settings(args), action=args.action, since=since)
    if args.json:
        print(json.dumps(found, default=str, indent=2))
        return 0
    table = Table("at (UTC)", "actor", "action", "target", "outcome", "command", title="audit log (ops.audit_log)")
    for entry in found:
        at = entry["at"].strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(at, entry["actor"], entry["action"], entry["target"], entry["outcome"], entry["command"])
    console.print(table)
    return 0


def add_audit_command(commands: argparse._SubParsersAction) -> None:
    from pipelines.ops.audit import ACTIONS

    audit = commands.add_parser("audit", help="the audit log: replays, erasures, skipped gates, schema changes")
    audit.add_argument("--action", choices=ACTIONS, help="only this kind of entry")
    audit.add_argument("--since", type=_day, help="entries from this day on (YYYY-MM-DD, UTC)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(func=cmd_audit)

"""``schemas``: the event schema registry, checked for compatibility and PII classification, and used to
validate a file of events."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli.render import _settings, console, err_console


def cmd_schemas_check(args: argparse.Namespace) -> int:
    from pipelines.contracts.compatibility import check_compatibility
    from pipelines.contracts.registry import SchemaRegistry
    from pipelines.silver.pii import load_pii_rules

    settings = _settings(args)
    registry = SchemaRegistry.load(settings.schemas_dir)
    issues = check_compatibility(registry)
    rules = load_pii_rules(settings.resolve_path(settings.silver.pii_rules))
    unclassified = rules.unclassified(registry)
    for event_type in registry.event_types:
        console.print(f"{event_type}: versions {registry.versions(event_type)}")
    for issue in issues:
        err_console.print(f"[red]INCOMPATIBLE[/red] {issue}", highlight=False)
    for field in unclassified:
        err_console.print(
            f"[red]UNCLASSIFIED[/red] {settings.schemas_dir}/{field}: no rule in {rules.source} "
            "(add keep, pseudonymize, strip_query or drop; silver drops it until then)",
            highlight=False,
        )
    if issues or unclassified:
        return 1
    console.print(
        f"[green]{len(registry.event_types)} event types, all versions backward compatible, "
        f"every field classified in {rules.source}[/green]"
    )
    return 0


def cmd_schemas_validate(args: argparse.Namespace) -> int:
    from pipelines.contracts.registry import SchemaRegistry

    registry = SchemaRegistry.load(_settings(args).schemas_dir)
    failures = 0
    for line_number, line in enumerate(Path(args.file).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        _, violations = registry.validate_json(line)
        for violation in violations:
            failures += 1
            console.print(f"{args.file}:{line_number}: {violation.path}: {violation.message}")
    return 1 if failures else 0


def add_schemas_command(commands: argparse._SubParsersAction) -> None:
    schemas = commands.add_parser("schemas", help="event schema registry")
    schemas_commands = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    schemas_commands.add_parser("check", help="check every schema version is backward compatible").set_defaults(
        func=cmd_schemas_check
    )
    validate = schemas_commands.add_parser("validate", help="validate a JSON-lines file of events")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_schemas_validate)

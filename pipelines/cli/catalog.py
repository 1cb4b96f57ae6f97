"""``catalog sync`` and ``catalog show``: table names in the metastore, and the generated table catalog."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from pipelines.cli.render import _batch_spark, _settings, console


def cmd_catalog_sync(args: argparse.Namespace) -> int:
    """Name every Delta table of the lake in the catalog (a fresh or moved metastore)."""
    from pipelines.platform.catalog import lake_tables, sync

    settings = _settings(args)
    changed = sync(_batch_spark(settings, "catalog"), settings)
    for layer, name, path in lake_tables(settings):
        mark = "registered" if f"{layer}.{name}" in changed else "up to date"
        console.print(f"{layer}.{name:<24} {mark:<11} {path}", highlight=False)
    return 0


def cmd_catalog_show(args: argparse.Namespace) -> int:
    from pipelines.ops.catalog import entries, write_pages

    settings = _settings(args)
    catalog = entries(settings)
    table = Table("table", "partitioned by", "retention", "PII", "upstream", "columns", title="table catalog")
    for e in catalog:
        upstream = ", ".join(e.spec.upstream) or "-"
        columns = str(len(e.columns)) if e.columns else e.schema_source
        partitioning = ", ".join(e.spec.partitioned_by) or "-"
        table.add_row(e.spec.full_name, partitioning, e.retention, e.spec.pii, upstream, columns)
    console.print(table)
    folder = Path(args.out) if args.out else Path(settings.home) / ".lakehouse" / "catalog"
    md, page = write_pages(catalog, folder)
    console.print(f"written: {md} and {page}")
    return 0


def add_catalog_command(commands: argparse._SubParsersAction) -> None:
    catalog = commands.add_parser("catalog", help="the tables: names in the metastore, the generated catalog page")
    catalog_commands = catalog.add_subparsers(dest="action", required=True, metavar="ACTION")
    catalog_commands.add_parser("sync", help="register every Delta table of the lake").set_defaults(
        func=cmd_catalog_sync
    )
    show = catalog_commands.add_parser(
        "show", help="every table: layer, schema, partitioning, owner, retention, PII, upstream, writer"
    )
    show.add_argument("--out", help="folder for catalog.md and catalog.html (default .lakehouse/catalog)")
    show.set_defaults(func=cmd_catalog_show)

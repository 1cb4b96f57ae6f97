"""``bronze``: streaming ingestion from Kafka into the bronze tables, their freshness, and file maintenance."""

from __future__ import annotations

import argparse

from pyspark.sql import SparkSession
from rich.table import Table

from pipelines.cli.render import _batch_spark, _settings, console, err_console
from pipelines.config import Settings
from pipelines.kafka.topics import resolve_bootstrap_servers

BronzeCounts = tuple[dict[tuple, int], dict[tuple, int]]


def _run_bronze_then_stop_spark(settings: Settings, bootstrap: str, once: bool) -> tuple[list, BronzeCounts]:
    """Run the bronze query in its own SparkSession; returns its progress reports and the bronze counts after
    it. Spark is stopped before the interpreter exits, so its listener thread and the JVM are drained first."""
    from pipelines.bronze import run_bronze
    from pipelines.platform.spark import build_spark

    spark = build_spark(settings, app_name=f"lakehouse-{settings.bronze.query_name}")
    try:
        progress = run_bronze(spark, settings, bootstrap, once=once).recentProgress
        return progress, _bronze_counts(spark, settings)
    finally:
        spark.stop()


def cmd_bronze_run(args: argparse.Namespace) -> int:
    """Stream all topics into bronze; --once catches up (AvailableNow) and stops."""
    settings = _settings(args)
    bootstrap = resolve_bootstrap_servers(settings, start=False)
    mode = "catch-up (availableNow)" if args.once else f"continuous ({settings.bronze.trigger_interval})"
    err_console.print(f"bronze: {mode} from {bootstrap} into {settings.lake_root}; Ctrl-C stops cleanly")
    progress, counts = _run_bronze_then_stop_spark(settings, bootstrap, once=args.once)
    rows = sum(p.numInputRows for p in progress)
    console.print(f"bronze: {len(progress)} micro-batch(es), {rows} message(s) this run")
    _print_bronze_counts(counts)
    return 0


def _bronze_counts(spark: SparkSession, settings: Settings) -> BronzeCounts:
    """Rows of bronze.events and bronze.quarantine per (tenant, event type)."""
    from pipelines.bronze import table_counts
    from pipelines.platform.lake import Lake

    lake = Lake(settings)
    columns = ["tenant_id", "event_type"]
    return (
        table_counts(spark, settings, lake.bronze_events, columns),
        table_counts(spark, settings, lake.bronze_quarantine, columns),
    )


def _print_bronze_counts(counts: BronzeCounts) -> None:
    events, quarantine = counts
    table = Table(title="bronze.events by tenant and type")
    for column in ("tenant_id", "event_type", "events"):
        table.add_column(column, justify="right" if column == "events" else "left")
    for (tenant, event_type), count in sorted(events.items()):
        table.add_row(tenant, event_type, str(count))
    table.add_row("[bold]total", "", f"[bold]{sum(events.values())}")
    console.print(table)
    table = Table(title="bronze.quarantine by tenant and type (best effort: null when unreadable)")
    for column in ("tenant_id", "event_type", "messages"):
        table.add_column(column, justify="right" if column == "messages" else "left")
    for (tenant, event_type), count in sorted(quarantine.items(), key=lambda item: tuple(map(str, item[0]))):
        table.add_row(str(tenant), str(event_type), str(count))
    table.add_row("[bold]total", "", f"[bold]{sum(quarantine.values())}")
    console.print(table)


def cmd_bronze_status(args: argparse.Namespace) -> int:
    from pipelines.bronze import freshness

    settings = _settings(args)
    rows = freshness(_batch_spark(settings, "bronze-status"), settings)
    if not rows:
        console.print("bronze: no batch committed yet")
        return 1
    table = Table(title="bronze freshness per Kafka partition")
    for column in ("topic", "partition", "committed offset", "lag", "max occurred_at", "max ingested_at"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["topic"],
            str(row["partition"]),
            str(row["committed_offset"]),
            str(row["lag"]),
            str(row["max_occurred_at"]),
            str(row["max_ingested_at"]),
        )
    console.print(table)
    return 0


def cmd_bronze_compact(args: argparse.Namespace) -> int:
    """Compact small files; safe while the stream appends (compaction only rewrites, never loses rows)."""
    from pipelines.platform.lake import Lake
    from pipelines.platform.tables import compact

    settings = _settings(args)
    lake = Lake(settings)
    spark = _batch_spark(settings, "bronze-compact")
    for path in (lake.bronze_events, lake.bronze_quarantine):
        metrics = compact(spark, path)
        console.print(
            f"{path}: {metrics.get('numFilesRemoved', 0)} file(s) compacted into {metrics.get('numFilesAdded', 0)}"
        )
    return 0


def cmd_bronze_vacuum(args: argparse.Namespace) -> int:
    """List (or, with --apply, delete) files no live version needs: removed by compaction past the table's
    retention, and never-committed leftovers of micro-batches that failed as a whole."""
    from pipelines.platform.lake import Lake
    from pipelines.platform.tables import vacuum

    settings = _settings(args)
    lake = Lake(settings)
    spark = _batch_spark(settings, "bronze-vacuum")
    retention = settings.bronze.vacuum_retention_hours
    for path in (lake.bronze_events, lake.bronze_quarantine):
        files = vacuum(spark, path, retention_hours=retention, dry_run=not args.apply, full=True)
        verb = "deleted" if args.apply else "would delete (dry run; --apply deletes)"
        console.print(f"{path}: {verb} {len(files)} file(s)")
        for name in sorted(files):
            console.print(f"  {name}", highlight=False)
    return 0


def add_bronze_command(commands: argparse._SubParsersAction) -> None:
    bronze = commands.add_parser("bronze", help="streaming ingestion from Kafka into bronze Delta tables")
    bronze_commands = bronze.add_subparsers(dest="action", required=True, metavar="ACTION")
    bronze_run = bronze_commands.add_parser("run", help="stream all topics into bronze.events / bronze.quarantine")
    bronze_run.add_argument("--once", action="store_true", help="catch up (Trigger.AvailableNow) and stop")
    bronze_run.set_defaults(func=cmd_bronze_run)
    bronze_commands.add_parser("status", help="freshness and lag per Kafka partition").set_defaults(
        func=cmd_bronze_status
    )
    bronze_commands.add_parser("compact", help="compact small files (safe while streaming)").set_defaults(
        func=cmd_bronze_compact
    )
    bronze_vacuum = bronze_commands.add_parser(
        "vacuum", help="list unreferenced files past retention, incl. uncommitted leftovers; --apply deletes"
    )
    bronze_vacuum.add_argument("--apply", action="store_true", help="delete them (default: dry run)")
    bronze_vacuum.set_defaults(func=cmd_bronze_vacuum)

"""``run``: the main job end to end (broker, topics, a published stream, bronze, silver, gold and a gold
summary), reusing the other command groups' steps."""

from __future__ import annotations

import argparse
import time
from datetime import date, timedelta

from rich.table import Table

from pipelines.cli.bronze import _bronze_counts, _print_bronze_counts
from pipelines.cli.builds import _print_gold, _print_silver
from pipelines.cli.generate import _add_generator_options, _print_counts, publish_generated
from pipelines.cli.render import _add_gate_option, _print_gates, _say, _settings, console, err_console
from pipelines.config import Settings
from pipelines.kafka.broker import EmbeddedBroker
from pipelines.kafka.topics import ensure_topics, resolve_bootstrap_servers


def cmd_run(args: argparse.Namespace) -> int:
    """The main job on the profile's resources: embedded broker (when the profile says so), topics, a published
    stream, bronze catch-up, then silver and gold for the generated days through their quality gates, and a
    short summary of gold."""
    settings = _settings(args)
    broker = EmbeddedBroker.from_settings(settings) if settings.kafka.is_embedded else None
    started_here = broker is not None and broker.running() is None
    bootstrap = resolve_bootstrap_servers(settings, start=True)
    console.print(f"profile={settings.profile} kafka={bootstrap} lake={settings.lake_root}")
    try:
        topics = ensure_topics(settings, bootstrap)
        console.print("topics: " + ", ".join(f"{t} ({n}p)" for t, n in topics.items()))
        _, truth, stats, elapsed = publish_generated(settings, bootstrap, args)
        _print_counts(stats, elapsed)
        console.print(
            f"generator truth: {truth.unique_valid_events} unique valid events, "
            f"{truth.duplicates} duplicates, {truth.malformed} malformed"
        )
        if not args.skip_bronze:
            _run_chain(settings, bootstrap, args)
    finally:
        if broker is not None and started_here and not args.keep_broker:
            broker.stop()
            console.print("embedded broker stopped (use --keep-broker to keep it running)")
    return 0


def _run_chain(settings: Settings, bootstrap: str, args: argparse.Namespace) -> None:
    """bronze catch-up -> silver build + gates -> gold build + gates -> summary, in one SparkSession."""
    from pipelines import gold, silver
    from pipelines.bronze import run_bronze
    from pipelines.platform.spark import build_spark

    spark = build_spark(settings, app_name=f"{settings.spark.app_name}-run")
    try:
        err_console.print("bronze: catching up (Trigger.AvailableNow) ...")
        started = time.monotonic()
        progress = run_bronze(spark, settings, bootstrap, once=True).recentProgress
        ingested = sum(p.numInputRows for p in progress)
        console.print(f"bronze: {ingested} messages in {len(progress)} batch(es), {time.monotonic() - started:.1f}s")
        _print_bronze_counts(_bronze_counts(spark, settings))
        if args.bronze_only:
            return
        first = date.fromisoformat(args.start_date)
        last = first + timedelta(days=args.days - 1)
        built = silver.build(spark, settings, first, last, skip_gates=args.skip_gates, progress=_say)
        _print_silver(built)
        _print_gates(built.gates, None)
        published = gold.build(spark, settings, first, last, skip_gates=args.skip_gates, progress=_say)
        _print_gold(published)
        _print_gates(published.gates, None)
        _print_gold_summary(gold.summary(spark, settings, first, last))
        console.print(f"tables: {settings.lake_root} (bronze/, silver/, gold/, ops/; bronze.*, silver.* ... by name)")
        if not args.skip_gates:
            console.print(f"Data Docs: {built.docs_index}")
        console.print(f"notebooks: {settings.resolve_path('notebooks')}")
    finally:
        spark.stop()


def _print_gold_summary(summary) -> None:
    table = Table(title="gold summary: daily active users and revenue per tenant and day")
    for column in ("tenant", "date", "DAU", "orders", "revenue"):
        table.add_column(column, justify="left" if column in ("tenant", "date") else "right")
    for tenant, day in sorted(summary.dau.keys() | summary.revenue.keys()):
        revenue = summary.revenue.get((tenant, day), {})
        money = ", ".join(f"{amount:.2f} {currency}" for currency, amount in sorted(revenue.items())) or "-"
        table.add_row(
            tenant, str(day), str(summary.dau.get((tenant, day), 0)), str(summary.orders.get((tenant, day), 0)), money
        )
    console.print(table)
    funnels = Table(title="funnel conversion (users reaching the last step / users starting), whole range")
    for column in ("tenant", "funnel", "conversion"):
        funnels.add_column(column)
    for (tenant, name), rate in sorted(summary.funnel_conversion.items()):
        funnels.add_row(tenant, name, f"{rate:.1%}")
    console.print(funnels)


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="the main job: broker, topics, generate and publish a stream")
    _add_generator_options(run)
    run.add_argument("--keep-broker", action="store_true", help="leave the embedded broker running afterwards")
    run.add_argument("--skip-bronze", action="store_true", help="only publish; do not run bronze ingestion")
    run.add_argument("--bronze-only", action="store_true", help="stop after bronze (no silver and gold builds)")
    _add_gate_option(run)
    run.set_defaults(func=cmd_run)

"""``python -m pipelines``: one command line in front of every job.

Each sub-command loads the profile first, so a bad configuration fails before any work starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from pyspark.errors import PySparkException
from pyspark.sql import SparkSession
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipelines.config import ConfigError, Settings, load_settings
from pipelines.kafka.broker import BrokerError, EmbeddedBroker, ensure_topics, resolve_bootstrap_servers
from pipelines.platform.jars import JarsError
from pipelines.platform.metastore import MetastoreError
from pipelines.quality.gate import GateFailed

console = Console(stderr=False)
err_console = Console(stderr=True)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(profile=args.profile, path=args.config)


# --- broker -------------------------------------------------------------------------------------


def cmd_broker_start(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.kafka.is_embedded:
        console.print(
            f"profile {settings.profile!r} uses external Kafka at {settings.kafka.bootstrap_servers}; nothing to start"
        )
        return 0
    handle = EmbeddedBroker.from_settings(settings).start()
    ensure_topics(settings, handle.bootstrap_servers)
    console.print(
        f"embedded broker running: pid={handle.pid} bootstrap={handle.bootstrap_servers} storage={handle.storage}"
    )
    return 0


def cmd_broker_stop(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stopped = EmbeddedBroker.from_settings(settings).stop()
    console.print("embedded broker stopped" if stopped else "no embedded broker was running")
    return 0


def cmd_broker_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.kafka.is_embedded:
        console.print(f"external Kafka: {settings.kafka.bootstrap_servers}")
        return 0
    handle = EmbeddedBroker.from_settings(settings).running()
    if handle is None:
        console.print("embedded broker: not running")
        return 1
    console.print(f"embedded broker: pid={handle.pid} bootstrap={handle.bootstrap_servers} storage={handle.storage}")
    return 0


# --- metastore and catalog -----------------------------------------------------------------------


def cmd_metastore_start(args: argparse.Namespace) -> int:
    from pipelines.platform.metastore import EmbeddedMetastore

    settings = _settings(args)
    if settings.catalog.metastore != "embedded":
        console.print(
            f"profile {settings.profile!r} uses catalog.metastore={settings.catalog.metastore}; nothing to start"
        )
        return 0
    handle = EmbeddedMetastore.from_settings(settings).start()
    console.print(f"metastore database running: pid={handle.pid} url={handle.jdbc_url} home={handle.home}")
    return 0


def cmd_metastore_stop(args: argparse.Namespace) -> int:
    from pipelines.platform.metastore import EmbeddedMetastore

    stopped = EmbeddedMetastore.from_settings(_settings(args)).stop()
    console.print("metastore database stopped" if stopped else "no metastore database was running")
    return 0


def cmd_metastore_status(args: argparse.Namespace) -> int:
    from pipelines.platform.metastore import EmbeddedMetastore

    settings = _settings(args)
    if settings.catalog.metastore != "embedded":
        console.print(f"catalog.metastore: {settings.catalog.metastore}")
        return 0
    handle = EmbeddedMetastore.from_settings(settings).running()
    if handle is None:
        console.print("metastore database: not running (Spark sessions start one on demand)")
        return 1
    console.print(f"metastore database: pid={handle.pid} url={handle.jdbc_url} home={handle.home}")
    return 0


def cmd_catalog_sync(args: argparse.Namespace) -> int:
    """Name every Delta table of the lake in the catalog (a fresh or moved metastore)."""
    from pipelines.platform.catalog import lake_tables, sync

    settings = _settings(args)
    changed = sync(_batch_spark(settings, "catalog"), settings)
    for layer, name, path in lake_tables(settings):
        mark = "registered" if f"{layer}.{name}" in changed else "up to date"
        console.print(f"{layer}.{name:<24} {mark:<11} {path}", highlight=False)
    return 0


# --- topics -------------------------------------------------------------------------------------


def cmd_topics_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    bootstrap = resolve_bootstrap_servers(settings, start=False)
    for topic, partitions in ensure_topics(settings, bootstrap).items():
        console.print(f"{topic}: {partitions} partition(s)")
    return 0


# --- schemas ------------------------------------------------------------------------------------


def cmd_schemas_check(args: argparse.Namespace) -> int:
    from pipelines.contracts.schemas import SchemaRegistry, check_compatibility
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
    from pipelines.contracts.schemas import SchemaRegistry

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


# --- generate / publish -------------------------------------------------------------------------


def _spec_from_args(args: argparse.Namespace):
    from pipelines.synthetic.generator import GeneratorSpec

    return GeneratorSpec(
        seed=args.seed,
        tenants=args.tenants,
        users_per_tenant=args.users,
        days=args.days,
        start_date=date.fromisoformat(args.start_date),
        duplicate_rate=args.duplicate_rate,
        late_rate=args.late_rate,
        out_of_order_rate=args.out_of_order_rate,
        malformed_rate=args.malformed_rate,
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def publish_generated(settings: Settings, bootstrap: str, args: argparse.Namespace):
    """Generate the stream and publish it as-is (malformed messages included: they simulate
    misbehaving producers, so they bypass the library's validation on purpose)."""
    from pipelines.kafka.producer import EventProducer
    from pipelines.synthetic.generator import generate

    messages, truth = generate(_spec_from_args(args), settings.kafka.topic_for_event_type)
    started = time.monotonic()
    with EventProducer(settings, bootstrap) as producer, _progress() as progress:
        task = progress.add_task("publishing", total=len(messages))
        for index, message in enumerate(messages, start=1):
            producer.send(message.topic, message.value, message.key, message.headers)
            if args.rate:
                # Rate limit for streaming demos: never get ahead of index / rate seconds.
                ahead = index / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if index % 2000 == 0 or index == len(messages):
                progress.update(task, completed=index)
        stats = producer.flush()
    elapsed = time.monotonic() - started
    if args.truth:
        truth.write_truth(args.truth)
    return messages, truth, stats, elapsed


def _print_counts(stats, elapsed: float) -> None:
    table = Table(title="Published (acknowledged by the broker)")
    table.add_column("topic")
    table.add_column("messages", justify="right")
    for topic, count in sorted(stats.delivered.items()):
        table.add_row(topic, str(count))
    table.add_row("[bold]total", f"[bold]{stats.total_delivered}")
    console.print(table)
    rate = stats.total_delivered / elapsed if elapsed else 0.0
    console.print(f"{stats.total_delivered} messages in {elapsed:.1f}s ({rate:,.0f} msg/s)")


def cmd_generate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.out:
        from pipelines.synthetic.generator import generate

        messages, truth = generate(_spec_from_args(args), settings.kafka.topic_for_event_type)
        with open(args.out, "wb") as out:
            for message in messages:
                out.write(message.value.replace(b"\n", b" ") + b"\n")
        if args.truth:
            truth.write_truth(args.truth)
        console.print(f"wrote {len(messages)} messages to {args.out}")
        return 0
    bootstrap = resolve_bootstrap_servers(settings, start=False)
    ensure_topics(settings, bootstrap)
    _, _, stats, elapsed = publish_generated(settings, bootstrap, args)
    _print_counts(stats, elapsed)
    return 0


# --- run: the main job --------------------------------------------------------------------------


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


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    console.print_json(json.dumps(settings.model_dump(mode="json")))
    return 0


# --- bronze -------------------------------------------------------------------------------------


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


BronzeCounts = tuple[dict[tuple, int], dict[tuple, int]]


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


# --- silver / gold / replay / dimensions ---------------------------------------------------------


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _batch_spark(settings: Settings, job: str):
    from pipelines.platform.spark import build_spark

    return build_spark(settings, app_name=f"{settings.spark.app_name}-{job}")


def _say(message: str) -> None:
    err_console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def _print_silver(result) -> None:
    table = Table(title=f"silver.events {result.first}..{result.last}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("tenants", ", ".join(result.tenants) if result.tenants else "all"),
        ("days rewritten", ", ".join(str(d) for d in result.days)),
        ("late days added", ", ".join(str(d) for d in result.late_days) or "none"),
        ("days re-stitched (new signups)", ", ".join(str(d) for d in result.restitched_days) or "none"),
        ("bronze rows read", result.bronze_rows),
        ("events written", result.events),
        ("duplicates dropped", result.duplicates_dropped),
        ("identified events", result.identified_events),
        ("stitched events (anonymous -> user)", result.stitched_events),
        ("events in derived sessions", result.derived_session_events),
        ("identified events without users-dimension row", result.unmatched_user_events),
        ("events without device", result.unknown_device_events),
        ("unclassified property values dropped (conf/pii.yaml)", result.unclassified_values_dropped),
        ("new user agents parsed", result.new_user_agents),
        ("users dimension rows", result.users_dimension_rows),
        ("users-file tenants without events", ", ".join(result.tenants_without_events) or "none"),
        ("seconds", result.seconds),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


def _print_gold(result) -> None:
    table = Table(title=f"gold {result.days[0]}..{result.days[-1]} (requested {result.first}..{result.last})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in result.rows.items():
        table.add_row(f"gold.{name}", str(rows))
    console.print(table)
    console.print(f"tenants: {', '.join(result.tenants) if result.tenants else 'all'}; {result.seconds}s")


def cmd_silver_build(args: argparse.Namespace) -> int:
    from pipelines import silver

    settings = _settings(args)
    spark = _batch_spark(settings, "silver")
    result = silver.build(
        spark, settings, args.from_date, args.to_date, args.tenant, skip_gates=args.skip_gates, progress=_say
    )
    _print_silver(result)
    _print_gates(result.gates, result.docs_index)
    return 0


def cmd_gold_build(args: argparse.Namespace) -> int:
    from pipelines import gold

    settings = _settings(args)
    spark = _batch_spark(settings, "gold")
    result = gold.build(
        spark, settings, args.from_date, args.to_date, args.tenant, skip_gates=args.skip_gates, progress=_say
    )
    _print_gold(result)
    _print_gates(result.gates, result.docs_index)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pipelines.replay import parse_layers, replay

    layers = parse_layers(args.layers)
    settings = _settings(args)
    spark = _batch_spark(settings, "replay")
    result = replay(
        spark, settings, args.from_date, args.to_date, args.tenant, layers, progress=_say, skip_gates=args.skip_gates
    )
    if result.silver is not None:
        _print_silver(result.silver)
        _print_gates(result.silver.gates, result.silver.docs_index)
    if result.gold is not None:
        _print_gold(result.gold)
        _print_gates(result.gold.gates, result.gold.docs_index)
    return 0


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


def cmd_quality_validate(args: argparse.Namespace) -> int:
    """Run a table's suite on its published rows for a date range: nothing is written but the results."""
    from pipelines.platform.batch import partition_predicate, read_table
    from pipelines.platform.lake import LAYERS, Lake
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
    if result is None:
        raise ValueError(f"no suite for {args.table}: expected {gates.expectations_dir / (args.table + '.yaml')}")
    with result:
        _print_gates(gates.summaries, str(gates.docs_index))
        for rule in result.rules:
            if not rule.success:
                console.print(f"  {rule.line(result.table)}", highlight=False)
    return 1 if result.failed else 0


def cmd_dimensions_load(args: argparse.Namespace) -> int:
    from pipelines.silver.dimensions import load_users, users_path
    from pipelines.silver.pii import hmac_key

    settings = _settings(args)
    key = hmac_key(settings)
    loaded = load_users(_batch_spark(settings, "dimensions"), settings, key, args.tenant)
    console.print(
        f"{users_path(settings)}: {loaded.rows} users ({loaded.from_file} from the file, {loaded.from_signups} "
        f"from signup events) for tenants {', '.join(loaded.tenants) or 'none'}"
    )
    _say_tenants_without_events(loaded.tenants_without_events)
    return 0


def _say_tenants_without_events(tenants: list[str]) -> None:
    if tenants:
        err_console.print(
            f"[yellow]note:[/yellow] the users file names tenant(s) bronze.events has no rows of: {', '.join(tenants)} "
            "(a typo in conf/dimensions/users.csv, or tenants that have not sent events yet)",
            highlight=False,
        )


def cmd_dimensions_sample_users(args: argparse.Namespace) -> int:
    from pipelines.silver.dimensions import sample_users, write_users_file
    from pipelines.synthetic.generator import generate

    settings = _settings(args)
    messages, _ = generate(_spec_from_args(args), settings.kafka.topic_for_event_type)
    count = write_users_file(sample_users(messages), Path(args.out))
    console.print(f"wrote {count} users to {args.out}")
    return 0


def _add_range_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_date", type=_day, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="to_date", type=_day, required=True, help="last day (inclusive), YYYY-MM-DD")
    parser.add_argument("--tenant", action="append", help="only this tenant (repeatable; default: all tenants)")


def _add_gate_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-gates", action="store_true", help="publish without running the quality gates (recorded as skipped)"
    )


# --- parser -------------------------------------------------------------------------------------


def _add_generator_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("generator")
    g.add_argument("--seed", type=int, default=42, help="random seed; the same seed gives the same stream (default 42)")
    g.add_argument("--tenants", type=int, default=3, help="number of tenants (default 3)")
    g.add_argument("--users", type=int, default=1000, help="users per tenant (default 1000)")
    g.add_argument("--days", type=int, default=3, help="days of activity (default 3)")
    g.add_argument("--start-date", default="2026-11-01", help="first day, YYYY-MM-DD (default 2026-11-01)")
    g.add_argument("--duplicate-rate", type=float, default=0.02, help="share of exact re-sends (default 0.02)")
    g.add_argument(
        "--late-rate", type=float, default=0.02, help="share of events arriving hours-days late (default 0.02)"
    )
    g.add_argument(
        "--out-of-order-rate", type=float, default=0.05, help="share of locally shuffled events (default 0.05)"
    )
    g.add_argument("--malformed-rate", type=float, default=0.01, help="share of malformed messages (default 0.01)")
    g.add_argument("--rate", type=float, default=0, help="publish at most this many messages per second (0 = no limit)")
    g.add_argument("--truth", help="write the generator's expected truth (JSON) to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Lakehouse for event analytics: Kafka -> bronze/silver/gold Delta tables.",
    )
    parser.add_argument(
        "--profile", help="configuration profile (default: LAKEHOUSE_PROFILE or the file's default_profile)"
    )
    parser.add_argument("--config", help="configuration file (default: LAKEHOUSE_CONFIG or conf/lakehouse.yaml)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the main job: broker, topics, generate and publish a stream")
    _add_generator_options(run)
    run.add_argument("--keep-broker", action="store_true", help="leave the embedded broker running afterwards")
    run.add_argument("--skip-bronze", action="store_true", help="only publish; do not run bronze ingestion")
    run.add_argument("--bronze-only", action="store_true", help="stop after bronze (no silver and gold builds)")
    _add_gate_option(run)
    run.set_defaults(func=cmd_run)

    broker = commands.add_parser("broker", help="start/stop/status of the embedded broker")
    broker_commands = broker.add_subparsers(dest="action", required=True, metavar="ACTION")
    broker_commands.add_parser("start", help="start Apache Kafka on 127.0.0.1 and create topics").set_defaults(
        func=cmd_broker_start
    )
    broker_commands.add_parser("stop", help="stop exactly the recorded broker process").set_defaults(
        func=cmd_broker_stop
    )
    broker_commands.add_parser("status", help="show the recorded broker (exit 1 if none)").set_defaults(
        func=cmd_broker_status
    )

    metastore = commands.add_parser("metastore", help="start/stop/status of the local catalog's database (Derby)")
    metastore_commands = metastore.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, handler, text in (
        ("start", cmd_metastore_start, "start it on 127.0.0.1 (share one between the stream, jobs and notebooks)"),
        ("stop", cmd_metastore_stop, "stop exactly the recorded process"),
        ("status", cmd_metastore_status, "show the recorded process (exit 1 if none)"),
    ):
        metastore_commands.add_parser(action, help=text).set_defaults(func=handler)

    catalog = commands.add_parser("catalog", help="table names in the metastore (bronze.*, silver.*, gold.*, ops.*)")
    catalog_commands = catalog.add_subparsers(dest="action", required=True, metavar="ACTION")
    catalog_commands.add_parser("sync", help="register every Delta table of the lake").set_defaults(
        func=cmd_catalog_sync
    )

    topics = commands.add_parser("topics", help="Kafka topics from the configuration")
    topics_commands = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    topics_commands.add_parser("create", help="create missing topics and show partition counts").set_defaults(
        func=cmd_topics_create
    )

    generate = commands.add_parser("generate", help="generate a synthetic event stream and publish it (or write it)")
    _add_generator_options(generate)
    generate.add_argument("--out", help="write JSON lines to this file instead of publishing")
    generate.set_defaults(func=cmd_generate)

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

    schemas = commands.add_parser("schemas", help="event schema registry")
    schemas_commands = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    schemas_commands.add_parser("check", help="check every schema version is backward compatible").set_defaults(
        func=cmd_schemas_check
    )
    validate = schemas_commands.add_parser("validate", help="validate a JSON-lines file of events")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_schemas_validate)

    silver = commands.add_parser("silver", help="silver.events from bronze (dedup, upcast, PII, stitching, sessions)")
    silver_commands = silver.add_subparsers(dest="action", required=True, metavar="ACTION")
    silver_build = silver_commands.add_parser(
        "build", help="rebuild silver.events for a date range (plus days changed by late events)"
    )
    _add_range_options(silver_build)
    _add_gate_option(silver_build)
    silver_build.set_defaults(func=cmd_silver_build)

    gold = commands.add_parser("gold", help="gold tables from silver (DAU/WAU/MAU, counts, sessions, funnels, ...)")
    gold_commands = gold.add_subparsers(dest="action", required=True, metavar="ACTION")
    gold_build = gold_commands.add_parser(
        "build", help="rewrite the gold tables for a date range and the late-data lookback before it"
    )
    _add_range_options(gold_build)
    _add_gate_option(gold_build)
    gold_build.set_defaults(func=cmd_gold_build)

    quality = commands.add_parser("quality", help="data-quality gates (Great Expectations suites in expectations/)")
    quality_commands = quality.add_subparsers(dest="action", required=True, metavar="ACTION")
    quality_validate = quality_commands.add_parser(
        "validate", help="run a table's suite on its published rows (exit 1 if a fail rule breaks)"
    )
    quality_validate.add_argument("--table", required=True, help="e.g. silver.events or gold.daily_active_users")
    _add_range_options(quality_validate)
    quality_validate.set_defaults(func=cmd_quality_validate)

    replay = commands.add_parser("replay", help="rebuild silver then gold for exactly a date range, from bronze")
    _add_range_options(replay)
    replay.add_argument("--layers", default="silver,gold", help="layers to rebuild (default silver,gold)")
    _add_gate_option(replay)
    replay.set_defaults(func=cmd_replay)

    dimensions = commands.add_parser("dimensions", help="dimension tables silver enriches events with")
    dimensions_commands = dimensions.add_subparsers(dest="action", required=True, metavar="ACTION")
    dimensions_load = dimensions_commands.add_parser(
        "load", help="rebuild silver.dim_users from conf/dimensions/users.csv and bronze signup events"
    )
    dimensions_load.add_argument("--tenant", action="append", help="only this tenant (repeatable; default: all)")
    dimensions_load.set_defaults(func=cmd_dimensions_load)
    sample = dimensions_commands.add_parser(
        "sample-users", help="write a CRM-style users.csv for the pre-existing users of a generated stream"
    )
    _add_generator_options(sample)
    sample.add_argument("--out", default="conf/dimensions/users.csv", help="output CSV (default: the shipped file)")
    sample.set_defaults(func=cmd_dimensions_sample_users)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    config_commands.add_parser("show", help="print the resolved profile").set_defaults(func=cmd_config_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    session_before = SparkSession.getActiveSession()
    try:
        return args.func(args)
    except (ConfigError, BrokerError, JarsError, MetastoreError, ValueError) as exc:
        if args.debug:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except GateFailed as exc:
        if args.debug:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        err_console.print("nothing was published; the rules' results are in ops.quality_results and the Data Docs")
        return 1
    except PySparkException as exc:
        if args.debug:
            raise
        # An expected Spark failure (missing table, bad SQL, a failed query) in one or two lines, no JVM stack.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err_console.print(
            f"[red]error:[/red] Spark: {first[:500]} (--debug shows the traceback)", highlight=False, soft_wrap=True
        )
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    finally:
        # Stop the SparkSession the command started while the interpreter is whole: the JVM gateway and Spark's
        # threads end before Python's shutdown tears down modules. A caller's own session is left alone.
        session = SparkSession.getActiveSession()
        if session is not None and session is not session_before:
            session.stop()


if __name__ == "__main__":
    sys.exit(main())

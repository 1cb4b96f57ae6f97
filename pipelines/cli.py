"""``python -m pipelines``: one command line in front of every job.

Each sub-command loads the profile first, so a bad configuration fails before any work starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipelines.broker import BrokerError, EmbeddedBroker, ensure_topics, resolve_bootstrap_servers
from pipelines.config import ConfigError, Settings, load_settings

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


# --- topics -------------------------------------------------------------------------------------


def cmd_topics_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    bootstrap = resolve_bootstrap_servers(settings, start=False)
    for topic, partitions in ensure_topics(settings, bootstrap).items():
        console.print(f"{topic}: {partitions} partition(s)")
    return 0


# --- schemas ------------------------------------------------------------------------------------


def cmd_schemas_check(args: argparse.Namespace) -> int:
    from pipelines.schemas import SchemaRegistry, check_compatibility

    settings = _settings(args)
    registry = SchemaRegistry.load(settings.schemas_dir)
    issues = check_compatibility(registry)
    for event_type in registry.event_types:
        console.print(f"{event_type}: versions {registry.versions(event_type)}")
    if issues:
        for issue in issues:
            err_console.print(f"[red]INCOMPATIBLE[/red] {issue}")
        return 1
    console.print(f"[green]{len(registry.event_types)} event types, all versions backward compatible[/green]")
    return 0


def cmd_schemas_validate(args: argparse.Namespace) -> int:
    from pipelines.schemas import SchemaRegistry

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
    from pipelines.generator import GeneratorSpec

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
    from pipelines.generator import generate
    from pipelines.producer import EventProducer

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
        from pipelines.generator import generate

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
    """Start the embedded broker (when the profile says so), create topics, publish a stream."""
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
    finally:
        if broker is not None and started_here and not args.keep_broker:
            broker.stop()
            console.print("embedded broker stopped (use --keep-broker to keep it running)")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    console.print_json(json.dumps(settings.model_dump(mode="json")))
    return 0


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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the main job: broker, topics, generate and publish a stream")
    _add_generator_options(run)
    run.add_argument("--keep-broker", action="store_true", help="leave the embedded broker running afterwards")
    run.set_defaults(func=cmd_run)

    broker = commands.add_parser("broker", help="start/stop/status of the embedded broker")
    broker_commands = broker.add_subparsers(dest="action", required=True, metavar="ACTION")
    broker_commands.add_parser("start", help="start Tansu on 127.0.0.1 and create topics").set_defaults(
        func=cmd_broker_start
    )
    broker_commands.add_parser("stop", help="stop exactly the recorded broker process").set_defaults(
        func=cmd_broker_stop
    )
    broker_commands.add_parser("status", help="show the recorded broker (exit 1 if none)").set_defaults(
        func=cmd_broker_status
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

    schemas = commands.add_parser("schemas", help="event schema registry")
    schemas_commands = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    schemas_commands.add_parser("check", help="check every schema version is backward compatible").set_defaults(
        func=cmd_schemas_check
    )
    validate = schemas_commands.add_parser("validate", help="validate a JSON-lines file of events")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_schemas_validate)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    config_commands.add_parser("show", help="print the resolved profile").set_defaults(func=cmd_config_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, BrokerError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

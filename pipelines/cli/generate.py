"""``generate``: the synthetic event stream, published to Kafka or written to a file. ``run`` and
``dimensions sample-users`` reuse its generator options and publishing."""

from __future__ import annotations

import argparse
import time
from datetime import date

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipelines.cli.render import _settings, console, err_console
from pipelines.config import Settings
from pipelines.kafka.topics import ensure_topics, resolve_bootstrap_servers


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


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser("generate", help="generate a synthetic event stream and publish it (or write it)")
    _add_generator_options(generate)
    generate.add_argument("--out", help="write JSON lines to this file instead of publishing")
    generate.set_defaults(func=cmd_generate)

"""``silver build``, ``gold build`` and ``replay``: the batch builds for a date range, and their result tables
(``run`` prints the same ones)."""

from __future__ import annotations

import argparse

from rich.table import Table

from pipelines.cli.render import (
    _add_gate_option,
    _add_range_options,
    _batch_spark,
    _print_gates,
    _say,
    _settings,
    console,
)


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


def add_silver_command(commands: argparse._SubParsersAction) -> None:
    silver = commands.add_parser("silver", help="silver.events from bronze (dedup, upcast, PII, stitching, sessions)")
    silver_commands = silver.add_subparsers(dest="action", required=True, metavar="ACTION")
    silver_build = silver_commands.add_parser(
        "build", help="rebuild silver.events for a date range (plus days changed by late events)"
    )
    _add_range_options(silver_build)
    _add_gate_option(silver_build)
    silver_build.set_defaults(func=cmd_silver_build)


def add_gold_command(commands: argparse._SubParsersAction) -> None:
    gold = commands.add_parser("gold", help="gold tables from silver (DAU/WAU/MAU, counts, sessions, funnels, ...)")
    gold_commands = gold.add_subparsers(dest="action", required=True, metavar="ACTION")
    gold_build = gold_commands.add_parser(
        "build", help="rewrite the gold tables for a date range and the late-data lookback before it"
    )
    _add_range_options(gold_build)
    _add_gate_option(gold_build)
    gold_build.set_defaults(func=cmd_gold_build)


def add_replay_command(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser("replay", help="rebuild silver then gold for exactly a date range, from bronze")
    _add_range_options(replay)
    replay.add_argument("--layers", default="silver,gold", help="layers to rebuild (default silver,gold)")
    _add_gate_option(replay)
    replay.set_defaults(func=cmd_replay)

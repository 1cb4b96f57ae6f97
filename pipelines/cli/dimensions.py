"""``dimensions``: the users dimension silver enriches events with, and a sample users file to seed it."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli.generate import _add_generator_options, _spec_from_args
from pipelines.cli.render import _batch_spark, _settings, console, err_console


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
    from pipelines.synthetic.generator import generate
    from pipelines.synthetic.users import sample_users, write_users_file

    settings = _settings(args)
    messages, _ = generate(_spec_from_args(args), settings.kafka.topic_for_event_type)
    count = write_users_file(sample_users(messages), Path(args.out))
    console.print(f"wrote {count} users to {args.out}")
    return 0


def add_dimensions_command(commands: argparse._SubParsersAction) -> None:
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

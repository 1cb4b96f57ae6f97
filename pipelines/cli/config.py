"""``config show``: the resolved profile, as the jobs see it."""

from __future__ import annotations

import argparse
import json

from pipelines.cli.render import _settings, console


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    console.print_json(json.dumps(settings.model_dump(mode="json")))
    return 0


def add_config_command(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    config_commands.add_parser("show", help="print the resolved profile").set_defaults(func=cmd_config_show)

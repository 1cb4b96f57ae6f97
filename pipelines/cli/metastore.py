"""``metastore``: the local catalog's database (Derby network server) - start, stop, status."""

from __future__ import annotations

import argparse

from pipelines.cli.render import _settings, console


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


def add_metastore_command(commands: argparse._SubParsersAction) -> None:
    metastore = commands.add_parser("metastore", help="start/stop/status of the local catalog's database (Derby)")
    metastore_commands = metastore.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, handler, text in (
        ("start", cmd_metastore_start, "start it on 127.0.0.1 (share one between the stream, jobs and notebooks)"),
        ("stop", cmd_metastore_stop, "stop exactly the recorded process"),
        ("status", cmd_metastore_status, "show the recorded process (exit 1 if none)"),
    ):
        metastore_commands.add_parser(action, help=text).set_defaults(func=handler)

"""``broker`` and ``topics``: the embedded Kafka broker's lifecycle and the topics the configuration names."""

from __future__ import annotations

import argparse

from pipelines.cli.render import _settings, console
from pipelines.kafka.broker import EmbeddedBroker
from pipelines.kafka.topics import ensure_topics, resolve_bootstrap_servers


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


def cmd_topics_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    bootstrap = resolve_bootstrap_servers(settings, start=False)
    for topic, partitions in ensure_topics(settings, bootstrap).items():
        console.print(f"{topic}: {partitions} partition(s)")
    return 0


def add_broker_command(commands: argparse._SubParsersAction) -> None:
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


def add_topics_command(commands: argparse._SubParsersAction) -> None:
    topics = commands.add_parser("topics", help="Kafka topics from the configuration")
    topics_commands = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    topics_commands.add_parser("create", help="create missing topics and show partition counts").set_defaults(
        func=cmd_topics_create
    )

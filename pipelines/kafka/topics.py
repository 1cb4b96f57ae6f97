"""Topics and addresses for any Kafka, embedded or a cluster: which servers to talk to, and creating topics.

``resolve_bootstrap_servers`` returns an external cluster's servers as configured, or the embedded broker's
address (``pipelines.kafka.broker``), starting it when asked. ``ensure_topics`` creates the configured topics
and the dead-letter topic through the AdminClient, on whichever Kafka that address points to.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.config import Settings
from pipelines.kafka.broker import BrokerError, EmbeddedBroker


def resolve_bootstrap_servers(settings: Settings, start: bool = True) -> str:
    """The servers to talk to: external ones as configured, or the embedded broker's address."""
    if not settings.kafka.is_embedded:
        return settings.kafka.bootstrap_servers
    broker = EmbeddedBroker.from_settings(settings)
    handle = broker.running()
    if handle is None:
        if not start:
            raise BrokerError(
                f"the profile uses the embedded broker but none is running (state: {broker.state_file}); "
                "start it with `python -m pipelines broker start`"
            )
        handle = broker.start()
    return handle.bootstrap_servers


def ensure_topics(settings: Settings, bootstrap_servers: str, timeout_s: float = 30.0) -> dict[str, int]:
    """Create every configured topic (and the dead-letter topic) that does not exist yet.

    Returns topic -> partition count as the broker reports it. An existing topic with fewer
    partitions than configured is reported as an error, not silently used.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **settings.kafka.client_settings()})
    wanted = {name: spec.partitions for name, spec in settings.kafka.topics.items()}
    wanted[settings.kafka.dead_letter_topic] = 1
    existing = admin.list_topics(timeout=timeout_s).topics
    to_create = [
        NewTopic(name, num_partitions=count, replication_factor=settings.kafka.replication_factor)
        for name, count in wanted.items()
        if name not in existing
    ]
    if to_create:
        for name, future in admin.create_topics(to_create, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"could not create topic {name!r}: {exc}") from None
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s).topics
        actual = {name: len(metadata[name].partitions) for name in wanted if name in metadata}
        if len(actual) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = sorted(set(wanted) - set(actual))
    if missing:
        raise BrokerError(f"topics still missing after creation: {missing}")
    short = {name: (actual[name], count) for name, count in wanted.items() if actual[name] < count}
    if short:
        raise BrokerError(f"topics exist with fewer partitions than configured (actual, configured): {short}")
    return actual

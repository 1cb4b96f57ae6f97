"""One set of Kafka client settings for two clients: librdkafka (the producer, admin and tools, through
confluent-kafka) and the Java client inside Spark's Kafka source.

The profile speaks librdkafka (``kafka.security``, ``kafka.secret_env``, ``kafka.client``). Most names mean
the same in Java (``security.protocol``, ``sasl.mechanism``, ``*.ms`` timeouts); the credentials and the CA
file do not, and are translated here so that a production profile configures both clients at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
# librdkafka-only settings that have no Java equivalent (or whose Java name differs and is set below)
_LIBRDKAFKA_ONLY = {"sasl.username", "sasl.password", "ssl.ca.location", "enable.ssl.certificate.verification"}


class KafkaSettingsError(ValueError):
    """A Kafka setting cannot be expressed for the Java client; the message names it."""


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_client_settings(librdkafka: Mapping[str, Any]) -> dict[str, str]:
    """The Java client's settings for the same cluster and credentials."""
    settings = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in librdkafka.items()}
    java = {key: value for key, value in settings.items() if key not in _LIBRDKAFKA_ONLY}
    username, password = settings.get("sasl.username"), settings.get("sasl.password")
    if username is not None or password is not None:
        mechanism = settings.get("sasl.mechanism", "PLAIN").upper()
        module = _LOGIN_MODULES.get(mechanism)
        if module is None:
            raise KafkaSettingsError(
                f"kafka sasl.mechanism {mechanism!r} with username/password has no Java login module here; "
                f"use one of {sorted(_LOGIN_MODULES)} or set kafka.client['sasl.jaas.config'] yourself"
            )
        java.setdefault(
            "sasl.jaas.config",
            f"{module} required username={_jaas_quote(username or '')} password={_jaas_quote(password or '')};",
        )
    if "ssl.ca.location" in settings:
        java.setdefault("ssl.truststore.type", "PEM")
        java.setdefault("ssl.truststore.location", settings["ssl.ca.location"])
    if settings.get("enable.ssl.certificate.verification") == "false":
        java.setdefault("ssl.endpoint.identification.algorithm", "")
    return java

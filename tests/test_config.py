"""Configuration: profiles, environment overrides and errors that name file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import CONFIG_FILE, ConfigError, load_settings, project_home


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lakehouse.yaml"
    path.write_text(text)
    return path


MINIMAL = """
default_profile: dev
base:
  kafka:
    dead_letter_topic: dlq
    topics:
      user.activity: {partitions: 2, event_types: [page_view]}
profiles:
  dev:
    lake: {root: lake}
    kafka: {bootstrap_servers: embedded}
"""


def test_shipped_profiles_load() -> None:
    local = load_settings("local", environ={})
    prod = load_settings("prod", environ={})
    assert local.kafka.is_embedded and local.spark.master.startswith("local")
    assert not prod.kafka.is_embedded
    assert prod.lake.is_remote and prod.lake_root.startswith("s3://")
    assert prod.kafka.security["security.protocol"] == "SASL_SSL"
    assert set(local.kafka.topics) == {"user.activity", "commerce.checkout", "system.events"}
    # base is merged under each profile
    assert local.kafka.dead_letter_topic == prod.kafka.dead_letter_topic == "events.dead_letter"


def test_default_profile_and_env_profile() -> None:
    assert load_settings(environ={}).profile == "local"
    assert load_settings(environ={"LAKEHOUSE_PROFILE": "prod"}).profile == "prod"


def test_env_overrides_keep_types() -> None:
    settings = load_settings(
        "local",
        environ={
            "LAKEHOUSE__KAFKA__BOOTSTRAP_SERVERS": "b1:9092,b2:9092",
            "LAKEHOUSE__KAFKA__TOPICS__USER.ACTIVITY__PARTITIONS": "7",
            "LAKEHOUSE__PRODUCER__LINGER_MS": "5",
        },
    )
    assert settings.kafka.bootstrap_servers == "b1:9092,b2:9092"
    assert settings.kafka.topics["user.activity"].partitions == 7
    assert settings.producer.linger_ms == 5


def test_relative_lake_root_is_relative_to_project() -> None:
    settings = load_settings("local", environ={})
    assert Path(settings.lake_root) == project_home() / "lake"


def test_unknown_key_names_file_profile_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("lake: {root: lake}", "lake: {root: lake, rot: x}"))
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    message = str(info.value)
    assert str(path) in message and "'dev'" in message
    assert "lake.rot: unknown key" in message


def test_wrong_type_and_missing_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL.replace("partitions: 2", "partitions: many").replace(
            "kafka: {bootstrap_servers: embedded}", "kafka: {}"
        ),
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    message = str(info.value)
    assert "kafka.topics.user.activity.partitions" in message
    assert "kafka.bootstrap_servers: Field required" in message


def test_bad_env_override_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"producer\.linger_ms"):
        load_settings(path=write(tmp_path, MINIMAL), environ={"LAKEHOUSE__PRODUCER__LINGER_MS": "-1"})


def test_event_type_routed_twice_is_rejected(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "user.activity: {partitions: 2, event_types: [page_view]}",
        "user.activity: {partitions: 2, event_types: [page_view]}\n"
        "      other: {partitions: 1, event_types: [page_view]}",
    )
    with pytest.raises(ConfigError, match=r"page_view.*two topics"):
        load_settings(path=write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("profiles: {}\ndefault_profile: x\n", "unknown profile 'x'"),
        ("- a list\n", "expected a mapping"),
        ("profiles: {a: {}}\nbogus: 1\n", "unknown top-level key"),
        ("profiles: [: bad yaml\n", "not valid YAML"),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(path=write(tmp_path, text), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(path=tmp_path / "nope.yaml", environ={})


def test_secrets_come_from_environment_only() -> None:
    prod = load_settings("prod", environ={})
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME"):
        prod.kafka.client_settings()
    with_secrets = {"KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "s3cret"}
    import os

    old = {k: os.environ.get(k) for k in with_secrets}
    os.environ.update(with_secrets)
    try:
        client = prod.kafka.client_settings()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert client["sasl.username"] == "svc" and client["sasl.password"] == "s3cret"
    assert "s3cret" not in (project_home() / CONFIG_FILE).read_text()

"""Typed, validated configuration loaded from ``conf/lakehouse.yaml``.

One file holds named profiles; ``base`` is deep-merged under the chosen profile, then
``LAKEHOUSE__SECTION__KEY`` environment variables override single keys. Validation errors name
the file, the profile, the key and the reason, so a typo fails at start-up, not mid-job.
Secrets never live in the file: it only names the environment variables that hold them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_FILE = Path("conf") / "lakehouse.yaml"  # relative to the project directory
HOME_ENV = "LAKEHOUSE_HOME"
EMBEDDED = "embedded"
ENV_PREFIX = "LAKEHOUSE__"


class ConfigError(ValueError):
    """Raised for any problem in the configuration; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicConfig(_Strict):
    partitions: int = Field(ge=1, le=1024)
    event_types: list[str] = Field(min_length=1)


class KafkaConfig(_Strict):
    bootstrap_servers: str = Field(min_length=1)
    topics: dict[str, TopicConfig] = Field(min_length=1)
    dead_letter_topic: str = Field(min_length=1)
    replication_factor: int = Field(default=1, ge=1)
    security: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(default_factory=dict)
    client: dict[str, str | int | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_topic_per_event_type(self) -> KafkaConfig:
        seen: dict[str, str] = {}
        for topic, spec in self.topics.items():
            for event_type in spec.event_types:
                if event_type in seen:
                    raise ValueError(
                        f"event type {event_type!r} is routed to two topics: {seen[event_type]!r} and {topic!r}"
                    )
                seen[event_type] = topic
        if self.dead_letter_topic in self.topics:
            raise ValueError(f"dead_letter_topic {self.dead_letter_topic!r} is also a data topic")
        return self

    @property
    def is_embedded(self) -> bool:
        return self.bootstrap_servers == EMBEDDED

    @property
    def topic_for_event_type(self) -> dict[str, str]:
        return {et: topic for topic, spec in self.topics.items() for et in spec.event_types}

    def client_settings(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and admin clients (no bootstrap)."""
        settings: dict[str, Any] = {**self.security, **self.client}
        for key, env_name in self.secret_env.items():
            value = os.environ.get(env_name)
            if not value:
                raise ConfigError(f"kafka.secret_env.{key}: environment variable {env_name} is not set")
            settings[key] = value
        return settings


class ProducerConfig(_Strict):
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: int = Field(default=20, ge=0)
    batch_size: int = Field(default=262144, ge=1024)
    max_in_flight_messages: int = Field(default=100000, ge=1)
    max_in_flight_kbytes: int = Field(default=65536, ge=1)
    delivery_timeout_ms: int = Field(default=120000, ge=1000)
    retries: int = Field(default=5, ge=0)


class EmbeddedBrokerConfig(_Strict):
    """The local Apache Kafka broker (KRaft, one node) started from jars by ``pipelines.kafka.broker``."""

    # PID/ports record, server.properties, logs and the durable log data (<state_dir>/data)
    state_dir: str = ".lakehouse/broker"
    heap: str = Field(default="512m", pattern=r"^[1-9][0-9]*[kKmMgG]$")  # the JVM's -Xmx
    start_timeout_s: float = Field(default=60.0, gt=0)
    # extra server.properties entries, e.g. {"log.retention.hours": 24}; listeners, ports, node id,
    # roles and log.dirs are managed by pipelines.kafka.broker and cannot be set here
    server_properties: dict[str, str | int | bool] = Field(default_factory=dict)


class LakeConfig(_Strict):
    root: str = Field(min_length=1)
    # Spark streaming checkpoints go through Hadoop's filesystem, which has no S3 client here:
    # an s3:// lake needs a local or HDFS checkpoint root. Default: <root>/_checkpoints.
    checkpoint_root: str | None = None
    storage_options_env: dict[str, str] = Field(default_factory=dict)

    @property
    def is_remote(self) -> bool:
        return "://" in self.root and not self.root.startswith("file://")


class SparkConfig(_Strict):
    master: str = "local[*]"
    app_name: str = "lakehouse"
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value


class CatalogConfig(_Strict):
    """Where table names (bronze.events, gold.revenue, ...) are kept.

    ``embedded``: a Derby network server the project starts (pipelines.platform.metastore), shared by every
    local JVM; ``thrift://host:9083``: an existing Hive metastore; ``none``: Spark's in-memory
    catalog (tables by path only).
    """

    metastore: str = Field(default=EMBEDDED, pattern=r"^(embedded|none|thrift://\S+)$")
    state_dir: str = ".lakehouse/metastore"

    @property
    def enabled(self) -> bool:
        return self.metastore != "none"


class SchemasConfig(_Strict):
    dir: str = "conf/schemas"


class PiiConfig(_Strict):
    hmac_key_env: str = "LAKEHOUSE_PII_HMAC_KEY"


# Consumer settings Spark's Kafka source manages itself (it rejects some) or that come from the kafka: section.
_SOURCE_MANAGED_CONSUMER_SETTINGS = frozenset(
    {
        "bootstrap.servers",
        "security.protocol",
        "group.id",
        "auto.offset.reset",
        "key.deserializer",
        "value.deserializer",
        "enable.auto.commit",
        "interceptor.classes",
    }
)


class BronzeConfig(_Strict):
    query_name: str = "bronze"
    trigger_interval: str = "10 seconds"  # continuous mode: Spark processingTime trigger
    max_offsets_per_trigger: int = Field(default=200_000, ge=1)  # rate limit per micro-batch
    target_file_size_mb: int = Field(default=128, ge=1)
    max_event_age_days: int = Field(default=365, ge=1)  # older occurred_at than this -> quarantine
    max_future_skew_minutes: int = Field(default=60, ge=0)  # occurred_at this far ahead of ingest -> quarantine
    # `bronze vacuum`: keep files a version of the last N hours needs (None: the table's own retention, 7 days)
    vacuum_retention_hours: int | None = Field(default=None, ge=0)
    # Java Kafka consumer settings for Spark's Kafka source (`kafka.<name>`), over pipelines.bronze.stream's
    # CONSUMER_DEFAULTS; the broker address and security settings are not set here (kafka:).
    consumer: dict[str, str] = Field(default_factory=dict)

    @field_validator("consumer")
    @classmethod
    def _consumer_settings_only(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in value if k in _SOURCE_MANAGED_CONSUMER_SETTINGS or k.startswith(("ssl.", "sasl.")))
        if reserved:
            raise ValueError(f"{reserved} are set from the kafka: section or by Spark's Kafka source, not here")
        return value


class SilverConfig(_Strict):
    session_timeout_minutes: int = Field(default=30, ge=1)
    # copies of one (tenant_id, event_id) whose occurred_at lie at most this far apart are one event
    dedup_horizon_days: int = Field(default=7, ge=1)
    pii_rules: str = "conf/pii.yaml"
    dimensions_dir: str = "conf/dimensions"


class GoldConfig(_Strict):
    funnels: str = "conf/funnels.yaml"
    late_lookback_days: int = Field(default=3, ge=0)  # a run for day D also refreshes days touched by late events
    anomaly_window_days: int = Field(default=14, ge=3)
    anomaly_threshold: float = Field(default=3.5, gt=0)


class QualityConfig(_Strict):
    """Quality gates (pipelines/quality): suites in ``expectations_dir``, run by silver and gold builds."""

    expectations_dir: str = "expectations"
    docs_dir: str = ".lakehouse/data_docs"  # GX Data Docs site (local folder; its index.html is printed)
    tenants: list[str] = []  # the tenants the platform serves; empty: every tenant bronze holds
    min_user_match_rate: float = Field(default=0.95, ge=0, le=1)  # identified silver events with a users row
    max_quarantine_rate: float = Field(default=0.05, ge=0, le=1)  # bronze messages quarantined, per build days


class MaintenanceConfig(_Strict):
    """Daily maintenance (pipelines/platform/maintenance.py): data retention per table and vacuum."""

    # days of data kept per table, e.g. {"bronze.quarantine": 90}; tables not named keep every day
    retention_days: dict[str, int] = {}
    vacuum_retention_hours: int | None = Field(default=None, ge=0)  # None: each table's own (7 days)

    @field_validator("retention_days")
    @classmethod
    def _declared_tables(cls, value: dict[str, int]) -> dict[str, int]:
        from pipelines.platform.registry import TABLES

        by_day = {spec.full_name for spec in TABLES if spec.day_column}
        unknown = sorted(set(value) - by_day)
        if unknown:
            raise ValueError(f"{unknown}: retention applies to tables partitioned by day: {sorted(by_day)}")
        short = {name: days for name, days in value.items() if days < 1}
        if short:
            raise ValueError(f"retention must be at least 1 day: {short}")
        return value


class OrchestrationConfig(_Strict):
    """Airflow (dags/, pipelines/orchestration): schedules, retries, the Spark connection, replay limits."""

    schedule: str | None = "@daily"  # lakehouse_medallion (a cron expression or preset)
    start_date: date = date(2026, 11, 1)  # first interval a scheduler or `airflow backfill create` may run
    catchup_schedule: str | None = None  # lakehouse_bronze_catchup; None: triggered by hand only
    owner: str = "data-platform"
    retries: int = Field(default=2, ge=0)
    retry_delay_minutes: float = Field(default=2.0, gt=0)  # doubles on every retry
    task_timeout_minutes: int = Field(default=180, ge=1)
    spark_conn_id: str = "lakehouse_spark"  # an Airflow Spark connection: local[*] locally, a cluster in prod
    bronze_wait_timeout_minutes: int = Field(default=240, ge=1)  # the sensor then fails the run, loudly
    bronze_poke_interval_s: int = Field(default=300, ge=1)
    replay_chunk_days: int = Field(default=7, ge=1)  # a replay range is rebuilt in chunks of this many days
    replay_max_parallel: int = Field(default=2, ge=1)  # chunks rebuilt at once
    replay_max_days: int = Field(default=731, ge=1)  # a longer range is refused: split it, or raise this
    airflow_home: str = ".lakehouse/airflow"  # the local stack's AIRFLOW_HOME (metadata DB, logs)


class ServeConfig(_Strict):
    """Serving (pipelines/serve): the metrics API over gold and its tenant-scoped tokens."""

    host: str = "127.0.0.1"  # loopback by default; put a TLS proxy in front to expose it
    api_port: int = Field(default=0, ge=0, le=65535)  # 0: a free port, printed at start
    tokens_file: str = ".lakehouse/serve/api_tokens.json"  # token hashes and their tenant (`serve token create`)
    cache_entries: int = Field(default=1024, ge=0)  # responses kept per (query, table version); 0: no cache
    max_range_days: int = Field(default=731, ge=1)  # a longer from..to is refused (400)
    sql_port: int = Field(default=0, ge=0, le=65535)  # `serve sql` (HiveServer2 binary protocol); 0: a free port
    sql_users_file: str = ".lakehouse/serve/sql_users.tsv"  # logins, their tenant and PBKDF2 hashes (`serve sql-user`)
    sql_state_dir: str = ".lakehouse/sql-endpoint"  # Hive scratch files of the endpoint


class LineageConfig(_Strict):
    """OpenLineage run events of every job run (pipelines/ops/lineage.py)."""

    transport: Literal["file", "console", "http", "none"] = "file"
    file: str = ".lakehouse/lineage/events.jsonl"  # transport file: one JSON event per line, appended
    url: str | None = None  # transport http: the backend's base URL (e.g. Marquez, http://127.0.0.1:5000)
    namespace: str = "lakehouse"  # the jobs' namespace

    @model_validator(mode="after")
    def _url_for_http(self) -> LineageConfig:
        if self.transport == "http" and not self.url:
            raise ValueError("lineage.transport is http: set lineage.url to the OpenLineage backend")
        return self


class OpsConfig(_Strict):
    """Operating the platform: `status`, alerts and Prometheus metrics (pipelines/ops/)."""

    state_dir: str = ".lakehouse/ops"  # the running stream's status file and metrics address
    alert_rules: str = "conf/alerts.yaml"  # thresholds `status` checks and `alerts check` notifies about
    alert_schedule: str | None = "*/5 * * * *"  # lakehouse_alerts DAG; None: triggered by hand only
    webhook_url_env: str | None = "LAKEHOUSE_ALERT_WEBHOOK_URL"  # env var holding the webhook URL (a secret)
    webhook_url: str | None = None  # or the URL itself, when it is not a secret (e.g. a local receiver)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    metrics_host: str = "127.0.0.1"  # Prometheus endpoints of the stream and of `metrics serve`
    metrics_port: int = Field(default=0, ge=0, le=65535)  # the stream's; 0: a free port (in its status file)
    exporter_port: int = Field(default=0, ge=0, le=65535)  # `metrics serve`; 0: a free port, printed

    def webhook(self) -> str | None:
        if self.webhook_url:
            return self.webhook_url
        return os.environ.get(self.webhook_url_env) if self.webhook_url_env else None


class Settings(_Strict):
    """The resolved configuration of one profile."""

    profile: str
    source: str
    home: str  # the project directory: relative paths in the file are relative to it
    lake: LakeConfig
    kafka: KafkaConfig
    producer: ProducerConfig = ProducerConfig()
    embedded_broker: EmbeddedBrokerConfig = EmbeddedBrokerConfig()
    spark: SparkConfig = SparkConfig()
    catalog: CatalogConfig = CatalogConfig()
    schemas: SchemasConfig = SchemasConfig()
    pii: PiiConfig = PiiConfig()
    bronze: BronzeConfig = BronzeConfig()
    silver: SilverConfig = SilverConfig()
    gold: GoldConfig = GoldConfig()
    quality: QualityConfig = QualityConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    serve: ServeConfig = ServeConfig()
    lineage: LineageConfig = LineageConfig()
    ops: OpsConfig = OpsConfig()

    def resolve_path(self, path: str) -> str:
        """Relative local paths are relative to the project directory, so commands work from any cwd."""
        if "://" in path or os.path.isabs(path):
            return path
        return str(Path(self.home) / path)

    @property
    def lake_root(self) -> str:
        return self.resolve_path(self.lake.root)

    def lake_storage_options(self) -> dict[str, str]:
        options = {}
        for key, env_name in self.lake.storage_options_env.items():
            value = os.environ.get(env_name)
            if value:
                options[key] = value
        return options

    @property
    def schemas_dir(self) -> Path:
        return Path(self.resolve_path(self.schemas.dir))

    @property
    def metastore_state_dir(self) -> Path:
        return Path(self.resolve_path(self.catalog.state_dir))

    @property
    def broker_state_dir(self) -> Path:
        return Path(self.resolve_path(self.embedded_broker.state_dir))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """LAKEHOUSE__KAFKA__BOOTSTRAP_SERVERS=x -> {"kafka": {"bootstrap_servers": "x"}}.

    Values are parsed as YAML scalars so numbers and booleans keep their type.
    """
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[path[-1]] = raw
    return overrides


def _format_errors(error: ValidationError, where: str) -> str:
    lines = [f"invalid configuration in {where}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = "unknown key (check spelling)"
        lines.append(f"  - {key}: {reason}")
    return "\n".join(lines)


def project_home(environ: Mapping[str, str] | None = None) -> Path:
    """The project directory (the one holding ``conf/lakehouse.yaml``): ``LAKEHOUSE_HOME``, else the working
    directory or its nearest parent with that file. The package itself holds no project files, so an installed
    ``pipelines`` serves any project, and commands work from the project's subfolders."""
    environ = os.environ if environ is None else environ
    configured = environ.get(HOME_ENV)
    if configured:
        home = Path(configured).expanduser().resolve()
        if not home.is_dir():
            raise ConfigError(f"{HOME_ENV}={configured} is not a directory")
        return home
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise ConfigError(
        f"no lakehouse project here: neither {cwd} nor a parent holds {CONFIG_FILE}; "
        f"run from a project directory or set {HOME_ENV}"
    )


def read_yaml_mapping(
    path: str | os.PathLike[str], what: str, error: type[Exception], shape: str = "a mapping at the top level"
) -> dict[str, Any]:
    """Load a YAML file that must hold a mapping; errors (``error``) name the file, what it is and the expected
    ``shape`` - one way for every config file: settings, funnels, PII rules, quality suites."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{what} not found: {source}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{source}: expected {shape}")
    return raw


def load_settings(
    profile: str | None = None,
    path: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Load, merge and validate one profile; raise ConfigError naming file, key and reason."""
    environ = dict(os.environ if environ is None else environ)
    explicit = path or environ.get("LAKEHOUSE_CONFIG")
    if explicit and not environ.get(HOME_ENV) and Path(explicit).resolve().parent.name == CONFIG_FILE.parent.name:
        home = Path(explicit).resolve().parent.parent  # <project>/conf/<file>: that project
    else:
        home = project_home(environ)
    config_path = Path(explicit) if explicit else home / CONFIG_FILE
    raw = read_yaml_mapping(config_path, "configuration file", ConfigError)
    unknown = set(raw) - {"default_profile", "base", "profiles"}
    if unknown:
        raise ConfigError(
            f"{config_path}: unknown top-level key(s) {sorted(unknown)}; expected default_profile, base, profiles"
        )
    profiles = raw.get("profiles") or {}
    chosen = profile or environ.get("LAKEHOUSE_PROFILE") or raw.get("default_profile")
    if not chosen:
        raise ConfigError(f"{config_path}: no profile chosen and no default_profile set")
    if chosen not in profiles:
        raise ConfigError(f"{config_path}: unknown profile {chosen!r}; defined profiles: {sorted(profiles)}")
    merged = _deep_merge(raw.get("base") or {}, profiles[chosen] or {})
    merged = _deep_merge(merged, _env_overrides(environ))
    merged["profile"] = chosen
    merged["source"] = str(config_path)
    merged["home"] = str(home)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, f"{config_path} (profile {chosen!r})")) from None

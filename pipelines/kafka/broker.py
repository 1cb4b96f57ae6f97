"""The embedded broker: a real Apache Kafka 4.4 broker (KRaft, one node) run from jars with ``java``.

Only used when the profile says ``kafka.bootstrap_servers: embedded``; any other value is an
external cluster and nothing is started. The jars come from ``pipelines.platform.jars`` (group ``kafka``).

Everything lives in ``embedded_broker.state_dir`` (default ``.lakehouse/broker``):

* ``data/``             - the broker's log dir (topics, consumer offsets, KRaft metadata): durable,
                          formatted once (when it has no ``meta.properties``) and reused by every start;
* ``server.properties`` - rewritten on every start: one node in combined mode
                          (``process.roles=broker,controller``), both listeners on 127.0.0.1;
* ``log4j2.properties`` - rewritten on every start; Kafka logs to ``broker.log`` (rolled at 10 MB),
                          the JVM's own stdout/stderr go to ``broker.out``;
* ``broker.json``       - PID, ports and paths of the running broker, so that ``stop`` signals exactly
                          that process (after checking that the PID is still this broker's JVM);
* ``broker.lock``       - held (flock) while a start or stop runs, so concurrent starts from several
                          processes yield one broker; a start also refuses to run while a Kafka JVM
                          that ``broker.json`` does not record still uses the state dir.

Each start picks two free loopback ports (client and controller). KRaft with static
``controller.quorum.voters`` keeps only voter *ids* on disk (``quorum-state``), not endpoints, so a
restart on other ports is fine: the voters line is rewritten with the new controller port and the
broker re-registers with its new listener.

Durability: acknowledged messages and committed offsets survive a stop, a crash or a SIGKILL of
the broker (they are in the page cache and on disk); like any Kafka with the default flush policy,
the last seconds may be lost on a power cut of the machine.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from pipelines.config import Settings
from pipelines.platform.processes import HeldSignals, cmdline, free_ports, pid_alive, reap

STATE_FILE = "broker.json"
LOCK_FILE = "broker.lock"
SERVER_PROPERTIES = "server.properties"
LOG4J_CONFIG = "log4j2.properties"
LOG_FILE = "broker.log"
OUT_FILE = "broker.out"
DATA_DIR = "data"
NODE_ID = 1
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

# server.properties keys that pipelines.kafka.broker owns: overriding them would break start/stop/restart
MANAGED_PROPERTIES = frozenset(
    {
        "process.roles",
        "node.id",
        "controller.quorum.voters",
        "controller.quorum.bootstrap.servers",
        "listeners",
        "advertised.listeners",
        "controller.listener.names",
        "inter.broker.listener.name",
        "listener.security.protocol.map",
        "log.dirs",
        "log.dir",
        "metadata.log.dir",
    }
)

# single-node defaults (replication factor 1 everywhere); embedded_broker.server_properties may change them
DEFAULT_PROPERTIES = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # internal topics with 4 partitions instead of 50: one node needs no spread, and every start
    # (and the first consumer group) loads each partition
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.num.partitions": "4",
}

# Kafka at INFO, minus the loggers that repeat a line per partition or dump whole configs
_QUIET_LOGGERS = (
    "org.apache.kafka.common.config",  # "AbstractConfig values:" dumps, ~250 lines each, several per start
    "state.change.logger",  # a line per partition and leadership change
    "org.apache.kafka.controller",  # "Replayed ..." for every metadata record on each start
    "org.apache.kafka.storage.internals.log",  # log loading/recovery, per partition and segment
    "org.apache.kafka.image.loader",
    "org.apache.kafka.server.purgatory",
    "org.apache.kafka.server.util.timer",
    "org.apache.kafka.server.quota",
    "org.apache.kafka.coordinator.common.runtime",
    "kafka.cluster.Partition",
    "kafka.log",
)


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped; the message says which and why."""


@dataclass(frozen=True)
class BrokerHandle:
    pid: int
    port: int
    controller_port: int
    log_file: str
    data_dir: str

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> str:
        """Where the broker keeps its log (shown by ``broker start|status``)."""
        return self.data_dir


def wait_until_healthy(
    bootstrap_servers: str,
    timeout_s: float = 60.0,
    client_settings: dict[str, Any] | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Health check through the Kafka AdminClient: metadata must come back with a broker in it.

    ``alive`` (optional) is polled meanwhile: when it turns False (the broker process exited),
    waiting stops at once instead of running into the timeout.
    """
    deadline = time.monotonic() + timeout_s

    def check_alive() -> None:
        if alive is not None and not alive():
            raise BrokerError(f"Kafka at {bootstrap_servers} not healthy: the broker process exited")

    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # wait for the port first: keeps librdkafka's connect errors out of the log
        check_alive()
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(client_settings or {})})
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        check_alive()
        try:
            metadata = admin.list_topics(timeout=2)
            if metadata.brokers:
                return
        except KafkaException as exc:
            last_error = exc
        time.sleep(0.1)
    raise BrokerError(f"Kafka at {bootstrap_servers} not healthy after {timeout_s:.0f}s: {last_error}")


def _property_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _escape(value: str) -> str:
    """A value for a Java .properties file (paths may hold backslashes)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64url without padding (22 chars), not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka's Uuid.randomUuid() avoids these too (CLI parsing)
            return cluster_id


class EmbeddedBroker:
    """Start, find and stop the embedded Apache Kafka broker recorded in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        heap: str = "512m",
        server_properties: Mapping[str, str | int | bool] | None = None,
        start_timeout_s: float = 60.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.heap = heap
        self.server_properties = {key: _property_value(value) for key, value in (server_properties or {}).items()}
        self.start_timeout_s = start_timeout_s
        # the JVM's environment (JAVA_HOME picks the java binary)
        self.environ = dict(os.environ if environ is None else environ)

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedBroker:
        config = settings.embedded_broker
        return cls(
            settings.broker_state_dir,
            heap=config.heap,
            server_properties=config.server_properties,
            start_timeout_s=config.start_timeout_s,
        )

    # --- paths ------------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def data_dir(self) -> Path:
        return self.state_dir / DATA_DIR

    @property
    def properties_file(self) -> Path:
        return self.state_dir / SERVER_PROPERTIES

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_FILE

    @property
    def out_file(self) -> Path:
        return self.state_dir / OUT_FILE

    # --- state ------------------------------------------------------------------------------------

    def _runs_here(self, argv: list[str]) -> bool:
        """The command line is a Kafka JVM on this state dir's server.properties."""
        ours = self.properties_file.resolve()
        return MAIN_CLASS in argv and any(
            arg.endswith(SERVER_PROPERTIES) and Path(arg).resolve() == ours for arg in argv
        )

    def _is_our_broker(self, pid: int) -> bool:
        """The PID is alive and (where /proc tells) still this state dir's Kafka JVM, not a reused PID."""
        if not pid_alive(pid):
            return False
        argv = cmdline(pid)
        return argv is None or self._runs_here(argv)

    def running(self) -> BrokerHandle | None:
        """The recorded broker if its process is still alive, else None (and a stale record is removed)."""
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return None
        try:
            handle = BrokerHandle(**json.loads(text))
        except (json.JSONDecodeError, TypeError, ValueError):
            handle = None  # unreadable, or written by an older broker implementation: never signal it
        if handle is not None:
            if self._is_our_broker(handle.pid):
                return handle
            if not pid_alive(handle.pid):
                reap(handle.pid)
        try:
            if self.state_file.read_text() == text:  # not replaced by a start meanwhile
                self.state_file.unlink()
        except FileNotFoundError:
            pass
        return None

    def _unrecorded_jvms(self) -> list[int]:
        """Kafka JVMs running on this state dir (looked up to refuse a second start; never signalled)."""
        found = []
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
            if entry.name.isdigit() and pid_alive(int(entry.name)):
                argv = cmdline(int(entry.name))
                if argv and self._runs_here(argv):
                    found.append(int(entry.name))
        return found

    # --- start ------------------------------------------------------------------------------------

    def _java(self) -> str:
        java_home = self.environ.get("JAVA_HOME")
        if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
            return str(Path(java_home) / "bin" / "java")
        java = shutil.which("java", path=self.environ.get("PATH"))
        if java is None:
            raise BrokerError("no `java` found (set JAVA_HOME or put a JDK 17+ on PATH); Kafka 4 needs Java 17+")
        return java

    def _classpath(self) -> str:
        from pipelines.platform.jars import JarsError, classpath

        try:
            return classpath("kafka")
        except JarsError as exc:
            raise BrokerError(f"Kafka broker jars missing: {exc}") from None

    def _jvm_options(self) -> list[str]:
        return [
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state_dir / LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.state_dir}",
        ]

    def _write_server_properties(self, port: int, controller_port: int) -> None:
        clash = sorted(MANAGED_PROPERTIES & set(self.server_properties))
        if clash:
            raise BrokerError(
                f"embedded_broker.server_properties may not set {clash}: the embedded broker manages them"
            )
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **DEFAULT_PROPERTIES,
            **self.server_properties,
        }
        lines = ["# written on every start by the embedded broker: edit embedded_broker in conf/lakehouse.yaml instead"]
        lines += [f"{key}={_escape(value)}" for key, value in properties.items()]
        _write_atomic(self.properties_file, "\n".join(lines) + "\n")

    def _write_log4j_config(self) -> None:
        log = _escape(str(self.log_file))
        lines = [
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {log}",
            f"appender.file.filePattern = {log}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 10MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
        ]
        for n, name in enumerate(_QUIET_LOGGERS):
            lines += [f"logger.quiet{n}.name = {name}", f"logger.quiet{n}.level = WARN"]
        _write_atomic(self.state_dir / LOG4J_CONFIG, "\n".join(lines) + "\n")

    def _format(self, java: str, classpath: str) -> None:
        """Format the data dir once (KRaft needs a cluster id and the bootstrap metadata)."""
        cmd = [java, *self._jvm_options(), "-cp", classpath, STORAGE_TOOL, "format"]
        cmd += ["-t", _cluster_id(), "-c", str(self.properties_file)]
        result = subprocess.run(
            cmd, capture_output=True, text=True, cwd=self.state_dir, env=self.environ, timeout=120, check=False
        )
        with open(self.out_file, "a") as out:
            out.write(result.stdout + result.stderr)
        if result.returncode != 0 or not (self.data_dir / "meta.properties").exists():
            output = (result.stdout + result.stderr).strip()[-2000:]
            raise BrokerError(
                f"formatting the Kafka log dir {self.data_dir} failed (exit {result.returncode}):\n{output}"
            )

    def _log_sizes(self) -> dict[Path, int]:
        return {path: path.stat().st_size if path.exists() else 0 for path in (self.out_file, self.log_file)}

    def log_tail(self, chars: int = 3000, since: dict[Path, int] | None = None) -> str:
        """The end of ``broker.out`` and ``broker.log`` (only what was written after ``since``, if given)."""
        parts = []
        for path in (self.out_file, self.log_file):
            try:
                with open(path, "rb") as handle:
                    start = (since or {}).get(path, 0)
                    handle.seek(start if start <= path.stat().st_size else 0)  # smaller: the log rolled
                    text = handle.read().decode(errors="replace").strip()
            except FileNotFoundError:
                continue
            if text:
                parts.append(f"--- {path} ---\n{text[-chars:]}")
        return "\n".join(parts) or "(no broker output)"

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise start/stop across processes (two starts at once would run two JVMs on one log dir)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def start(self, timeout_s: float | None = None) -> BrokerHandle:
        """Start the broker (or return the one already running) and wait until it answers."""
        existing = self.running()
        if existing:
            return existing
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        java, classpath = self._java(), self._classpath()
        with self._exclusive():
            existing = self.running()  # another process may have started it while we waited
            if existing:
                return existing
            orphans = self._unrecorded_jvms()
            if orphans:
                raise BrokerError(
                    f"Kafka JVM(s) {orphans} already use {self.state_dir} but {STATE_FILE} does not record them; "
                    "stop them by PID (kill <pid>) before starting another broker on the same log dir"
                )
            for attempt in (1, 2):
                handle, process, marks, held = self._launch(java, classpath)
                try:
                    held.release()  # a Ctrl-C held since the launch is raised here, where the JVM gets stopped
                    wait_until_healthy(handle.bootstrap_servers, timeout_s, alive=lambda p=process: p.poll() is None)
                    return handle
                except BrokerError as exc:
                    self._stop_recorded(timeout_s=20.0)
                    tail = self.log_tail(since=marks)
                    if attempt == 1 and "Address already in use" in tail:
                        continue  # another process took a port between our check and the JVM's bind
                    raise BrokerError(
                        f"embedded Kafka broker did not become healthy ({exc}); log tail:\n{tail}"
                    ) from None
                except BaseException:
                    # interrupted while waiting (Ctrl-C, SIGTERM turned into an exception): the caller never gets the
                    # handle, so nothing it runs on the way out would stop this JVM - stop it here
                    self._stop_recorded(timeout_s=20.0)
                    raise
        raise AssertionError("unreachable")

    def _launch(self, java: str, classpath: str) -> tuple[BrokerHandle, subprocess.Popen, dict[Path, int], HeldSignals]:
        """Launch the JVM and record it. Returns with Ctrl-C and SIGTERM held (``HeldSignals``) so that no interrupt
        falls between the launch, the record and the caller's ``try``; the caller releases them inside it."""
        port, controller_port = free_ports(2)
        self._write_server_properties(port, controller_port)
        self._write_log4j_config()
        marks = self._log_sizes()
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, classpath)
        cmd = [java, *self._jvm_options(), "-cp", classpath, MAIN_CLASS, str(self.properties_file)]
        held = HeldSignals()
        try:
            with open(self.out_file, "ab") as out:
                process = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.state_dir,
                    start_new_session=True,
                    env=self.environ,
                )
            handle = BrokerHandle(
                pid=process.pid,
                port=port,
                controller_port=controller_port,
                log_file=str(self.log_file),
                data_dir=str(self.data_dir),
            )
            try:
                _write_atomic(self.state_file, json.dumps(asdict(handle)))
            except BaseException:
                process.kill()  # not recorded, so nothing else would ever stop it
                process.wait()
                raise
        except BaseException:
            held.release()
            raise
        return handle, process, marks, held

    # --- stop -------------------------------------------------------------------------------------

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop exactly the recorded process (SIGTERM, a clean shutdown, then SIGKILL); True if one was running."""
        if self.running() is None:
            return False
        with self._exclusive():
            return self._stop_recorded(timeout_s)

    def _stop_recorded(self, timeout_s: float) -> bool:
        handle = self.running()
        if handle is None:
            return False
        try:
            os.kill(handle.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while pid_alive(handle.pid) and time.monotonic() < deadline:
            reap(handle.pid)
            time.sleep(0.05)
        if pid_alive(handle.pid):
            try:
                os.kill(handle.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while pid_alive(handle.pid) and time.monotonic() < deadline + 5:
                reap(handle.pid)
                time.sleep(0.05)
        reap(handle.pid)
        self.state_file.unlink(missing_ok=True)
        return True

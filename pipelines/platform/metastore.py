"""The local catalog's database: a Derby network server that several JVMs can share.

Tables live in a Hive metastore so ``spark.table("gold.revenue")`` works in any session. Spark's
default metastore is embedded Derby, which admits one JVM at a time ("Another instance of Derby may
have already booted"): the bronze stream, a batch job, a notebook and the SQL endpoint could not run
together. A Derby *network* server (the same Derby release pyspark ships, from Maven) removes that
limit while staying a pure-Java, zero-setup service. It binds 127.0.0.1 on a free port; its PID and
port live in ``<catalog.state_dir>/metastore.json`` and ``stop`` signals exactly that PID.

Production points ``catalog.metastore`` at a real metastore (``thrift://...``) and nothing is started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.config import Settings
from pipelines.platform.processes import HeldSignals, free_port, pid_alive, reap

STATE_FILE = "metastore.json"
DATABASE = "metastore_db"


class MetastoreError(RuntimeError):
    """The metastore database could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class MetastoreHandle:
    pid: int
    port: int
    home: str
    log_file: str

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:derby://127.0.0.1:{self.port}/{DATABASE};create=true"


class EmbeddedMetastore:
    """Start, find and stop the Derby network server recorded in ``state_dir``."""

    def __init__(self, state_dir: Path, heap: str = "256m") -> None:
        self.state_dir = Path(state_dir)
        self.heap = heap

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedMetastore:
        return cls(settings.metastore_state_dir)

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def running(self) -> MetastoreHandle | None:
        """The recorded server if its process is alive, else None (a stale record is removed)."""
        try:
            handle = MetastoreHandle(**json.loads(self.state_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None
        if pid_alive(handle.pid):
            return handle
        self.state_file.unlink(missing_ok=True)
        return None

    def start(self, timeout_s: float = 60.0) -> MetastoreHandle:
        """Start the server (or return the running one) and wait until it accepts connections."""
        existing = self.running()
        if existing:
            return existing
        from pipelines.platform.jars import classpath

        self.state_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log_file = self.state_dir / "derby-server.log"
        command = [
            "java",
            f"-Xmx{self.heap}",
            f"-Dderby.system.home={self.state_dir.resolve()}",
            "-Dderby.drda.host=127.0.0.1",
            "-Dderby.stream.error.file=" + str((self.state_dir / "derby.log").resolve()),
            "-cp",
            classpath("metastore"),
            "org.apache.derby.drda.NetworkServerControl",
            "start",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-noSecurityManager",
        ]
        held = HeldSignals()  # launched and recorded in one step: a Ctrl-C between them would orphan the JVM
        try:
            with open(log_file, "ab") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            home = str(self.state_dir.resolve())
            handle = MetastoreHandle(pid=process.pid, port=port, home=home, log_file=str(log_file))
            self.state_file.write_text(json.dumps(asdict(handle)))
        finally:
            held.release()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return handle
            except OSError:
                time.sleep(0.05)
        self.stop()
        tail = log_file.read_text(errors="replace")[-1500:]
        raise MetastoreError(f"metastore database (Derby) did not start on 127.0.0.1:{port}; log tail:\n{tail}")

    def stop(self, timeout_s: float = 15.0) -> bool:
        """Stop exactly the recorded process (SIGTERM, then SIGKILL); True if one was running."""
        handle = self.running()
        if handle is None:
            return False
        os.kill(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(handle.pid) and time.monotonic() < deadline:
            reap(handle.pid)
            time.sleep(0.05)
        if pid_alive(handle.pid):
            os.kill(handle.pid, signal.SIGKILL)
        reap(handle.pid)
        self.state_file.unlink(missing_ok=True)
        return True

"""A Spark standalone cluster (1 master, N workers) on 127.0.0.1 from pyspark's own ``spark-class``.

Used to prove the pipelines run in separate executor processes exactly as on a real cluster (the jars
reach the executors through ``spark.jars``), and handy for trying a multi-process setup on a laptop.
Every process is recorded by PID and stopped by PID; workers get their own web UI port and work dir
so nothing lands in the venv.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

from pipelines.platform.processes import free_ports


class ClusterError(RuntimeError):
    """The standalone cluster did not come up; the message points at the logs."""


@dataclass
class StandaloneCluster:
    work_dir: Path
    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "1g"
    master_url: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        spark_home = str(Path(pyspark.__file__).parent)
        env = {
            **os.environ,
            "SPARK_HOME": spark_home,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOG_DIR": str(self.work_dir / "logs"),
            # the master's REST submission server would take the fixed port 6066; nothing here submits through it
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        }
        log = open(self.work_dir / f"{name}.log", "wb")
        process = subprocess.Popen(
            [f"{spark_home}/bin/spark-class", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def start(self, timeout_s: float = 90.0) -> str:
        """Start master and workers; return the master URL once every worker has registered."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # all ports reserved at once: two picked one after the other can be the same port
        port, ui_port, *worker_ui_ports = free_ports(2 + self.workers)
        self.master_url = f"spark://127.0.0.1:{port}"
        self._spawn(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui_port),
            ],
        )
        for index, worker_ui_port in enumerate(worker_ui_ports):
            worker_dir = self.work_dir / f"worker-{index}"
            worker_dir.mkdir(exist_ok=True)
            self._spawn(
                f"worker-{index}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    self.master_url,
                    "--cores",
                    str(self.cores_per_worker),
                    "--memory",
                    self.memory_per_worker,
                    "--host",
                    "127.0.0.1",
                    "--webui-port",
                    str(worker_ui_port),
                    "--work-dir",
                    str(worker_dir),
                ],
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.alive_workers(self.master_ui_port(ui_port), self.master_url) >= self.workers:
                return self.master_url
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.5)
        self.stop()
        raise ClusterError(f"standalone cluster did not start within {timeout_s:.0f}s; logs in {self.work_dir}")

    def master_ui_port(self, requested: int) -> int:
        """The port the master's web UI bound, from its log: Spark moves to the next port when the one asked for
        was taken in the meantime (the reservation ends before the master starts)."""
        log = self.work_dir / "master.log"
        found = re.search(r"Successfully started service 'MasterUI' on port (\d+)", log.read_text(errors="replace"))
        return int(found.group(1)) if found else requested

    @staticmethod
    def alive_workers(ui_port: int, master_url: str) -> int:
        """Workers the master at ``master_url`` reports ALIVE; 0 while its UI is not answering with its state.

        Anything else on the port (a page that is not JSON, another master's state) counts as not ready, so
        a slow start or a foreign server ends in the ClusterError that points at the logs, not a decode error.
        """
        import json

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
                state = json.load(response)
        except (OSError, ValueError):
            return 0
        if not isinstance(state, dict) or state.get("url") != master_url:
            return 0
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")

    def stop(self) -> None:
        """Stop workers, then the master, each by PID (SIGTERM, then SIGKILL)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

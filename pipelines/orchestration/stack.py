"""The local stack behind `./dev stack up` / `./dev stack down`: the embedded broker and metastore, the
continuous bronze stream, and Airflow's api-server, scheduler, dag-processor and triggerer (LocalExecutor,
SQLite, examples off), every listener on 127.0.0.1, the project's DAGs, the Spark connection from the profile.

Not `airflow standalone`: it binds log servers on 0.0.0.0 and starts dozens of processes. Each part here runs
in a session of its own; its PID - also its process group - goes to ``stack.json`` under the stack's
AIRFLOW_HOME, and `down` stops exactly those groups (never by name). Services the stack found already running
(a broker or metastore started by hand or by tests) are used and left running.

Production runs the same DAGs on a managed or self-hosted Airflow with PostgreSQL as its metadata DB
(``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``); nothing here is needed there.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.platform.processes import free_port, pid_alive, reap

AIRFLOW_PARTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
USER = "admin"
SQLITE_BUSY_TIMEOUT_S = 60
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


class StackError(RuntimeError):
    """The stack could not start or stop; the message says which part and where its log is."""


@dataclass
class StackState:
    port: int
    processes: dict[str, int] = field(default_factory=dict)  # part -> PID (= its process group)
    started: list[str] = field(default_factory=list)  # embedded services this stack started (and stops)


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = Path(settings.resolve_path(settings.orchestration.airflow_home))
        self.state_file = self.home / "stack.json"
        self.logs = self.home / "stack-logs"

    # --- state -----------------------------------------------------------------------------------------------

    def state(self) -> StackState | None:
        if not self.state_file.exists():
            return None
        raw = json.loads(self.state_file.read_text())
        return StackState(raw["port"], raw.get("processes", {}), raw.get("started", []))

    def _save(self, state: StackState) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state.__dict__, indent=2))

    @property
    def url(self) -> str:
        state = self.state()
        if state is None:
            raise StackError("the stack is not running (./dev stack up)")
        return f"http://127.0.0.1:{state.port}"

    def airflow_env(self, port: int) -> dict[str, str]:
        """The environment every Airflow part (and `airflow` CLI call against this stack) runs with."""
        conn_id = self.settings.orchestration.spark_conn_id
        secret_file = self.home / "jwt_secret"
        if not secret_file.exists():  # one secret for all parts: tasks' execution-API tokens must verify
            self.home.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(secrets.token_urlsafe(32))
            secret_file.chmod(0o600)
        venv_bin = str(Path(sys.executable).parent)
        metadata_db = f"sqlite:///{self.home / 'airflow.db'}?timeout={SQLITE_BUSY_TIMEOUT_S}"
        return {
            **os.environ,
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            # SQLite lets one writer in at a time; its 5 s default wait was too short for the `airflow` CLI's writes
            # (`backfill create`, `dags trigger`) while a busy scheduler on 2 cores held the lock ("database is
            # locked"). Both of Airflow's engines (sync and aiosqlite) take the URL's timeout.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(self.settings.home) / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text().strip(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",  # its health server would bind a fixed port
            f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps({"conn_type": "spark", "host": self.settings.spark.master}),
            "LAKEHOUSE_HOME": self.settings.home,
            "LAKEHOUSE_PROFILE": self.settings.profile,
        }

    # --- up / down -----------------------------------------------------------------------------------------

    def up(self, *, stream: bool = True, timeout_s: float = 180.0, say=print) -> StackState:
        previous = self.state()
        if previous is not None:
            alive = {part: pid for part, pid in previous.processes.items() if pid_alive(pid)}
            if alive:
                raise StackError(f"the stack already runs ({', '.join(alive)}) at {self.url}; ./dev stack down first")
            self.state_file.unlink()
        state = StackState(port=free_port())
        self._save(state)
        try:
            self._start_services(state, stream, say)
            env = self.airflow_env(state.port)
            say("airflow db migrate ...")
            self._run_airflow(["db", "migrate"], env, "db-migrate")
            for part, args in AIRFLOW_PARTS.items():
                command = [sys.executable, "-m", "airflow", *(a.format(port=state.port) for a in args)]
                state.processes[part] = self._spawn(part, command, env)
                self._save(state)
            self._wait_healthy(state, timeout_s)
        except BaseException:
            self.down(say=lambda _m: None)
            raise
        say(f"Airflow UI: {self.url}  login: {USER} / {self.password()}")
        say(f"logs: {self.logs}; stop everything with ./dev stack down")
        return state

    def down(self, timeout_s: float = 30.0, say=print) -> list[str]:
        """Stop every process group the stack recorded, then the embedded services it started."""
        state = self.state()
        if state is None:
            say("the stack is not running")
            return []
        stopped = []
        for part, pid in reversed(list(state.processes.items())):
            if _stop_group(pid, timeout_s):
                stopped.append(part)
        if "metastore" in state.started:
            from pipelines.platform.metastore import EmbeddedMetastore

            EmbeddedMetastore.from_settings(self.settings).stop()
            stopped.append("metastore")
        if "broker" in state.started:
            from pipelines.kafka.broker import EmbeddedBroker

            EmbeddedBroker.from_settings(self.settings).stop()
            stopped.append("broker")
        self.state_file.unlink(missing_ok=True)
        say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return stopped

    def password(self) -> str:
        path = self.home / PASSWORDS_FILE
        return json.loads(path.read_text()).get(USER, "?") if path.exists() else "(see the api-server log)"

    # --- parts ---------------------------------------------------------------------------------------------

    def _start_services(self, state: StackState, stream: bool, say) -> None:
        settings = self.settings
        if settings.catalog.enabled and settings.catalog.metastore == "embedded":
            from pipelines.platform.metastore import EmbeddedMetastore

            metastore = EmbeddedMetastore.from_settings(settings)
            if metastore.running() is None:
                metastore.start()
                state.started.append("metastore")
            say("metastore: running")
        if settings.kafka.is_embedded:
            from pipelines.kafka.broker import EmbeddedBroker
            from pipelines.kafka.topics import ensure_topics

            broker = EmbeddedBroker.from_settings(settings)
            handle = broker.running()
            if handle is None:
                handle = broker.start()
                state.started.append("broker")
            ensure_topics(settings, handle.bootstrap_servers)
            say(f"broker: {handle.bootstrap_servers}")
        self._save(state)
        if stream:
            command = [sys.executable, "-m", "pipelines", "bronze", "run"]
            state.processes["bronze-stream"] = self._spawn("bronze-stream", command, {**os.environ})
            self._save(state)
            say("bronze stream: started (continuous)")

    def _spawn(self, part: str, command: list[str], env: dict[str, str]) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{part}.log").open("ab") as log:
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True
            )
        return process.pid

    def _run_airflow(self, args: list[str], env: dict[str, str], log_name: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{log_name}.log"
        with log.open("ab") as out:
            done = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, stdout=out, stderr=out)
        if done.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} failed (exit {done.returncode}); see {log}")

    def _wait_healthy(self, state: StackState, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            dead = [part for part, pid in state.processes.items() if not pid_alive(pid)]
            if dead:
                raise StackError(f"{', '.join(dead)} exited during start-up; see {self.logs}/{dead[0]}.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{state.port}/api/v2/monitor/health", timeout=5) as r:
                    health = json.loads(r.read())
            except OSError:
                health = {}
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if health and all((health.get(p) or {}).get("status") == "healthy" for p in parts):
                return health
            time.sleep(2)
        raise StackError(f"Airflow was not healthy after {timeout_s:.0f}s (last: {health}); see {self.logs}")


def _stop_group(pid: int, timeout_s: float) -> bool:
    """SIGTERM the process group ``pid`` leads, SIGKILL what is left after ``timeout_s``; True if it ran."""
    if not pid_alive(pid):
        reap(pid)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)  # the group's stragglers (task runners, uvicorn workers), if any
    except ProcessLookupError:
        pass
    reap(pid)
    return True

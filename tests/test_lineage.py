"""OpenLineage run events: datasets from the registry, START/COMPLETE/FAIL through the file transport and to a
real HTTP backend (a local server receiving the POSTs), and a backend that is down costs a warning, not the job."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from pipelines.config import Settings, load_settings
from pipelines.ops.lineage import datasets, job_run


def _settings(**lineage: str) -> Settings:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE__")}
    environ |= {"LAKEHOUSE_PROFILE": "local"} | {f"LAKEHOUSE__LINEAGE__{k.upper()}": v for k, v in lineage.items()}
    return load_settings(environ=environ)


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_datasets_come_from_the_registry() -> None:
    inputs, outputs = datasets("silver build")
    assert "bronze.events" in inputs and {"silver.events", "silver.quarantine", "ops.quality_results"} <= set(outputs)
    assert datasets("gold build")[0] == ["silver.events"]
    assert set(datasets("replay")[1]) == set(datasets("silver build")[1]) | set(datasets("gold build")[1])
    assert datasets("bronze run")[0] == ["kafka"]
    assert datasets("catalog show") == ([], [])  # not a job: no lineage


def test_a_run_reports_start_then_complete_or_fail(tmp_path: Path) -> None:
    settings = _settings(file=str(tmp_path / "events.jsonl"))
    with job_run(settings, "gold build") as run_id:
        pass
    with pytest.raises(RuntimeError, match="boom"), job_run(settings, "silver build"):
        raise RuntimeError("boom")
    events = _events(tmp_path / "events.jsonl")
    assert [(e["job"]["name"], e["eventType"]) for e in events] == [
        ("gold.build", "START"),
        ("gold.build", "COMPLETE"),
        ("silver.build", "START"),
        ("silver.build", "FAIL"),
    ]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"] == run_id != events[2]["run"]["runId"]
    assert [d["name"] for d in events[1]["inputs"]] == ["silver.events"]
    assert "gold.revenue" in [d["name"] for d in events[1]["outputs"]]
    assert events[1]["outputs"][0]["namespace"] == f"file://{settings.lake_root}"


class _Backend(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Backend.received.append((self.path, json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_events_reach_an_http_backend_and_a_dead_one_does_not_fail_the_job(capfd) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings = _settings(transport="http", url=f"http://127.0.0.1:{server.server_port}")
        with job_run(settings, "maintenance run"):
            pass
    finally:
        server.shutdown()
        server.server_close()
    assert [(path, e["eventType"], e["job"]["name"]) for path, e in _Backend.received] == [
        ("/api/v1/lineage", "START", "maintenance.run"),
        ("/api/v1/lineage", "COMPLETE", "maintenance.run"),
    ]

    dead = _settings(transport="http", url=f"http://127.0.0.1:{server.server_port}")  # closed: nobody listens
    dead = dead.model_copy(update={"lineage": dead.lineage.model_copy(update={"url": "http://127.0.0.1:9"})})
    with job_run(dead, "maintenance run"):
        done = True
    assert done and "lineage event START for maintenance run not delivered" in capfd.readouterr().err

"""OpenLineage run events for every job run: START, then COMPLETE or FAIL, with its input and output datasets.

The datasets come from the table registry, so lineage cannot drift from what the jobs write: a command's
outputs are the tables whose ``writer`` names it, its inputs the upstream tables of those outputs (``kafka``
being the topics). Events go to a JSON-lines file by default (``lineage.file``), to the console, or to an
OpenLineage HTTP backend such as Marquez (``lineage.transport: http`` and ``lineage.url``). Lineage observes
a run; it never decides it: a backend that cannot be reached costs one warning line, not the job.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pipelines.config import Settings
from pipelines.platform.registry import TABLES

PRODUCER = "https://github.com/lakehouse-platform/lakehouse/tree/main/pipelines"
# Commands that run other commands' work: their datasets are the union of those commands'.
COMPOSITE = {
    "run": ("bronze run", "silver build", "gold build"),
    "replay": ("silver build", "gold build"),
}


def datasets(command: str) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of ``command`` (e.g. "silver build") as table names; ``kafka`` for the topics."""
    parts = COMPOSITE.get(command, (command,))
    outputs = sorted(
        spec.full_name for spec in TABLES if any(part in [w.strip() for w in spec.writer.split(",")] for part in parts)
    )
    upstream = {name for spec in TABLES if spec.full_name in outputs for name in spec.upstream}
    return sorted(upstream - set(outputs)), outputs


def is_job(command: str) -> bool:
    return bool(datasets(command)[1])


def _client(settings: Settings):
    from openlineage.client import OpenLineageClient

    config = settings.lineage
    if config.transport == "console":
        from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport

        return OpenLineageClient(transport=ConsoleTransport(ConsoleConfig()))
    if config.transport == "http":
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        # one quick retry: a job waits at most seconds for a backend that is down, then warns and goes on
        retry = {"total": 1, "connect": 1, "read": 1, "backoff_factor": 0.5, "allowed_methods": ["POST"]}
        return OpenLineageClient(transport=HttpTransport(HttpConfig(url=config.url, timeout=5.0, retry=retry)))
    from openlineage.client.transport.file import FileConfig, FileTransport

    path = Path(settings.resolve_path(config.file))
    path.parent.mkdir(parents=True, exist_ok=True)
    return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(path), append=True)))


def _namespace_of(name: str, lake: str) -> str:
    """Tables live in the lake; ``kafka`` is the topics; a path (conf/...) is a file of the project."""
    return "kafka" if name == "kafka" else "file" if "/" in name else lake


@contextmanager
def job_run(settings: Settings, command: str) -> Iterator[str]:
    """Emit START now and COMPLETE or FAIL when the block ends; yields the run id."""
    if settings.lineage.transport == "none":
        yield ""
        return
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState

    run_id = str(uuid.uuid4())
    inputs, outputs = datasets(command)
    namespace = settings.lake_root if "://" in settings.lake_root else f"file://{settings.lake_root}"
    job = Job(namespace=settings.lineage.namespace, name=command.replace(" ", "."))

    def emit(state: RunState) -> None:
        event = RunEvent(
            eventType=state,
            eventTime=datetime.now(UTC).isoformat(),
            producer=PRODUCER,
            run=Run(runId=run_id),
            job=job,
            inputs=[InputDataset(namespace=_namespace_of(n, namespace), name=n) for n in inputs],
            outputs=[OutputDataset(namespace=namespace, name=n) for n in outputs],
        )
        try:
            _client(settings).emit(event)
        except Exception as exc:  # an unreachable lineage backend must not fail the job
            print(f"warning: lineage event {state.value} for {command} not delivered: {exc}", file=sys.stderr)

    emit(RunState.START)
    try:
        yield run_id
    except BaseException:
        emit(RunState.FAIL)
        raise
    emit(RunState.COMPLETE)

"""The audit log: who replayed, erased, skipped a gate or changed an event schema, when, and how it ended.

Entries are appended to ``ops.audit_log`` (a Delta table written with delta-rs: any command can record without
a JVM, and appends from several processes never conflict) by the CLI around the audited commands, whether they
succeed, fail or refuse their input - so Airflow tasks, which run the same commands, are audited too. Nothing
updates or deletes entries (maintenance gives the table no retention). Personal identifiers never enter it: an
erasure records the tenant and the kind of id, not the id. The actor is ``LAKEHOUSE_AUDIT_ACTOR`` when the
caller sets it (e.g. the scheduler: dag and run), else the OS user.

A schema change is recorded by ``schemas check`` (the CI gate for contract changes) when the schema files
differ from the last recorded ones: which files were added, removed or changed.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.platform.batch import read_rows
from pipelines.platform.lake import Lake
from pipelines.platform.registry import AUDIT_SCHEMA

ACTOR_ENV = "LAKEHOUSE_AUDIT_ACTOR"
ACTIONS = ("replay", "erasure", "gate_skip", "schema_change")


def actor() -> str:
    if os.environ.get(ACTOR_ENV):
        return os.environ[ACTOR_ENV]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def record(settings: Settings, entries: list[dict[str, Any]]) -> None:
    """Append ``entries`` (action, command, target, detail, outcome, exit_code) in one commit."""
    import pyarrow as pa
    from deltalake import write_deltalake

    if not entries:
        return
    at, who = datetime.now(UTC), actor()
    rows = [
        {
            "at": at,
            "actor": who,
            **{k: e[k] for k in ("action", "command", "target", "outcome", "exit_code")},
            "detail": json.dumps(e["detail"], sort_keys=True, default=str),
        }
        for e in entries
    ]
    table = pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)
    path = Lake(settings).table("ops", "audit_log")
    write_deltalake(path, table, mode="append", storage_options=settings.lake_storage_options() or None)


def entries(settings: Settings, action: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
    """Recorded entries, oldest first (optionally one action, or from ``since`` on)."""
    import pyarrow.dataset as ds

    condition = None
    if action:
        condition = ds.field("action") == action
    if since:
        bound = ds.field("at") >= since
        condition = bound if condition is None else condition & bound
    rows = read_rows(settings, Lake(settings).table("ops", "audit_log"), filter=condition)
    return sorted(rows.to_pylist(), key=lambda row: row["at"]) if rows is not None else []


def schema_files(schemas_dir: Path) -> dict[str, str]:
    """{path relative to the schema folder: sha256} of every schema file."""
    return {
        str(path.relative_to(schemas_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(schemas_dir.rglob("*.json"))
    }


def schema_change(settings: Settings) -> dict[str, Any] | None:
    """What changed in the schema folder since the last accepted schema change (None: nothing)."""
    now = schema_files(settings.schemas_dir)
    previous = [e for e in entries(settings, action="schema_change") if e["outcome"] == "succeeded"]
    before: dict[str, str] = json.loads(previous[-1]["detail"])["files"] if previous else {}
    if now == before:
        return None
    return {
        "added": sorted(set(now) - set(before)),
        "removed": sorted(set(before) - set(now)),
        "changed": sorted(name for name in set(now) & set(before) if now[name] != before[name]),
        "files": now,
    }

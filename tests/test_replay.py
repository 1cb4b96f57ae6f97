"""Idempotency and replay: same content on every run, other tenants' files untouched, crashes change nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from test_silver import D1, D5, fixture_rows, lake_settings, read_rows

from pipelines import gold, silver
from pipelines.config import Settings
from pipelines.platform.lake import Lake
from pipelines.replay import parse_layers, replay
from pipelines.synthetic.bronze import bronze_table, write_bronze

pytestmark = pytest.mark.integration


def table_paths(settings: Settings) -> dict[str, str]:
    return {
        "silver.events": silver.events_path(settings),
        **{f"gold.{name}": gold.table_path(settings, name) for name in gold.TABLES},
    }


def content(spark, settings: Settings) -> dict[str, list[str]]:
    return {
        name: sorted(repr(sorted(row.items())) for row in read_rows(spark, path))
        for name, path in table_paths(settings).items()
    }


def files_by_tenant(settings: Settings) -> dict[tuple[str, str], set[str]]:
    """Live data files per (table, tenant) from the Delta log's add actions."""
    files: dict[tuple[str, str], set[str]] = {}
    for name, path in table_paths(settings).items():
        actions = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()
        for action in actions:
            files.setdefault((name, action["partition.tenant_id"]), set()).add(action["path"])
    return files


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory) -> Settings:
    settings = lake_settings(tmp_path_factory.mktemp("replay"), catalog=True)  # builds name their tables
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(fixture_rows()))
    silver.build(spark, settings, D1, D5)
    gold.build(spark, settings, D1, D5)
    return settings


def test_building_twice_gives_identical_tables(spark, built: Settings) -> None:
    before = content(spark, built)
    versions = {name: DeltaTable(path).version() for name, path in table_paths(built).items()}
    silver.build(spark, built, D1, D5)
    gold.build(spark, built, D1, D5)
    assert content(spark, built) == before
    assert all(DeltaTable(path).version() == versions[name] + 1 for name, path in table_paths(built).items())
    assert before["silver.events"] and before["gold.daily_active_users"]

    # Each build names its tables in the catalog (re-pointing names another test's lake may hold).
    for name, path in table_paths(built).items():
        assert spark.table(name).count() == spark.read.format("delta").load(path).count() > 0, name
    location = spark.sql("DESCRIBE DETAIL gold.revenue").first()["location"]
    assert location.removeprefix("file:").rstrip("/") == gold.table_path(built, "revenue")
    previous = spark.sql(f"SELECT * FROM gold.revenue VERSION AS OF {versions['gold.revenue']}").collect()
    assert sorted(repr(sorted(row.asDict().items())) for row in previous) == before["gold.revenue"]


def test_replaying_one_tenant_leaves_the_others_untouched(spark, built: Settings) -> None:
    before_content = content(spark, built)
    before_files = files_by_tenant(built)
    result = replay(spark, built, D1, D5, ["t1"])
    assert result.silver is not None and result.silver.late_days == [] and result.silver.days[0] == D1
    assert result.gold is not None and result.gold.days[0] == D1  # exactly the range: no lookback days
    after_files = files_by_tenant(built)
    t2_keys = [key for key in before_files if key[1] == "t2"]
    assert t2_keys and all(after_files[key] == before_files[key] for key in t2_keys)  # same files, not rewritten
    rewritten = [key for key in before_files if key[1] == "t1"]
    assert all(after_files[key].isdisjoint(before_files[key]) for key in rewritten)  # t1 really was rewritten
    assert content(spark, built) == before_content  # ... to the same rows


def test_layers_option() -> None:
    assert parse_layers("gold, silver") == ("silver", "gold")
    with pytest.raises(ValueError, match="expected a comma-separated subset"):
        parse_layers("bronze")


def _snapshot(spark, settings: Settings) -> tuple[int, list[dict[str, Any]]]:
    path = silver.events_path(settings)
    return DeltaTable(path).version(), sorted(read_rows(spark, path), key=lambda r: r["event_id"])


def _data_files(table: Path) -> set[str]:
    """Parquet files under a table's partition folders (the log's own checkpoints excluded)."""
    found = set()
    for folder, subfolders, files in os.walk(table):
        subfolders[:] = [name for name in subfolders if not name.startswith(("_", "."))]
        found.update(os.path.relpath(os.path.join(folder, name), table) for name in files if name.endswith(".parquet"))
    return found


@pytest.mark.slow
def test_job_killed_before_commit_leaves_previous_version(spark, built: Settings, metastore) -> None:
    """A real `silver build` in a child process, SIGKILLed once its first data file exists and before its commit.

    Delta writes data files straight into the partition folders and makes them visible with one log entry
    after every task finished; with one core and several write tasks that entry comes well after the first
    file. The files a killed job leaves behind are orphans that readers never see (VACUUM removes them).
    """
    version, rows = _snapshot(spark, built)
    table = Path(silver.events_path(built))
    before = _data_files(table)
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE")},
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__LAKE__ROOT": built.lake_root,
        "LAKEHOUSE__SILVER__DIMENSIONS_DIR": built.resolve_path(built.silver.dimensions_dir),
        "LAKEHOUSE__SPARK__MASTER": "local[1]",
        "LAKEHOUSE__CATALOG__STATE_DIR": metastore.home,  # attach to the running test metastore
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "silver", "build", "--from", str(D1), "--to", str(D5)],
        cwd=built.home,
        env=environ,
        start_new_session=True,  # driver, JVM and Python workers share one process group
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    new: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while not new:
            assert child.poll() is None, child.stderr.read().decode()[-3000:] if child.stderr else "child died"
            assert time.monotonic() < deadline, "the silver job never wrote a data file"
            time.sleep(0.002)
            new = _data_files(table) - before
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
        if child.stderr:
            child.stderr.close()
    commits = [entry.read_text() for entry in (table / "_delta_log").glob("*.json")]
    assert not any(name in text for name in new for text in commits)  # written, never committed
    assert _snapshot(spark, built) == (version, rows)

"""Bronze ingestion on a real broker, real Spark and real Delta tables.

Proves: every produced message is in bronze.events or bronze.quarantine exactly once (also across
SIGKILLs of the streaming process), quarantined rows carry reasons, the partition layout is
tenant_id/event_date/event_type and pruning reads only the matching files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from conftest import publish, write_config
from deltalake import DeltaTable

from pipelines.bronze import freshness, lag_rows, run_bronze, start_bronze, table_counts
from pipelines.bronze.parse import _json_or_none
from pipelines.bronze.stream import CONSUMER_DEFAULTS, kafka_options
from pipelines.config import ConfigError, Settings, load_settings
from pipelines.contracts.events import encode_event, message_headers, message_key
from pipelines.kafka.producer import EventProducer
from pipelines.platform.lake import Lake
from pipelines.platform.tables import compact
from pipelines.synthetic.generator import GeneratorSpec

pytestmark = pytest.mark.integration


def test_sub_documents_are_compact_sorted_json_of_the_same_values() -> None:
    nested = {"b": 1, "a": {"d": 1e16, "c": 0.1, "big": 2**70}, "é": ["ü", None, True, 2.5e-7]}
    text = _json_or_none(nested, b"{}")
    assert json.loads(text) == nested
    assert text.startswith('{"a":{"big":') and ", " not in text
    assert _json_or_none({"s": "\ud800"}, b"{}") == '{"s":"\ud800"}'  # lone surrogate: json.dumps' escape
    assert _json_or_none({"n": float("nan")}, b'{"n": NaN}') == '{"n":NaN}'  # not silently null
    assert _json_or_none(None, b"{}") is None


def test_python_workers_freeze_their_heap_at_the_first_parse(spark, settings: Settings) -> None:
    """A worker that has parsed holds its long-lived objects (modules, classes, the registry's schemas) in the
    frozen generation, which the full collection PySpark's reused workers run after every task skips."""
    import gc

    import pyarrow as pa

    from pipelines.bronze.parse import TimestampLimits, make_parser
    from pipelines.contracts.registry import SchemaRegistry

    parser = make_parser(SchemaRegistry.load(settings.schemas.dir), TimestampLimits.from_settings(settings))

    def probe(batches):
        for _ in batches:
            pass
        for _ in parser(iter(())):
            pass
        yield pa.RecordBatch.from_pylist([{"frozen": gc.get_freeze_count()}])

    (row,) = spark.range(1, numPartitions=1).mapInArrow(probe, "frozen long").collect()
    assert row.frozen > 10_000, "the worker's imports are frozen"


def test_source_consumers_take_the_defaults_then_the_profile() -> None:
    options = kafka_options(load_settings("local", environ={}), "127.0.0.1:9092")
    assert options["kafka.fetch.max.wait.ms"] == CONSUMER_DEFAULTS["fetch.max.wait.ms"] == "50"
    assert options["kafka.max.poll.records"] == "10000"
    tuned = load_settings("local", environ={"LAKEHOUSE__BRONZE__CONSUMER": '{"fetch.max.wait.ms": "200"}'})
    options = kafka_options(tuned, "127.0.0.1:9092")
    assert options["kafka.fetch.max.wait.ms"] == "200" and options["kafka.max.poll.records"] == "10000"
    assert options["kafka.bootstrap.servers"] == "127.0.0.1:9092"
    with pytest.raises(ConfigError, match=r"bronze\.consumer.*'group\.id'.*not here"):
        load_settings("local", environ={"LAKEHOUSE__BRONZE__CONSUMER": '{"group.id": "mine"}'})


def test_lag_rows_read_offsets_and_tolerate_sources_without_them() -> None:
    from types import SimpleNamespace

    source = SimpleNamespace(endOffset='{"t": {"0": 40, "1": 7}}', latestOffset='{"t": {"0": 50, "1": 7}}')
    rows = lag_rows("q", 3, [source])
    assert [(r["partition"], r["committed_offset"], r["latest_offset"], r["lag"]) for r in rows] == [
        (0, 40, 50, 10),
        (1, 7, 7, 0),
    ]
    for latest in (None, "", "null", "None"):  # a report before the source knows its latest offsets
        assert lag_rows("q", 0, [SimpleNamespace(endOffset=None, latestOffset=latest)]) == []


def coordinates(path: str) -> list[tuple[str, int, int]]:
    table = DeltaTable(path).to_pyarrow_table(columns=["topic", "partition", "offset"])
    return list(zip(*(table.column(c).to_pylist() for c in ("topic", "partition", "offset")), strict=True))


def values(path: str) -> Counter:
    return Counter(DeltaTable(path).to_pyarrow_table(columns=["raw_value"]).column("raw_value").to_pylist())


def test_lag_rows_are_appended_at_most_every_flush_interval(spark, isolated_settings: Settings) -> None:
    """The thread running the query appends the queued lag rows when due, not after every report: two commits
    per micro-batch otherwise ran on the CPUs the batches need."""
    from types import SimpleNamespace

    from pipelines.bronze.monitoring import LAG_FLUSH_SECONDS, LagRecorder

    recorder = LagRecorder(isolated_settings)
    recorder.query_id = "q"

    def report(batch_id: int) -> None:
        source = SimpleNamespace(endOffset='{"t": {"0": 40}}', latestOffset='{"t": {"0": 50}}')
        recorder.onQueryProgress(
            SimpleNamespace(progress=SimpleNamespace(id="q", batchId=batch_id, sources=[source], numInputRows=0))
        )

    def batches() -> list[int]:
        table = DeltaTable(Lake(isolated_settings).table("ops", "bronze_lag"))
        return sorted(table.to_pyarrow_table(columns=["batch_id"]).column("batch_id").to_pylist())

    report(1)
    recorder.flush_when_due(spark)
    assert batches() == [1]
    report(2)
    recorder.flush_when_due(spark)  # too soon: kept queued
    assert batches() == [1]
    time.sleep(LAG_FLUSH_SECONDS)
    recorder.flush_when_due(spark)
    assert batches() == [1, 2]


def test_every_message_lands_once_with_reasons(spark, isolated_settings: Settings, broker) -> None:
    spec = GeneratorSpec(seed=11, tenants=2, users_per_tenant=40, days=2, malformed_rate=0.05, duplicate_rate=0.05)
    messages, truth = publish(isolated_settings, broker.bootstrap_servers, spec)
    query = run_bronze(spark, isolated_settings, broker.bootstrap_servers, once=True)
    assert query.exception() is None
    lake = Lake(isolated_settings)

    events, quarantine = coordinates(lake.bronze_events), coordinates(lake.bronze_quarantine)
    assert len(events) + len(quarantine) == len(messages), "bronze + quarantine == produced"
    assert len(set(events) | set(quarantine)) == len(messages), "no Kafka coordinate twice"
    assert len(events) == truth.unique_valid_events + truth.duplicates, "duplicates are kept in bronze"
    assert len(quarantine) == truth.malformed > 0

    # the exact bytes: bronze holds the valid and duplicate messages, quarantine the malformed ones
    assert values(lake.bronze_events) == Counter(m.value for m in messages if m.kind != "malformed")
    assert values(lake.bronze_quarantine) == Counter(m.value for m in messages if m.kind == "malformed")

    rows = DeltaTable(lake.bronze_quarantine).to_pyarrow_table().to_pylist()
    for row in rows:
        errors = json.loads(row["errors"])
        assert errors and all(e["path"].startswith("$") and e["message"] for e in errors)
        assert row["error_summary"].startswith(errors[0]["path"])
    unknown = [r for r in rows if "unknown event_type" in r["errors"]]
    assert len(unknown) == truth.malformed_by_defect.get("unknown_event_type", 0)

    # typed envelope and derived columns
    bronze = DeltaTable(lake.bronze_events).to_pyarrow_table().to_pylist()
    sample = next(r for r in bronze if r["event_type"] == "order_completed")
    original = json.loads(sample["raw_value"])
    assert sample["event_id"] == original["event_id"]
    assert json.loads(sample["properties"]) == original["properties"]
    assert sample["event_date"] == sample["occurred_at"].date()
    assert sample["trace_id"] and len(sample["trace_id"]) == 32
    by_type = Counter((r["tenant_id"], r["event_type"]) for r in bronze)
    assert table_counts(spark, isolated_settings, lake.bronze_events, ["tenant_id", "event_type"]) == by_type

    # freshness: per partition, committed offsets and event/ingest times
    fresh = freshness(spark, isolated_settings)
    assert sum(r["events"] + r["quarantined"] for r in fresh) == len(messages)
    assert all(r["max_ingested_at"] is not None for r in fresh)
    assert all(r["lag"] == 0 for r in fresh), "caught up: the last recorded lag of every partition is 0"

    # a second catch-up with nothing new adds nothing
    run_bronze(spark, isolated_settings, broker.bootstrap_servers, once=True)
    assert len(coordinates(lake.bronze_events)) == len(events)


def test_partition_layout_and_pruning(spark, isolated_settings: Settings, broker) -> None:
    publish(isolated_settings, broker.bootstrap_servers, GeneratorSpec(seed=5, tenants=3, users_per_tenant=15, days=2))
    run_bronze(spark, isolated_settings, broker.bootstrap_servers, once=True)
    lake = Lake(isolated_settings)
    files = DeltaTable(lake.bronze_events).file_uris()
    for uri in files:
        parts = Path(uri).parent.parts[-3:]
        assert [p.split("=")[0] for p in parts] == ["tenant_id", "event_date", "event_type"], uri

    tenant, day = "acme", "2026-11-02"
    pruned = (
        spark.read.format("delta").load(lake.bronze_events).where(f"tenant_id = '{tenant}' AND event_date = '{day}'")
    )
    plan = pruned._jdf.queryExecution().executedPlan().toString()
    assert "PartitionFilters" in plan and "tenant_id" in plan.split("PartitionFilters")[1].split("]")[0]
    assert (
        pruned.count()
        == table_counts(spark, isolated_settings, lake.bronze_events, ["tenant_id", "event_date"]).get(
            (tenant, dt.date.fromisoformat(day)), 0
        )
        > 0
    )
    # the catalog names the same table
    assert spark.table("bronze.events").where(f"tenant_id = '{tenant}'").count() == (
        spark.read.format("delta").load(lake.bronze_events).where(f"tenant_id = '{tenant}'").count()
    )


def _login(occurred: dt.datetime) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "login",
        "version": 1,
        "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "tenant_id": "acme",
        "user_id": "u1",
        "anonymous_id": None,
        "properties": {"method": "password"},
    }


def test_absurd_timestamps_and_null_values_are_quarantined(spark, isolated_settings: Settings, broker) -> None:
    now = dt.datetime.now(dt.UTC)
    settings = isolated_settings.model_copy(
        update={"bronze": isolated_settings.bronze.model_copy(update={"max_event_age_days": 365})}
    )

    good, ancient, future = _login(now), _login(now - dt.timedelta(days=800)), _login(now + dt.timedelta(days=2))
    only_user_id = _login(now)  # what a producer that knows only user_id sends: no anonymous_id, session, context
    del only_user_id["anonymous_id"]
    topic = settings.kafka.topic_for_event_type["login"]
    with EventProducer(settings, broker.bootstrap_servers) as producer:
        for e in (good, only_user_id, ancient, future):
            producer.send(topic, encode_event(e), message_key(e), message_headers(e))
        producer.send(topic, None, b"acme:u1", [])  # a tombstone
    run_bronze(spark, settings, broker.bootstrap_servers, once=True)
    lake = Lake(settings)
    landed = DeltaTable(lake.bronze_events).to_pyarrow_table().to_pylist()
    assert sorted(r["event_id"] for r in landed) == sorted([good["event_id"], only_user_id["event_id"]])
    assert all(r["anonymous_id"] is None and r["session_id"] is None and r["context"] is None for r in landed)
    reasons = sorted(r["error_summary"] for r in DeltaTable(lake.bronze_quarantine).to_pyarrow_table().to_pylist())
    assert len(reasons) == 3
    assert any("older than" in r for r in reasons) and any("ahead" in r for r in reasons)
    assert any("no value" in r for r in reasons)


def test_compaction_while_streaming(spark, isolated_settings: Settings, broker) -> None:
    """Compaction rewrites files under a running continuous query without losing or doubling rows."""
    settings = isolated_settings.model_copy(
        update={"bronze": isolated_settings.bronze.model_copy(update={"trigger_interval": "1 second"})}
    )
    lake = Lake(settings)
    query, recorder = start_bronze(spark, settings, broker.bootstrap_servers)
    produced = 0
    try:
        for seed in range(3):
            messages, _ = publish(
                settings, broker.bootstrap_servers, GeneratorSpec(seed=seed, tenants=1, users_per_tenant=10, days=1)
            )
            produced += len(messages)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                landed = (
                    len(coordinates(lake.bronze_events)) + len(coordinates(lake.bronze_quarantine))
                    if (DeltaTable.is_deltatable(lake.bronze_events))
                    else 0
                )
                if landed >= produced:
                    break
                time.sleep(0.5)
            compact(spark, lake.bronze_events)
        assert query.exception() is None
    finally:
        query.stop()
        recorder.detach(spark)
    events, quarantine = coordinates(lake.bronze_events), coordinates(lake.bronze_quarantine)
    assert len(events) + len(quarantine) == produced
    assert len(set(events) | set(quarantine)) == produced
    assert len(DeltaTable(lake.bronze_events).history()) > 3
    lag = DeltaTable(lake.table("ops", "bronze_lag")).to_pyarrow_table(columns=["query_id", "lag"]).to_pylist()
    assert lag and {row["query_id"] for row in lag} == {str(query.id)}, "lag recorded per batch of this query"


@pytest.mark.slow
def test_sigkill_and_restart_loses_and_doubles_nothing(isolated_settings: Settings, broker, tmp_path: Path) -> None:
    """Kill the streaming process with SIGKILL several times mid-stream; the final bronze equals the
    produced stream exactly (same multiset of Kafka coordinates)."""
    settings = isolated_settings.model_copy(
        update={
            "bronze": isolated_settings.bronze.model_copy(
                update={"trigger_interval": "1 second", "max_offsets_per_trigger": 400}
            )
        }
    )
    config = write_config(settings, tmp_path / "lakehouse.yaml")
    env = {**os.environ, "LAKEHOUSE_CONFIG": str(config)}
    lake = Lake(settings)
    messages, _ = publish(
        settings, broker.bootstrap_servers, GeneratorSpec(seed=3, tenants=2, users_per_tenant=60, days=2)
    )
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines", "bronze", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"bronze-{kills}.log", "wb"),
        )
        # wait for the process to commit something new, then kill it at a random moment
        before = _committed(lake)
        deadline = time.monotonic() + 180
        while _committed(lake) <= before and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 2.5))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2, "the stream should still have been running when killed"
    final = subprocess.run(
        [sys.executable, "-m", "pipelines", "bronze", "run", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    events, quarantine = coordinates(lake.bronze_events), coordinates(lake.bronze_quarantine)
    landed = Counter(events + quarantine)
    assert all(count == 1 for count in landed.values()), "no message twice"
    assert sum(landed.values()) == len(messages), "no message lost"
    assert values(lake.bronze_events) + values(lake.bronze_quarantine) == Counter(m.value for m in messages)


def _committed(lake: Lake) -> int:
    if not DeltaTable.is_deltatable(lake.bronze_progress):
        return -1
    return DeltaTable(lake.bronze_progress).version()


# Run in a child process: the bronze stream, with the process killed (SIGKILL) right after the events commit of
# the first micro-batch - before its quarantine and progress commits. A targeted fault at the worst moment,
# injected from the test by wrapping the writer; production code has no hook for it.
_KILL_BETWEEN_COMMITS = """
import os, signal, sys
from pipelines import bronze
from pipelines.cli import main

original = bronze.BatchWriter._append

def append_then_die(df, path, txn):
    original(df, path, txn)
    if path.endswith("/bronze/events") and int(txn["txnVersion"]) == 0:
        os.kill(os.getpid(), signal.SIGKILL)

bronze.BatchWriter._append = staticmethod(append_then_die)
sys.exit(main(["bronze", "run", "--once"]))
"""


def _batch_timestamp(checkpoint: str, batch_id: int) -> dt.datetime:
    """The time Spark fixed for a micro-batch in its offset log (line 2 holds the batch metadata)."""
    metadata = json.loads(Path(checkpoint, "offsets", str(batch_id)).read_text().splitlines()[1])
    return dt.datetime.fromtimestamp(metadata["batchTimestampMs"] / 1000, dt.UTC)


@pytest.mark.slow
def test_kill_between_the_events_and_quarantine_commits(isolated_settings: Settings, broker, tmp_path: Path) -> None:
    """Batch 0's events are committed, its quarantine rows are not, when the process dies. The restart replays
    batch 0: bronze.events skips it (its transaction id is recorded), bronze.quarantine writes it - and routes
    every message as the first attempt did, although the limits' boundary has passed in between: messages that
    were just outside a limit stay quarantined (not lost), messages just inside stay events (not doubled)."""
    settings = isolated_settings.model_copy(
        update={
            "bronze": isolated_settings.bronze.model_copy(
                update={"max_offsets_per_trigger": 150, "max_event_age_days": 3, "max_future_skew_minutes": 1}
            )
        }
    )
    config = write_config(settings, tmp_path / "lakehouse.yaml")
    env = {**os.environ, "LAKEHOUSE_CONFIG": str(config)}
    lake = Lake(settings)
    # Both limits flip at `boundary`: before it, `crossing_future` is too far ahead (quarantine) and `crossing_age`
    # young enough (event); after it, the other way round. The first attempt runs before the boundary, the replay
    # after it; routing by the replay's clock would lose the first and double the second.
    published_at = dt.datetime.now(dt.UTC)
    boundary = published_at + dt.timedelta(seconds=150)
    crossing_future = _login(boundary + dt.timedelta(minutes=1))
    crossing_age = _login(boundary - dt.timedelta(days=3))
    topic = settings.kafka.topic_for_event_type["login"]
    with EventProducer(settings, broker.bootstrap_servers) as producer:  # first, so they are in batch 0
        for event in (crossing_future, crossing_age):
            producer.send(topic, encode_event(event), message_key(event), message_headers(event))
    start = (published_at - dt.timedelta(days=2)).date()
    spec = GeneratorSpec(seed=21, tenants=2, users_per_tenant=30, days=2, malformed_rate=0.1, start_date=start)
    messages, _ = publish(settings, broker.bootstrap_servers, spec)
    assert len(messages) > 3 * 150, "needs several micro-batches"

    killed = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_COMMITS], env=env, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    checkpoint = lake.checkpoint(settings.bronze.query_name)
    query_id = json.loads(Path(checkpoint, "metadata").read_text())["id"]
    assert DeltaTable(lake.bronze_events).transaction_version(query_id) == 0  # batch 0's events are in
    assert DeltaTable(lake.bronze_quarantine).transaction_version(query_id) is None  # ... its quarantine rows not
    assert DeltaTable(lake.bronze_progress).to_pyarrow_table().num_rows == 0
    first_attempt = _batch_timestamp(checkpoint, 0)
    assert first_attempt < boundary, f"batch 0 ran {first_attempt - published_at} after publishing; needs < 150 s"
    time.sleep(max(0.0, (boundary - dt.datetime.now(dt.UTC)).total_seconds()) + 1)

    final = subprocess.run(
        [sys.executable, "-m", "pipelines", "bronze", "run", "--once"], env=env, capture_output=True, timeout=600
    )
    assert final.returncode == 0, final.stderr.decode()[-3000:]
    landed = Counter(coordinates(lake.bronze_events) + coordinates(lake.bronze_quarantine))
    assert all(count == 1 for count in landed.values()), "no message twice"
    assert sum(landed.values()) == len(messages) + 2, "no message lost"
    event_ids = {
        r["event_id"] for r in DeltaTable(lake.bronze_events).to_pyarrow_table(columns=["event_id"]).to_pylist()
    }
    assert crossing_age["event_id"] in event_ids, "an event at batch 0's time, routed so on replay"
    assert crossing_future["event_id"] not in event_ids, "quarantined at batch 0's time, routed so on replay"
    # the replayed batch carries the first attempt's time, in both tables
    batch_zero = [
        r["ingested_at"]
        for path in (lake.bronze_events, lake.bronze_quarantine)
        for r in DeltaTable(path).to_pyarrow_table(columns=["ingested_at"]).to_pylist()
        if r["ingested_at"] <= first_attempt
    ]
    assert batch_zero and set(batch_zero) == {first_attempt}
    assert values(lake.bronze_events) + values(lake.bronze_quarantine) == Counter(
        [m.value for m in messages] + [encode_event(crossing_future), encode_event(crossing_age)]
    )


# The same fault one batch later: batch 1 directly follows a batch the process completed, so it is appended
# without Delta's transaction id (pipelines.bronze.replay) - the replay has only the commits' batch names to go by.
_KILL_IN_A_LATER_BATCH = """
import os, signal, sys
from pipelines import bronze
from pipelines.cli import main

original = bronze.BatchWriter._append

def append_then_die(df, path, options):
    original(df, path, options)
    if path.endswith("/bronze/events") and options["userMetadata"].endswith(" batch 1"):
        os.kill(os.getpid(), signal.SIGKILL)

bronze.BatchWriter._append = staticmethod(append_then_die)
sys.exit(main(["bronze", "run", "--once"]))
"""


def _batch_names(path: str) -> list[str]:
    """The batch each commit of a table names, oldest first (commits without one are left out)."""
    history = sorted(DeltaTable(path).history(), key=lambda commit: commit["version"])
    names = [commit.get("userMetadata", "") for commit in history]
    return [name.rsplit(" ", 1)[-1] for name in names if name.startswith("bronze ")]


@pytest.mark.slow
def test_kill_between_commits_of_a_batch_written_without_a_transaction_id(
    isolated_settings: Settings, broker, tmp_path: Path
) -> None:
    """Batch 0 is written in full; batch 1's events are committed - with no Delta transaction id, only the
    batch's name - when the process dies. The restart replays batch 1: bronze.events skips it, quarantine and
    progress write it, and every message lands exactly once."""
    settings = isolated_settings.model_copy(
        update={"bronze": isolated_settings.bronze.model_copy(update={"max_offsets_per_trigger": 150})}
    )
    env = {**os.environ, "LAKEHOUSE_CONFIG": str(write_config(settings, tmp_path / "lakehouse.yaml"))}
    lake = Lake(settings)
    spec = GeneratorSpec(seed=23, tenants=2, users_per_tenant=30, days=2, malformed_rate=0.2)
    messages, _ = publish(settings, broker.bootstrap_servers, spec)
    assert len(messages) > 3 * 150, "needs several micro-batches"

    killed = subprocess.run([sys.executable, "-c", _KILL_IN_A_LATER_BATCH], env=env, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    query_id = json.loads(Path(lake.checkpoint(settings.bronze.query_name), "metadata").read_text())["id"]
    assert _batch_names(lake.bronze_events) == ["0", "1"]
    assert DeltaTable(lake.bronze_events).transaction_version(query_id) == 0, "batch 1 carries no transaction id"
    assert _batch_names(lake.bronze_quarantine) == ["0"]
    assert _batch_names(lake.bronze_progress) == ["0"]

    final = subprocess.run(
        [sys.executable, "-m", "pipelines", "bronze", "run", "--once"], env=env, capture_output=True, timeout=600
    )
    assert final.returncode == 0, final.stderr.decode()[-3000:]
    assert _batch_names(lake.bronze_events)[:3] == ["0", "1", "2"], "the replay of batch 1 added nothing"
    assert _batch_names(lake.bronze_quarantine)[:2] == ["0", "1"]
    landed = Counter(coordinates(lake.bronze_events) + coordinates(lake.bronze_quarantine))
    assert all(count == 1 for count in landed.values()), "no message twice"
    assert sum(landed.values()) == len(messages), "no message lost"
    assert values(lake.bronze_events) + values(lake.bronze_quarantine) == Counter(m.value for m in messages)


@pytest.mark.slow
def test_catch_up_runs_exit_zero_every_time(isolated_settings: Settings, broker, tmp_path: Path) -> None:
    """`bronze run --once` again and again against the same broker and lake: each run that did its work exits 0
    (a scheduler marks anything else failed), with or without new messages since the last run."""
    config = write_config(isolated_settings, tmp_path / "lakehouse.yaml")
    env = {**os.environ, "LAKEHOUSE_CONFIG": str(config)}
    produced = 0
    for run in range(5):
        if run != 3:  # one run finds nothing new
            messages, _ = publish(
                isolated_settings,
                broker.bootstrap_servers,
                GeneratorSpec(seed=100 + run, tenants=1, users_per_tenant=10, days=1),
            )
            produced += len(messages)
        done = subprocess.run(
            [sys.executable, "-m", "pipelines", "bronze", "run", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"run {run}: exit {done.returncode}\n{done.stderr[-3000:]}"
        lake = Lake(isolated_settings)
        assert len(coordinates(lake.bronze_events)) + len(coordinates(lake.bronze_quarantine)) == produced
        assert "bronze.events by tenant and type" in done.stdout

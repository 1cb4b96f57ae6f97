"""Airflow orchestration: the DAGs load cleanly, a replay's conf is refused before any table is touched, the
bronze sensor's rule, and `dag.test()` of the medallion and replay DAGs running the real Spark jobs (under
spark-submit, on a Spark connection) and gates on generated bronze, checked against the generator's truth."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from deltalake import DeltaTable
from test_gold import assert_gold_matches_truth

from pipelines import gold, silver
from pipelines.config import Settings, load_settings
from pipelines.orchestration.freshness import bronze_caught_up
from pipelines.orchestration.requests import RequestError, chunks, parse_replay, replay_commands, run_interval
from pipelines.platform.lake import Lake
from pipelines.platform.processes import pid_alive
from pipelines.synthetic.bronze import bronze_rows_from_generated, bronze_table, write_bronze
from pipelines.synthetic.generator import GeneratorSpec, generate
from pipelines.synthetic.users import sample_users, write_users_file

CHECKOUT = Path(__file__).resolve().parents[1]
DAGS = CHECKOUT / "dags"
SPEC = GeneratorSpec(seed=29, tenants=2, users_per_tenant=25, days=3, duplicate_rate=0.05, late_rate=0.05)
FIRST = SPEC.start_date
LAST = SPEC.start_date + timedelta(days=SPEC.days - 1)
# The stream's lag report that proves bronze complete through LAST (and nothing later: a scheduled run waits).
CAUGHT_UP_AT = datetime.combine(LAST + timedelta(days=2), datetime.min.time(), UTC)


# --- conf validation and the plan (no Airflow, no Spark) ---------------------------------------------------------


def _settings(environ: dict[str, str] | None = None) -> Settings:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_") or k == "LAKEHOUSE_HOME"}
    return load_settings(environ={**base, "LAKEHOUSE_PROFILE": "local", **(environ or {})})


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"from": "2026-13-01", "to": "2026-11-03"}, r"from: Input should be a valid date"),
        ({"from": "2026-11-05", "to": "2026-11-01"}, r"'from' \(2026-11-05\) is after 'to' \(2026-11-01\); swap them"),
        ({"from": "2026-11-01", "to": "2026-11-02", "layers": ["bronze"]}, r"layers \['bronze'\]: expected"),
        ({"from": "2026-11-01", "to": "2026-11-02", "layers": []}, r"expected a non-empty subset"),
        ({"to": "2026-11-02"}, r"from: Field required"),
        ({"from": "2026-11-01", "to": "2026-11-02", "tenant": ["acme"]}, r"tenant: unknown key"),
        ({"from": "2020-01-01", "to": "2026-11-02"}, r"exceed orchestration.replay_max_days \(731\)"),
    ],
)
def test_a_bad_replay_conf_is_refused_with_what_to_change(conf: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_replay(conf, _settings())


def test_a_replay_is_planned_in_chunks_silver_before_gold(tmp_path: Path) -> None:
    assert chunks(date(2026, 11, 1), date(2026, 11, 10), 4) == [
        (date(2026, 11, 1), date(2026, 11, 4)),
        (date(2026, 11, 5), date(2026, 11, 8)),
        (date(2026, 11, 9), date(2026, 11, 10)),
    ]
    assert chunks(date(2026, 11, 1), date(2026, 11, 1), 7) == [(date(2026, 11, 1), date(2026, 11, 1))]
    from pipelines.orchestration.requests import ReplayRequest

    request = ReplayRequest.model_validate({"from": "2026-11-01", "to": "2026-11-05", "tenants": ["acme"]})
    plan = replay_commands(request, _settings({"LAKEHOUSE__ORCHESTRATION__REPLAY_CHUNK_DAYS": "3"}))
    common = ["--tenant", "acme"]
    assert plan["silver"] == [
        ["replay", "--from", "2026-11-01", "--to", "2026-11-03", "--layers", "silver", *common],
        ["replay", "--from", "2026-11-04", "--to", "2026-11-05", "--layers", "silver", *common],
    ]
    assert [args[2:5:2] for args in plan["gold"]] == [["2026-11-01", "2026-11-03"], ["2026-11-04", "2026-11-05"]]


def test_a_run_builds_its_interval_or_the_days_its_conf_names() -> None:
    start, end = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    after = datetime(2026, 11, 20, 6, tzinfo=UTC)
    assert run_interval({}, start, end, after) == (date(2026, 11, 2), date(2026, 11, 2))
    weekly = run_interval({}, start, start + timedelta(days=7), after)
    assert weekly == (date(2026, 11, 2), date(2026, 11, 8))
    assert run_interval({}, None, None, after) == (date(2026, 11, 19), date(2026, 11, 19))  # manual: yesterday
    assert run_interval({"from": "2026-11-01", "to": "2026-11-04"}, None, None, after) == (
        date(2026, 11, 1),
        date(2026, 11, 4),
    )
    with pytest.raises(RequestError, match="is after"):
        run_interval({"from": "2026-11-04", "to": "2026-11-01"}, None, None, after)


# --- the bronze sensor's rule (real Delta tables) -----------------------------------------------------------------


def _write_lag(spark, settings: Settings, rows: list[tuple[str, int, int, datetime]]) -> None:
    from pyspark.sql.pandas.types import from_arrow_schema

    from pipelines.platform.registry import LAG_SCHEMA

    records = [("q", 0, topic, partition, 100 - lag, 100, lag, at) for topic, partition, lag, at in rows]
    frame = spark.createDataFrame(records, from_arrow_schema(LAG_SCHEMA))
    frame.write.format("delta").mode("append").save(Lake(settings).table("ops", "bronze_lag"))


@pytest.mark.integration
def test_bronze_is_complete_once_the_stream_reports_no_lag_after_the_interval(spark, tmp_path: Path) -> None:
    settings = _settings({"LAKEHOUSE__LAKE__ROOT": str(tmp_path / "lake")})
    end = datetime(2026, 11, 4, tzinfo=UTC)
    state = bronze_caught_up(settings, end)
    assert not state.caught_up and "no lag reports yet" in state.reason

    _write_lag(spark, settings, [("user.activity", 0, 0, end - timedelta(minutes=5))])  # before the end: no proof
    state = bronze_caught_up(settings, end)
    assert not state.caught_up and "has not reported since" in state.reason

    after = end + timedelta(minutes=1)
    _write_lag(spark, settings, [("user.activity", 0, 0, after), ("user.activity", 1, 7, after)])
    state = bronze_caught_up(settings, end)
    assert not state.caught_up and "7 offsets behind on 1 partition(s)" in state.reason

    later = end + timedelta(minutes=2)
    _write_lag(spark, settings, [("user.activity", 1, 0, later)])  # the latest report per partition counts
    state = bronze_caught_up(settings, end)
    assert state.caught_up, state.reason


# --- the DAGs in Airflow -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A migrated Airflow metadata DB (SQLite) in a temp AIRFLOW_HOME, the project's DAGs, and the Spark
    connection on a local master; set in this process too, since `dag.test()` runs the tasks here."""
    home = tmp_path_factory.mktemp("airflow")
    environ = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_LAKEHOUSE_SPARK": '{"conn_type": "spark", "host": "local[2]"}',
    }
    migrated = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environ.items():
            patch.setenv(key, value)
        yield environ


def _dagbag(airflow_env: dict[str, str]):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.mark.integration
def test_dags_load_with_owner_retries_tags_and_docs(airflow_env: dict[str, str]) -> None:
    bag = _dagbag(airflow_env)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= {
        "lakehouse_medallion",
        "lakehouse_replay",
        "lakehouse_bronze_catchup",
        "lakehouse_maintenance",
        "lakehouse_erasure",
        "lakehouse_alerts",
    }
    for dag_id in bag.dag_ids:
        dag = bag.get_dag(dag_id)
        assert "lakehouse" in dag.tags, dag_id
        assert dag.doc_md and dag_id in dag.doc_md, dag_id
        for task in dag.tasks:
            assert task.owner == "data-platform", (dag_id, task.task_id)
            refusing = task.task_id in {"plan", "silver_chunks", "gold_chunks", "wait_for_bronze", "validate"}
            assert task.retries >= 2 or refusing, (dag_id, task.task_id)  # those fail for a reason a retry keeps
            assert task.execution_timeout is not None, (dag_id, task.task_id)
    assert bag.get_dag("lakehouse_alerts").max_active_runs == 1  # one evaluator at a time: one notification
    medallion = bag.get_dag("lakehouse_medallion")  # the run dated D builds D: backfill dates are the days built
    assert type(medallion.timetable).__name__ == "CronDataIntervalTimetable"
    spark_tasks = [t for d in bag.dags.values() for t in d.tasks if type(t).__name__ == "LakehouseJobOperator"]
    assert spark_tasks and all(t._conn_id == "lakehouse_spark" for t in spark_tasks)
    assert all(t._driver_memory == "3g" for t in spark_tasks)  # the local profile's heap, on spark-submit's line
    java_options = {t.conf["spark.driver.extraJavaOptions"] for t in spark_tasks}
    assert java_options == {"-XX:G1HeapRegionSize=32m"}  # and its GC regions sized to Spark's memory pages


@pytest.mark.integration
def test_alerts_dag_notifies_an_incident_once(airflow_env: dict[str, str], tmp_path: Path) -> None:
    """`dag.test()` of lakehouse_alerts on a lake whose bronze quarantined half of the last hour's messages."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from pipelines.platform.registry import PROGRESS_SCHEMA
    from tests.support.webhook import WebhookReceiver

    receiver = WebhookReceiver()
    rules = tmp_path / "alerts.yaml"
    rules.write_text("rules:\n  - {name: bad_input, kind: quarantine_rate, max_pct: 5.0, window_hours: 1}\n")
    environ = {
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__LAKE__ROOT": str(tmp_path / "lake"),
        "LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_path / "broker"),  # none running: lag is not a rule here
        "LAKEHOUSE__OPS__STATE_DIR": str(tmp_path / "ops"),
        "LAKEHOUSE__OPS__ALERT_RULES": str(rules),
        "LAKEHOUSE__OPS__WEBHOOK_URL": receiver.url,
    }
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in environ.items():
                patch.setenv(key, value)
            now = datetime.now(UTC)
            batch = {
                "query_id": "q",
                "batch_id": 0,
                "topic": "user.activity",
                "partition": 0,
                "min_offset": 0,
                "max_offset": 99,
                "events": 50,
                "quarantined": 50,
                "max_occurred_at": now,
                "max_kafka_timestamp": now,
                "max_ingested_at": now,
            }
            progress = Lake(load_settings()).bronze_progress
            write_deltalake(progress, pa.Table.from_pylist([batch], schema=PROGRESS_SCHEMA))
            dag = _dagbag(airflow_env).get_dag("lakehouse_alerts")
            first = dag.test()
            assert str(first.state) == "success"
            assert [(b["status"], b["key"], b["severity"]) for b in receiver.received] == [
                ("firing", "bad_input:bronze.quarantine", "critical")
            ]
            assert "50 of 100 messages quarantined" in receiver.received[0]["message"]
            second = dag.test()
            assert str(second.state) == "success" and len(receiver.received) == 1  # still open: not sent again
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def dag_lake(spark, broker, airflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """Generated bronze (duplicates and late events included) in a lake of its own; the DAGs see it through the
    environment, like a deployment's profile."""
    root = tmp_path_factory.mktemp("dag_lake")
    messages, truth = generate(SPEC, _settings().kafka.topic_for_event_type)
    write_users_file(sample_users(messages), root / "dims" / "users.csv")
    environ = {
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__LAKE__ROOT": str(root / "lake"),
        "LAKEHOUSE__SILVER__DIMENSIONS_DIR": str(root / "dims"),
        "LAKEHOUSE__CATALOG__METASTORE": "none",  # path-based tables: no Hive client start in every Spark task
        "LAKEHOUSE__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,  # the run's broker: the stack starts none
        "LAKEHOUSE__SPARK__MASTER": "local[2]",
        "LAKEHOUSE__BRONZE__MAX_EVENT_AGE_DAYS": "36500",
        "LAKEHOUSE__ORCHESTRATION__REPLAY_CHUNK_DAYS": "2",  # the 3-day replay runs as two chunks per layer
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environ.items():
            patch.setenv(key, value)
        settings = load_settings()
        write_bronze(spark, Lake(settings).bronze_events, bronze_table(bronze_rows_from_generated(messages)))
        yield settings, truth


def _versions(settings: Settings) -> dict[str, int | None]:
    paths = {"silver.events": silver.events_path(settings)}
    paths |= {f"gold.{name}": gold.table_path(settings, name) for name in gold.TABLES}
    return {name: DeltaTable(p).version() if DeltaTable.is_deltatable(p) else None for name, p in paths.items()}


def _task_states(run) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for instance in run.get_task_instances():
        states.setdefault(instance.task_id, []).append(str(instance.state))
    return states


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_replay_dag_rebuilds_the_range_in_chunks_through_the_gates(spark, dag_lake, airflow_env) -> None:
    settings, truth = dag_lake
    dag = _dagbag(airflow_env).get_dag("lakehouse_replay")

    refused = dag.test(run_conf={"from": LAST.isoformat(), "to": FIRST.isoformat()})
    assert str(refused.state) == "failed"
    states = _task_states(refused)
    assert states["plan"] == ["failed"] and "success" not in str(states)
    assert _versions(settings) == dict.fromkeys(_versions(settings))  # nothing written: no table exists yet

    unknown = dag.test(run_conf={"from": FIRST.isoformat(), "to": LAST.isoformat(), "tenants": ["nobody"]})
    assert str(unknown.state) == "failed" and _task_states(unknown)["plan"] == ["failed"]

    run = dag.test(run_conf={"from": FIRST.isoformat(), "to": LAST.isoformat()})
    assert str(run.state) == "success", _task_states(run)
    states = _task_states(run)
    assert states["replay_silver"] == ["success", "success"]  # 3 days in chunks of 2
    assert states["replay_gold"] == ["success", "success"]
    assert_gold_matches_truth(spark, settings, truth)

    # The DAG's Params schema refuses a conf before a run exists (the UI, the REST API and the CLI check it).
    from airflow.sdk.exceptions import ParamValidationError

    before = _versions(settings)
    with pytest.raises(ParamValidationError, match="'platinum' is not one of"):
        dag.test(run_conf={"from": FIRST.isoformat(), "to": LAST.isoformat(), "layers": ["platinum"]})
    with pytest.raises(ParamValidationError, match="param from"):
        dag.test(run_conf={"from": "2026-02-30", "to": LAST.isoformat()})
    assert _versions(settings) == before


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_medallion_dag_waits_for_bronze_then_builds_silver_and_gold(spark, dag_lake, airflow_env) -> None:
    from pipelines.bronze import ensure_tables

    settings, truth = dag_lake
    ensure_tables(spark, settings)  # the stream's tables; its lag report says it caught up after the interval
    _write_lag(spark, settings, [(topic, 0, 0, CAUGHT_UP_AT) for topic in settings.kafka.topics])
    before = _versions(settings)
    dag = _dagbag(airflow_env).get_dag("lakehouse_medallion")
    run = dag.test(run_conf={"from": FIRST.isoformat(), "to": LAST.isoformat()})
    assert str(run.state) == "success", _task_states(run)
    after = _versions(settings)
    assert all(after[name] > (before[name] if before[name] is not None else -1) for name in after), (before, after)
    assert_gold_matches_truth(spark, settings, truth)


# --- end to end: the real scheduler, dag-processor and api-server ------------------------------------------------


def _api(url: str, token: str | None = None, body: dict[str, Any] | None = None) -> Any:
    import json
    import urllib.request

    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_replay_trigger_and_medallion_backfill_run_on_the_scheduler(spark, dag_lake, tmp_path: Path) -> None:
    """`airflow dags trigger lakehouse_replay --conf ...` and `airflow backfill create` on lakehouse_medallion against
    a started stack; success seen through the REST API, gold checked."""
    import time

    from pipelines.orchestration.stack import SQLITE_BUSY_TIMEOUT_S, LocalStack

    settings, truth = dag_lake
    settings = settings.model_copy(
        update={"orchestration": settings.orchestration.model_copy(update={"airflow_home": str(tmp_path / "af")})}
    )
    stack = LocalStack(settings)
    state = stack.up(stream=False, say=lambda _message: None)
    try:
        env = stack.airflow_env(state.port)

        def airflow(*args: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stderr[-2000:]
            return done

        # The CLI's writes wait for the scheduler's SQLite lock instead of failing after sqlite3's 5 s default.
        probe = "from airflow import settings; from sqlalchemy import text; settings.configure_orm(); "
        probe += "print(settings.engine.connect().execute(text('PRAGMA busy_timeout')).scalar())"
        waited = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        assert waited.stdout.split()[-1:] == [str(SQLITE_BUSY_TIMEOUT_S * 1000)], waited.stderr[-2000:]

        token = _api(f"{stack.url}/auth/token", body={"username": "admin", "password": stack.password()})
        token = token["access_token"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # the dag-processor parses the project's DAGs
            dags = {d["dag_id"] for d in _api(f"{stack.url}/api/v2/dags", token)["dags"]}
            if "lakehouse_replay" in dags:
                break
            time.sleep(3)
        assert "lakehouse_replay" in dags
        before = _versions(settings)
        airflow("dags", "unpause", "lakehouse_replay")
        conf = f'{{"from": "{FIRST}", "to": "{FIRST + timedelta(days=1)}", "tenants": ["acme"]}}'  # one chunk
        airflow("dags", "trigger", "lakehouse_replay", "--conf", conf, "--run-id", "e2e_replay")
        state_of_run = None
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline and state_of_run not in {"success", "failed"}:
            time.sleep(5)
            state_of_run = _api(f"{stack.url}/api/v2/dags/lakehouse_replay/dagRuns/e2e_replay", token)["state"]
        assert state_of_run == "success"
        instances = _api(f"{stack.url}/api/v2/dags/lakehouse_replay/dagRuns/e2e_replay/taskInstances", token)
        ran = {(t["task_id"], t["map_index"]): t["state"] for t in instances["task_instances"]}
        assert ran[("replay_silver", 0)] == ran[("replay_gold", 0)] == "success", ran
        after = _versions(settings)
        assert all(after[name] > (before[name] if before[name] is not None else -1) for name in after), (before, after)
        assert_gold_matches_truth(spark, settings, truth)

        # `airflow backfill create` on the scheduled DAG: one run per day of the range, on the scheduler. Unpausing
        # also schedules the latest interval, whose sensor waits: no lag report after CAUGHT_UP_AT says it may go.
        from pipelines.bronze import ensure_tables

        ensure_tables(spark, settings)
        _write_lag(spark, settings, [(topic, 0, 0, CAUGHT_UP_AT) for topic in settings.kafka.topics])
        before = _versions(settings)
        airflow("dags", "unpause", "lakehouse_medallion")
        day = FIRST.isoformat()
        airflow("backfill", "create", "--dag-id", "lakehouse_medallion", "--from-date", day, "--to-date", day)
        runs_url = f"{stack.url}/api/v2/dags/lakehouse_medallion/dagRuns?run_type=backfill"
        states: list[str] = []
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline and (not states or any(s not in {"success", "failed"} for s in states)):
            time.sleep(5)
            backfill_runs = _api(runs_url, token)["dag_runs"]
            states = [run["state"] for run in backfill_runs]
        assert states == ["success"], backfill_runs
        assert backfill_runs[0]["data_interval_start"].startswith(day)
        run_id = backfill_runs[0]["dag_run_id"]
        xcom = f"{runs_url.split('?')[0]}/{quote(run_id)}/taskInstances/interval/xcomEntries/return_value"
        built = _api(xcom, token)
        assert built["value"] in ({"from": day, "to": day}, str({"from": day, "to": day})), built  # the day asked for
        after = _versions(settings)
        assert all(after[name] > before[name] for name in after), (before, after)
        assert_gold_matches_truth(spark, settings, truth)
    finally:
        stopped = stack.down(say=lambda _message: None)
    assert {"api-server", "scheduler", "dag-processor", "triggerer"} <= set(stopped)
    assert not any(pid_alive(pid) for pid in state.processes.values())

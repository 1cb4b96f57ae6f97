"""
### lakehouse_medallion

Builds one interval (a day by default) of **silver** and then **gold** from bronze, through the quality gates.

1. `interval` - the days to build: the data interval of a scheduled or backfill run (the run dated D builds
   the day D, once D is over); for a manual run the
   conf's `from`/`to` (e.g. `{"from": "2026-11-02", "to": "2026-11-03"}`), else yesterday.
2. `wait_for_bronze` - waits (reschedule mode, no worker slot held) until the bronze stream has caught up past
   the interval's end; fails loudly after `orchestration.bronze_wait_timeout_minutes`.
3. `build_silver` - `python -m pipelines silver build`: dedup, upcast, PII, stitching, sessions, plus the days
   late events changed; the bronze and silver gates decide whether anything is published.
4. `build_gold` - `python -m pipelines gold build`: the six gold tables with the late-data lookback; publishes
   all or none of them.

Each Spark task runs on the `lakehouse_spark` connection and its log shows the gate results and the Data Docs
path. A failed gate fails the task and leaves every published table as it was. Backfill with
`airflow backfill create --dag-id lakehouse_medallion --from-date ... --to-date ...`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, PokeReturnValue, task

from pipelines.orchestration.spark_submit import LakehouseJobOperator
from pipelines.orchestration.tasks import (
    TAGS,
    bronze_is_complete,
    dag_settings,
    day_schedule,
    default_args,
    interval,
    start_date,
)

settings = dag_settings()
config = settings.orchestration
DAYS = "{{ ti.xcom_pull(task_ids='interval', key='%s') }}"

with DAG(
    dag_id="lakehouse_medallion",
    schedule=day_schedule(config.schedule),
    start_date=start_date(settings),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(settings),
    tags=[*TAGS, "silver", "gold"],
    doc_md=__doc__,
    params={
        "from": Param(None, type=["null", "string"], format="date", description="manual runs: first day"),
        "to": Param(None, type=["null", "string"], format="date", description="manual runs: last day"),
    },
) as dag:

    @task(multiple_outputs=True)
    def interval_of_run(**context) -> dict[str, str]:
        return interval(context)

    @task.sensor(
        task_id="wait_for_bronze",
        mode="reschedule",
        poke_interval=config.bronze_poke_interval_s,
        timeout=timedelta(minutes=config.bronze_wait_timeout_minutes).total_seconds(),
        retries=0,  # a timeout is the alert: bronze did not catch up
    )
    def wait_for_bronze(days: dict[str, str]) -> PokeReturnValue:
        import logging

        return PokeReturnValue(is_done=bronze_is_complete(settings, days, logging.getLogger("airflow.task")))

    days = interval_of_run.override(task_id="interval")()
    build_silver = LakehouseJobOperator(
        task_id="build_silver",
        conn_id=config.spark_conn_id,
        name="lakehouse-silver",
        command=["silver", "build", "--from", DAYS % "from", "--to", DAYS % "to"],
    )
    build_gold = LakehouseJobOperator(
        task_id="build_gold",
        conn_id=config.spark_conn_id,
        name="lakehouse-gold",
        command=["gold", "build", "--from", DAYS % "from", "--to", DAYS % "to"],
    )
    wait_for_bronze(days) >> build_silver >> build_gold

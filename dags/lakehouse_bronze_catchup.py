"""
### lakehouse_bronze_catchup

For teams that do not run the continuous bronze stream: `python -m pipelines bronze run --once` reads every
topic up to the offsets present at its start (Spark's AvailableNow trigger), commits exactly once, and stops.
Its schedule is `orchestration.catchup_schedule` (none by default: trigger it by hand or from another DAG).
Run it before `lakehouse_medallion`, whose sensor then sees bronze caught up.
"""

from __future__ import annotations

from airflow.sdk import DAG

from pipelines.orchestration.spark_submit import LakehouseJobOperator
from pipelines.orchestration.tasks import TAGS, dag_settings, default_args, start_date

settings = dag_settings()
config = settings.orchestration

with DAG(
    dag_id="lakehouse_bronze_catchup",
    schedule=config.catchup_schedule,
    start_date=start_date(settings),
    catchup=False,
    max_active_runs=1,  # two catch-ups on one checkpoint would only queue behind each other
    default_args=default_args(settings),
    tags=[*TAGS, "bronze"],
    doc_md=__doc__,
) as dag:
    LakehouseJobOperator(
        task_id="bronze_catchup",
        conn_id=config.spark_conn_id,
        name="lakehouse-bronze",
        command=["bronze", "run", "--once"],
    )

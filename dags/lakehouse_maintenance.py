"""
### lakehouse_maintenance

Daily table maintenance: `python -m pipelines maintenance run` on the Spark connection.

- **retention**: days older than `maintenance.retention_days[<table>]` are deleted (whole partitions);
- **compaction**: `OPTIMIZE` of the bronze and ops tables (safe while the stream appends);
- **vacuum**: files no version within `maintenance.vacuum_retention_hours` (default: 7 days) needs.

Delta writes checkpoints every 10 commits by itself. Each run's actions are recorded in `ops.maintenance_runs`.
"""

from __future__ import annotations

from airflow.sdk import DAG

from pipelines.orchestration.spark_submit import LakehouseJobOperator
from pipelines.orchestration.tasks import TAGS, dag_settings, default_args, start_date

settings = dag_settings()
config = settings.orchestration

with DAG(
    dag_id="lakehouse_maintenance",
    schedule="@daily",
    start_date=start_date(settings),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(settings),
    tags=[*TAGS, "maintenance"],
    doc_md=__doc__,
) as dag:
    LakehouseJobOperator(
        task_id="maintain_tables",
        conn_id=config.spark_conn_id,
        name="lakehouse-maintenance",
        command=["maintenance", "run"],
    )

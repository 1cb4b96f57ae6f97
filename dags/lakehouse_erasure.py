"""
### lakehouse_erasure

GDPR/CCPA erasure of one person: `python -m pipelines erase` on the Spark connection.

```
airflow dags trigger lakehouse_erasure --conf '{"tenant": "acme", "user_id": "u_123"}'
```

Name the tenant and exactly one of `user_id` / `anonymous_id` (as producers sent them). The person's rows leave
bronze, quarantine, silver and the users dimension; the gold days they counted in are rebuilt; the touched
tables are vacuumed past their retention. The request, its outcome and the rows deleted per table are recorded
in `ops.erasure_requests` (without the id). The id travels to the Spark job in its environment, so it appears in
no command line and no task log.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from pipelines.orchestration.spark_submit import LakehouseJobOperator
from pipelines.orchestration.tasks import TAGS, check_erasure_conf, dag_settings, default_args, start_date

settings = dag_settings()
config = settings.orchestration

with DAG(
    dag_id="lakehouse_erasure",
    schedule=None,
    start_date=start_date(settings),
    catchup=False,
    max_active_runs=1,  # erasures rewrite the same tables: one at a time
    default_args=default_args(settings),
    tags=[*TAGS, "gdpr"],
    doc_md=__doc__,
    params={
        "tenant": Param(type="string", minLength=1, description="the person's tenant"),
        "user_id": Param(None, type=["null", "string"], description="the user id (or give anonymous_id)"),
        "anonymous_id": Param(None, type=["null", "string"], description="an anonymous visitor id"),
    },
) as dag:

    @task(retries=0)  # a malformed request stays malformed
    def validate(**context) -> None:
        check_erasure_conf(dict(context["dag_run"].conf or {}))

    validate() >> LakehouseJobOperator(
        task_id="erase",
        conn_id=config.spark_conn_id,
        name="lakehouse-erase",
        command=["erase", "--tenant", "{{ dag_run.conf['tenant'] }}"],
        env_vars={
            "LAKEHOUSE_ERASE_USER_ID": "{{ dag_run.conf.get('user_id') or '' }}",
            "LAKEHOUSE_ERASE_ANONYMOUS_ID": "{{ dag_run.conf.get('anonymous_id') or '' }}",
        },
    )

"""
### lakehouse_alerts

Evaluates the alert rules of `conf/alerts.yaml` every few minutes (`ops.alert_schedule`) against the platform's
status - Kafka lag, the bronze stream, table freshness, quarantine rate, gate failures, gold event-rate
anomalies and tenants gone silent - and notifies the log and the webhook (`ops.webhook_url_env`):

- **firing** once when an incident starts, **resolved** once when its condition clears;
- open incidents live in `ops.alert_events`, so any worker can evaluate and a restart forgets nothing;
- a webhook that stays down fails the task; its retry sends what was not delivered.

The same rules back `python -m pipelines status` (exit 1 when one is breached).
"""

from __future__ import annotations

from airflow.sdk import DAG, task

from pipelines.orchestration.tasks import TAGS, check_alerts, dag_settings, default_args, start_date

settings = dag_settings()

with DAG(
    dag_id="lakehouse_alerts",
    schedule=settings.ops.alert_schedule,
    start_date=start_date(settings),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(settings),
    tags=[*TAGS, "operations"],
    doc_md=__doc__,
) as dag:

    @task
    def evaluate_and_notify() -> dict[str, int]:
        import logging

        return check_alerts(dag_settings(), logging.getLogger("airflow.task"))

    evaluate_and_notify()

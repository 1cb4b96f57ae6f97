"""
### lakehouse_replay

Rebuilds a date range from bronze through the same gates as the daily run - after a bug fix, a late
backfill of bronze, or a changed rule. Trigger it with a conf:

```
airflow dags trigger lakehouse_replay \
  --conf '{"from": "2026-01-01", "to": "2026-01-31", "tenants": ["acme"], "layers": ["silver", "gold"]}'
```

- `tenants` (default: every tenant bronze holds) and `layers` (default: silver and gold) are optional.
- `plan` validates the conf before any table is touched: a bad date, a reversed range, an unknown tenant or
  layer, or a range over `orchestration.replay_max_days` fails it with a message saying what to change.
- The range is cut into chunks of `orchestration.replay_chunk_days` days. `replay_silver` rebuilds every
  chunk's silver, at most `orchestration.replay_max_parallel` at a time, each retried on its own.
  `replay_gold` then rebuilds gold chunk by chunk: its rolling metrics read silver days of the neighbouring
  chunks.

A replay rewrites exactly the range: no late-day discovery, no lookback. The rolling gold metrics of the 27
days after the range read replayed days too; replay those as well if silver changed.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from pipelines.orchestration.spark_submit import LakehouseJobOperator
from pipelines.orchestration.tasks import TAGS, dag_settings, default_args, plan_replay, start_date
from pipelines.replay import LAYERS

settings = dag_settings()
config = settings.orchestration

with DAG(
    dag_id="lakehouse_replay",
    schedule=None,
    start_date=start_date(settings),
    catchup=False,
    default_args=default_args(settings),
    tags=[*TAGS, "replay", "silver", "gold"],
    doc_md=__doc__,
    params={
        "from": Param(type="string", format="date", description="first day to rebuild (YYYY-MM-DD)"),
        "to": Param(type="string", format="date", description="last day to rebuild (YYYY-MM-DD)"),
        "tenants": Param([], type="array", items={"type": "string"}, description="empty: every tenant"),
        "layers": Param(list(LAYERS), type="array", items={"type": "string", "enum": list(LAYERS)}),
        "skip_gates": Param(False, type="boolean", description="publish without running the quality gates"),
    },
) as dag:

    @task(retries=0)  # a refused conf is refused again: no retry
    def plan(**context) -> dict[str, list[list[str]]]:
        import logging

        return plan_replay(settings, dict(context["dag_run"].conf or {}), logging.getLogger("airflow.task"))

    @task(retries=0)
    def chunks_of(commands: dict[str, list[list[str]]], layer: str) -> list[list[str]]:
        return commands[layer]

    commands = plan()
    replay_silver = LakehouseJobOperator.partial(
        task_id="replay_silver",
        conn_id=config.spark_conn_id,
        name="lakehouse-replay-silver",
        max_active_tis_per_dagrun=config.replay_max_parallel,
    ).expand(command=chunks_of.override(task_id="silver_chunks")(commands, "silver"))
    replay_gold = LakehouseJobOperator.partial(
        task_id="replay_gold",
        conn_id=config.spark_conn_id,
        name="lakehouse-replay-gold",
        max_active_tis_per_dagrun=1,
        trigger_rule="none_failed",  # runs when silver was not asked for (its mapped task is then skipped)
    ).expand(command=chunks_of.override(task_id="gold_chunks")(commands, "gold"))
    replay_silver >> replay_gold

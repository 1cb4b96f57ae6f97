"""What the DAGs' Python tasks do, so the DAG files only wire them: DAG defaults from the settings, the days a
run builds, the bronze sensor's poke, and a replay's plan."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, time, timedelta
from typing import Any

from pipelines.config import Settings, load_settings
from pipelines.orchestration.freshness import bronze_caught_up
from pipelines.orchestration.requests import RequestError, parse_replay, replay_commands, run_interval

TAGS = ["lakehouse"]


def dag_settings() -> Settings:
    """The profile the DAGs run with (``LAKEHOUSE_PROFILE``, ``LAKEHOUSE_HOME``; read when a DAG file is parsed)."""
    return load_settings()


def start_date(settings: Settings) -> datetime:
    """The first interval any DAG may run (``orchestration.start_date``, midnight UTC)."""
    return datetime.combine(settings.orchestration.start_date, time(), tzinfo=UTC)


def day_schedule(expression: str | None) -> Any:
    """``expression`` (cron or preset, UTC) as a data-interval timetable: the run with logical date D covers
    [D, next D) and starts once that interval is over, so it builds the day D, and `airflow backfill create
    --from-date D1 --to-date D2` builds exactly D1..D2. (Airflow 3's default cron timetable gives a run a
    zero-length interval at its date: a backfill would build the days before the ones asked for.)"""
    if expression is None:
        return None
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(expression, timezone="UTC")


def default_args(settings: Settings) -> dict[str, Any]:
    """Owner, retries with exponential backoff and a timeout for every task (``orchestration`` in the settings),
    and for the Spark tasks the profile's ``spark.driver.memory`` and ``spark.driver.extraJavaOptions``:
    spark-submit starts the driver JVM before the job builds its session, so those settings must be on
    spark-submit's command line (Airflow hands a default only to the operators that take it)."""
    config = settings.orchestration
    return {
        "owner": config.owner,
        "retries": config.retries,
        "retry_delay": timedelta(minutes=config.retry_delay_minutes),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=config.task_timeout_minutes),
        "driver_memory": settings.spark.conf.get("spark.driver.memory"),
        "java_options": settings.spark.conf.get("spark.driver.extraJavaOptions"),  # LakehouseJobOperator's own
    }


def interval(context: dict[str, Any]) -> dict[str, str]:
    """The run's days as ``{"from": ..., "to": ...}`` (ISO dates) for the Spark tasks' command lines."""
    run = context["dag_run"]
    first, last = run_interval(
        dict(run.conf or {}), context.get("data_interval_start"), context.get("data_interval_end"), run.run_after
    )
    return {"from": first.isoformat(), "to": last.isoformat()}


def bronze_is_complete(settings: Settings, days: dict[str, str], log: Any) -> bool:
    """The sensor's poke: bronze has caught up past the end of the run's last day (UTC)."""
    end = datetime.fromisoformat(days["to"]).replace(tzinfo=UTC) + timedelta(days=1)
    state = bronze_caught_up(settings, end)
    log.info("%s", state.reason)
    gc.collect()  # the poke's delta-rs handles end now, not at the task process's teardown (see cli.parser.main)
    return state.caught_up


def plan_replay(settings: Settings, conf: dict[str, Any], log: Any) -> dict[str, list[list[str]]]:
    """Validate a replay's conf against the lake and cut it into per-layer chunk commands (see requests)."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        request = parse_replay(conf, settings)
    except RequestError as exc:  # the message is the task's failure reason in the UI; no traceback, no retry
        raise AirflowFailException(str(exc)) from None
    plan = replay_commands(request, settings)
    log.info(
        "replay %s..%s, tenants %s, layers %s: %s",
        request.first,
        request.last,
        request.tenants or "all",
        request.layers,
        ", ".join(f"{len(commands)} {layer} chunk(s)" for layer, commands in plan.items()),
    )
    return plan


def check_erasure_conf(conf: dict[str, Any]) -> None:
    """An erasure names a tenant and exactly one of user_id / anonymous_id; anything else fails the run."""
    from airflow.sdk.exceptions import AirflowFailException

    unknown = sorted(set(conf) - {"tenant", "user_id", "anonymous_id"})
    if unknown:
        raise AirflowFailException(
            f"invalid erasure conf: unknown key(s) {unknown}; expected tenant, user_id, anonymous_id"
        )
    if not conf.get("tenant"):
        raise AirflowFailException("invalid erasure conf: 'tenant' is required")
    if bool(conf.get("user_id")) == bool(conf.get("anonymous_id")):
        raise AirflowFailException("invalid erasure conf: give exactly one of 'user_id' and 'anonymous_id'")


def check_alerts(settings: Settings, log: Any) -> dict[str, int]:
    """The lakehouse_alerts task: evaluate conf/alerts.yaml and notify (firing once per incident, resolved when
    it clears). A webhook that stays down fails the task (Airflow retries it; nothing undelivered is lost)."""
    from pipelines.ops.alerts import check_now, notify

    _status, alerts = check_now(settings)
    sent = notify(settings, alerts)
    for notification in sent:
        log.warning("%s %s: %s", notification.state, notification.alert.key, notification.alert.message)
    log.info("%d condition(s) hold, %d notification(s) sent", len(alerts), len(sent))
    return {"holding": len(alerts), "sent": len(sent)}

"""Requests Airflow runs carry in their conf: a replay (`airflow dags trigger lakehouse_replay --conf ...`) and
a manual medallion run's interval. Validated before any table is touched, with messages that say exactly what
is wrong, because a scheduler retrying a malformed request only repeats the mistake.

A valid replay becomes a plan: the range cut into chunks of ``orchestration.replay_chunk_days`` days, each
rebuilt by one Spark job per layer, so a long backfill retries one chunk at a time instead of starting over.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.config import Settings
from pipelines.platform.batch import known_tenants, table_exists
from pipelines.platform.lake import Lake
from pipelines.replay import LAYERS


class RequestError(ValueError):
    """A run's conf cannot be served; the message names the key and what to send instead."""


class ReplayRequest(BaseModel):
    """``{"from": "2026-01-01", "to": "2026-01-31", "tenants": ["acme"], "layers": ["silver", "gold"]}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    first: date = Field(alias="from")
    last: date = Field(alias="to")
    tenants: list[str] | None = None  # None or empty: every tenant bronze holds
    layers: list[str] = Field(default_factory=lambda: list(LAYERS))
    skip_gates: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ReplayRequest:
        if self.first > self.last:
            raise ValueError(f"'from' ({self.first}) is after 'to' ({self.last}); swap them")
        unknown = sorted(set(self.layers) - set(LAYERS))
        if unknown or not self.layers:
            raise ValueError(f"layers {self.layers}: expected a non-empty subset of {list(LAYERS)}")
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "conf"
        reason = (
            "unknown key (expected from, to, tenants, layers, skip_gates)"
            if item["type"] == "extra_forbidden"
            else item["msg"]
        )
        parts.append(f"{key}: {reason.removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_replay(conf: dict[str, Any], settings: Settings) -> ReplayRequest:
    """The replay the conf asks for, checked against the lake: the range's length and the tenants bronze holds."""
    try:
        request = ReplayRequest.model_validate(conf)
    except ValidationError as exc:
        raise RequestError(f"invalid replay conf: {_describe(exc)}") from None
    days = (request.last - request.first).days + 1
    limit = settings.orchestration.replay_max_days
    if days > limit:
        raise RequestError(
            f"invalid replay conf: {days} days from {request.first} to {request.last} exceed "
            f"orchestration.replay_max_days ({limit}); split the range or raise the limit"
        )
    bronze = Lake(settings).bronze_events
    if not table_exists(settings, bronze):
        raise RequestError(f"no bronze table at {bronze}: nothing to replay from; run bronze first")
    if request.tenants:
        known = known_tenants(settings, bronze)
        unknown = sorted(set(request.tenants) - set(known))
        if unknown:
            raise RequestError(
                f"invalid replay conf: tenants {unknown} have no rows in bronze.events; known tenants: {known}"
            )
    return request


def chunks(first: date, last: date, size_days: int) -> list[tuple[date, date]]:
    """[first, last] cut into consecutive ranges of at most ``size_days`` days."""
    cut, start = [], first
    while start <= last:
        end = min(last, start + timedelta(days=size_days - 1))
        cut.append((start, end))
        start = end + timedelta(days=1)
    return cut


def replay_commands(request: ReplayRequest, settings: Settings) -> dict[str, list[list[str]]]:
    """Per layer, the ``python -m pipelines`` arguments of each chunk's job (silver chunks all run before gold's:
    gold's rolling metrics read the silver days of neighbouring chunks)."""
    plan: dict[str, list[list[str]]] = {layer: [] for layer in LAYERS}
    for first, last in chunks(request.first, request.last, settings.orchestration.replay_chunk_days):
        for layer in request.layers:
            args = ["replay", "--from", first.isoformat(), "--to", last.isoformat(), "--layers", layer]
            args += [item for tenant in request.tenants or () for item in ("--tenant", tenant)]
            args += ["--skip-gates"] if request.skip_gates else []
            plan[layer].append(args)
    return plan


def run_interval(
    conf: dict[str, Any], interval_start: datetime | None, interval_end: datetime | None, run_after: datetime
) -> tuple[date, date]:
    """The days a medallion run builds: a scheduled run its data interval [start, end) as whole days; a manual
    run (Airflow 3 gives it no logical date) the conf's ``from``/``to``, else the day before ``run_after``."""
    if conf.get("from") or conf.get("to"):
        try:
            first = date.fromisoformat(str(conf.get("from") or conf.get("to")))
            last = date.fromisoformat(str(conf.get("to") or conf.get("from")))
        except ValueError as exc:
            raise RequestError(f"invalid run conf: 'from'/'to' must be dates like 2026-01-31 ({exc})") from None
        if first > last:
            raise RequestError(f"invalid run conf: 'from' ({first}) is after 'to' ({last}); swap them")
        return first, last
    if interval_start is not None and interval_end is not None and interval_end > interval_start:
        return interval_start.date(), (interval_end - timedelta(microseconds=1)).date()
    day = run_after.date() - timedelta(days=1)
    return day, day

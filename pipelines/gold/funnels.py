"""Funnels: the ``conf/funnels.yaml`` config and the gold.funnels table (definition: pipelines.gold docstring)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.config import read_yaml_mapping
from pipelines.gold.activity import is_user_event

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

MAX_FUNNEL_WINDOW_MINUTES = 7 * 24 * 60


class FunnelConfigError(ValueError):
    """conf/funnels.yaml is invalid; the message names the file, funnel and key."""


class Funnel(BaseModel):
    """One funnel of conf/funnels.yaml: its steps are event types, in order, each reached within the window."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1)
    steps: tuple[str, ...] = Field(min_length=2)
    window_minutes: int = Field(ge=1, le=MAX_FUNNEL_WINDOW_MINUTES)

    @field_validator("steps", mode="before")
    @classmethod
    def _distinct_event_types(cls, steps: object) -> object:
        if isinstance(steps, list):
            if not all(isinstance(step, str) and step for step in steps):
                raise ValueError("steps are event type names")
            if len(set(steps)) != len(steps):
                raise ValueError("an event type may appear once")
            return tuple(steps)
        return steps


class _FunnelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    funnels: list[Funnel]


def load_funnels(path: str | Path, event_types: Collection[str] | None = None) -> list[Funnel]:
    """The funnels of ``path``; with ``event_types`` (the registry's), a step that is not one is an error."""
    source = str(path)
    raw = read_yaml_mapping(path, "funnels file (gold.funnels)", FunnelConfigError, "a mapping with a 'funnels' list")
    try:
        funnels = _FunnelsFile.model_validate(raw).funnels
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
        raise FunnelConfigError(f"{source}: {where}: {first['msg']}, got {first.get('input')!r}") from None
    for index, funnel in enumerate(funnels):
        where = f"{source}: funnels[{index}]"
        if any(other.name == funnel.name for other in funnels[:index]):
            raise FunnelConfigError(f"{where}.name: {funnel.name!r} is already the name of an earlier funnel")
        unknown = [step for step in funnel.steps if event_types is not None and step not in event_types]
        if unknown:
            known = ", ".join(sorted(event_types or ()))
            raise FunnelConfigError(f"{where}.steps: {', '.join(unknown)} not a registered event type; known: {known}")
    return funnels


def funnel_steps(silver: DataFrame, days: Sequence[date], funnel: Funnel) -> DataFrame:
    """Users per step for one funnel: greedy earliest matching, which finds the deepest chain of each attempt."""
    from pyspark.sql import functions as F

    step_events = silver.filter(is_user_event() & F.col("event_type").isin(*funnel.steps)).select(
        "tenant_id", "user_key", "event_type", "occurred_at", "event_date"
    )
    attempts = step_events.filter(
        (F.col("event_type") == funnel.steps[0]) & F.col("event_date").isin(list(days))
    ).select("tenant_id", "user_key", F.col("event_date").alias("date"), F.col("occurred_at").alias("t1"))
    deadline = F.col("t1") + F.expr(f"INTERVAL {funnel.window_minutes} MINUTES")
    keys = ["tenant_id", "user_key", "date", "t1"]
    for k in range(2, len(funnel.steps) + 1):
        candidates = step_events.filter(F.col("event_type") == funnel.steps[k - 1]).select(
            F.col("tenant_id").alias("c_tenant"), F.col("user_key").alias("c_user"), F.col("occurred_at").alias("c_t")
        )
        condition = (
            (F.col("tenant_id") == F.col("c_tenant"))
            & (F.col("user_key") == F.col("c_user"))
            & (F.col("c_t") >= F.col(f"t{k - 1}"))
            & (F.col("c_t") <= deadline)
        )
        attempts = attempts.join(candidates, condition, "left").groupBy(*keys).agg(F.min("c_t").alias(f"t{k}"))
        keys.append(f"t{k}")
    level = sum((F.col(f"t{k}").isNotNull().cast("int") for k in range(1, len(funnel.steps) + 1)), F.lit(0))
    best = attempts.groupBy("tenant_id", "user_key", "date").agg(F.max(level).alias("level"))
    counted = best.groupBy("tenant_id", "date").agg(
        *[F.sum((F.col("level") >= k).cast("long")).alias(f"u{k}") for k in range(1, len(funnel.steps) + 1)]
    )
    rows = F.explode(
        F.array(
            *[
                F.struct(
                    F.lit(k).alias("step_index"),
                    F.lit(step).alias("step"),
                    F.col(f"u{k}").alias("users"),
                    F.round(F.col(f"u{k}") / F.col("u1"), 4).alias("conversion_from_start"),
                    F.round(F.try_divide(F.col(f"u{k}"), F.col(f"u{max(k - 1, 1)}")), 4).alias(
                        "conversion_from_previous"  # null when nobody reached the previous step
                    ),
                )
                for k, step in enumerate(funnel.steps, start=1)
            ]
        )
    )
    return counted.select("tenant_id", "date", F.lit(funnel.name).alias("funnel"), rows.alias("s")).select(
        "tenant_id",
        "date",
        "funnel",
        "s.step_index",
        "s.step",
        "s.users",
        "s.conversion_from_start",
        "s.conversion_from_previous",
    )


def funnels(silver: DataFrame, days: Sequence[date], configured: Sequence[Funnel]) -> DataFrame:
    from functools import reduce

    return reduce(lambda a, b: a.unionByName(b), [funnel_steps(silver, days, f) for f in configured])

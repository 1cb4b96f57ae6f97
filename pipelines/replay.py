"""``replay``: rebuild silver, then gold, for a date range (and tenants) from bronze alone.

A replay rewrites exactly [D1, D2]: no late-day discovery in silver, no lookback days in gold, so it
touches only the partitions of the range and the tenants named (other tenants keep the same files and
versions). Bronze is immutable, so replaying an already-built range yields the same rows. Rolling gold
metrics of the 27 days after D2 read the replayed days too: replay them as well if silver changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from pipelines.config import Settings

if TYPE_CHECKING:  # the builds load Spark-side code: imported when a replay runs, not to validate a request
    from pipelines import gold, silver

LAYERS = ("silver", "gold")


@dataclass
class ReplayResult:
    silver: silver.SilverResult | None
    gold: gold.GoldResult | None


def parse_layers(text: str) -> tuple[str, ...]:
    """``"silver,gold"`` -> ("silver", "gold"), in pipeline order, refusing unknown names."""
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(LAYERS)
    if unknown or not chosen:
        raise ValueError(f"--layers {text!r}: expected a comma-separated subset of {', '.join(LAYERS)}")
    return tuple(layer for layer in LAYERS if layer in chosen)


def replay(
    spark,
    settings: Settings,
    first: date,
    last: date,
    tenants: Sequence[str] | None = None,
    layers: Sequence[str] = LAYERS,
    progress: Callable[[str], None] | None = None,
    skip_gates: bool = False,
) -> ReplayResult:
    """Rebuild exactly [first, last] from bronze through the same gates as the daily builds."""
    from pipelines import gold, silver

    silver_result = (
        silver.build(
            spark, settings, first, last, tenants, include_late=False, skip_gates=skip_gates, progress=progress
        )
        if "silver" in layers
        else None
    )
    gold_result = (
        gold.build(spark, settings, first, last, tenants, lookback=False, skip_gates=skip_gates, progress=progress)
        if "gold" in layers
        else None
    )
    return ReplayResult(silver_result, gold_result)

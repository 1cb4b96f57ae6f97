"""Has bronze caught up past a point in time? What the medallion DAG's sensor asks before it builds a day.

Bronze is complete through ``T`` once the stream has reported, at or after ``T``, that it is behind by zero
offsets on every Kafka partition it reads: every message published before that report - so every message
published before ``T`` - is in bronze. The stream writes those reports to ``ops.bronze_lag`` (continuous runs
and ``bronze run --once`` alike; an idle stream still reports). The check reads only the reports since ``T``
with delta-rs (file statistics skip the rest), so a sensor poking every few minutes starts no JVM.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pipelines.config import Settings
from pipelines.platform.batch import read_rows
from pipelines.platform.lake import Lake


@dataclass(frozen=True)
class CatchUp:
    caught_up: bool
    reason: str  # one line for the task log: why the sensor waits or goes on


def bronze_caught_up(settings: Settings, since: datetime) -> CatchUp:
    """Whether the latest lag report at or after ``since`` (timezone-aware) is zero on every partition."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    path = Lake(settings).table("ops", "bronze_lag")
    reports = read_rows(
        settings, path, columns=["topic", "partition", "lag", "reported_at"], filter=ds.field("reported_at") >= since
    )
    if reports is None:
        return CatchUp(False, f"no lag reports yet ({path}): is the bronze stream running?")
    if reports.num_rows == 0:
        return CatchUp(False, f"the bronze stream has not reported since {since.isoformat()}")
    latest = reports.group_by(["topic", "partition"]).aggregate([("reported_at", "max")])
    newest = reports.join(latest, ["topic", "partition"]).filter(
        pc.equal(pc.field("reported_at"), pc.field("reported_at_max"))
    )
    behind = newest.filter(pc.field("lag") > 0)
    if behind.num_rows:
        worst = max(behind.to_pylist(), key=lambda row: row["lag"])
        return CatchUp(
            False,
            f"bronze is {pc.sum(behind['lag']).as_py()} offsets behind on {behind.num_rows} partition(s) "
            f"(most: {worst['topic']}[{worst['partition']}], {worst['lag']})",
        )
    return CatchUp(True, f"bronze caught up on {newest.num_rows} partition(s) after {since.isoformat()}")

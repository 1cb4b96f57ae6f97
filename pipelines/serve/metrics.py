"""The slices of gold the metrics API answers, read straight from the published Delta tables.

Reads go through delta-rs and Arrow, not Spark: an answer for one tenant and a date range touches only that
tenant's day partitions (partition pruning on ``tenant_id``/``date``), so a request costs milliseconds and the
server starts no JVM. Every request first brings the table to its latest version (``update_incremental``
reads only the new log entries), so a gold publication is visible to the next request without a restart, and
the version is part of the cache key: a cached answer is served only while the table is at the version it was
computed from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from pipelines.config import Settings
from pipelines.platform.lake import Lake

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable


@dataclass(frozen=True)
class Metric:
    """One API resource: ``GET /v1/<path>`` answers rows of ``gold.<table>`` for a tenant and a date range,
    optionally narrowed by equality ``filters`` on the named columns."""

    path: str
    table: str
    summary: str
    filters: tuple[str, ...] = ()
    order: tuple[str, ...] = ("date",)


METRICS = (
    Metric("active-users", "daily_active_users", "DAU, WAU, MAU, new and returning users per day"),
    Metric(
        "event-counts",
        "event_counts",
        "events and distinct users per event type and day",
        ("event_type",),
        ("date", "event_type"),
    ),
    Metric("sessions", "sessions", "sessions, bounce rate and durations per day"),
    Metric(
        "revenue",
        "revenue",
        "orders, revenue and discounts per currency and day (amounts as decimal strings)",
        ("currency",),
        ("date", "currency"),
    ),
    Metric(
        "funnels",
        "funnels",
        "users reaching each step of each configured funnel, with conversion",
        ("funnel",),
        ("date", "funnel", "step_index"),
    ),
    Metric(
        "anomalies",
        "event_rate_anomalies",
        "event-type volumes against their trailing median, with the anomaly flag",
        ("event_type", "flagged"),
        ("date", "event_type"),
    ),
)


class NotPublished(Exception):
    """The gold table does not exist yet: nothing has been published."""


class FilterError(ValueError):
    """A filter value that does not fit its column's type; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class GoldReader:
    """Open handles on the gold tables, each brought to its latest version before a read."""

    def __init__(self, settings: Settings) -> None:
        self._lake = Lake(settings)
        self._storage = settings.lake_storage_options() or None
        self._tables: dict[str, DeltaTable] = {}
        self._locks = {metric.table: threading.Lock() for metric in METRICS}

    def path(self, table: str) -> str:
        return self._lake.table("gold", table)

    def version(self, table: str) -> int:
        """The table's newest version: only log entries newer than the last request are read (a cache hit costs
        no more than this)."""
        from deltalake import DeltaTable

        with self._locks[table]:
            handle = self._tables.get(table)
            if handle is None:
                if not DeltaTable.is_deltatable(self.path(table), storage_options=self._storage):
                    raise NotPublished(f"gold.{table} has not been published yet: run `gold build` first")
                handle = self._tables[table] = DeltaTable(self.path(table), storage_options=self._storage)
            else:
                handle.update_incremental()
            return handle.version()

    def dataset(self, table: str, version: int) -> pa.dataset.Dataset:
        """Exactly ``version``'s files (a publication between the version check and this read is not mixed in)."""
        from deltalake import DeltaTable

        with self._locks[table]:
            handle = self._tables[table]
            if handle.version() == version:
                return handle.to_pyarrow_dataset()
        return DeltaTable(self.path(table), version=version, storage_options=self._storage).to_pyarrow_dataset()


def select_rows(
    metric: Metric, dataset: pa.dataset.Dataset, tenant: str, first: date, last: date, filters: dict[str, str]
) -> pa.Table:
    """``tenant``'s rows of ``metric`` from ``first`` to ``last`` (inclusive), sorted, without tenant_id."""
    import pyarrow.dataset as ds

    condition = (ds.field("tenant_id") == tenant) & (ds.field("date") >= first) & (ds.field("date") <= last)
    for column, raw in filters.items():
        condition &= ds.field(column) == _typed(dataset.schema.field(column).type, column, raw)
    rows = dataset.to_table(filter=condition)
    return rows.drop_columns(["tenant_id"]).sort_by([(c, "ascending") for c in metric.order])


def _typed(arrow_type: pa.DataType, column: str, raw: str) -> Any:
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        if raw.lower() not in {"true", "false"}:
            raise FilterError(column, f"{column}: {raw!r} is not true or false")
        return raw.lower() == "true"
    return raw


class ResponseCache:
    """Rendered answers keyed by (request, table version), least recently used evicted first.

    When a table moves to a new version, the answers computed from its older versions can never be served
    again; they are dropped at once rather than left to age out.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, table: str, version: int, key: tuple) -> tuple[bytes, str] | None:
        with self._lock:
            if self._versions.get(table, version) < version:
                self._entries = OrderedDict((k, v) for k, v in self._entries.items() if k[0] != table)
            self._versions[table] = max(version, self._versions.get(table, version))
            found = self._entries.get((table, version, key))
            if found is not None:
                self._entries.move_to_end((table, version, key))
            return found

    def put(self, table: str, version: int, key: tuple, value: tuple[bytes, str]) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._entries[(table, version, key)] = value
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

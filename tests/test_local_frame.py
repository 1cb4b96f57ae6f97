"""Rows the driver holds become a DataFrame in the JVM, without Spark's Python workers and without changing a value."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import pytest

from pipelines.platform.spark import local_frame

SCHEMA = "name string, count long, ratio double, pad binary, day date, at timestamp"
ROWS = [
    ("a", 1, 0.5, b"\x00\x01", date(2026, 1, 31), datetime(2026, 1, 31, 23, 59, 59, 123456, tzinfo=UTC)),
    ("b", None, None, None, None, datetime(2026, 2, 1, 0, 0, 1)),  # naive: local time, as pyspark reads it
    (None, -(2**63), float("inf"), b"", date(1, 1, 1), None),
]


@pytest.fixture
def local_time_not_utc(monkeypatch: pytest.MonkeyPatch):
    """Python's local time 5 hours behind UTC: a naive datetime read as UTC would then come back shifted."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _executed_plan(frame) -> str:
    return frame._jdf.queryExecution().executedPlan().toString()


def test_driver_rows_become_a_local_relation_with_every_value_kept(spark, local_time_not_utc) -> None:
    frame = local_frame(spark, ROWS, SCHEMA)
    pickled = spark.createDataFrame(ROWS, SCHEMA)  # pyspark's own reading of the same rows: the reference
    assert frame.schema == pickled.schema
    assert frame.collect() == pickled.collect()
    assert "LocalTableScan" in _executed_plan(frame)
    assert "ExistingRDD" in _executed_plan(pickled)  # what runs Python workers to unpickle the rows


def test_no_rows_keep_the_schema(spark) -> None:
    frame = local_frame(spark, [], "tenant_id string, signed_up_at timestamp")
    assert frame.collect() == []
    assert frame.columns == ["tenant_id", "signed_up_at"]
    assert "LocalTableScan" in _executed_plan(frame)

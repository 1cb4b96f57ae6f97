"""Whether a bronze table already holds a micro-batch (``pipelines.bronze.replay``), on real Delta tables.

Proves: the newest commit of the query decides (its batch or an earlier one), other writers' commits in between
do not, the answer is found beyond the first page of history, a commit older than the batch's time ends the
search, and a log cleaned up past the batch's time is an error instead of a guess.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pipelines.bronze.replay import CLOCK_MARGIN_SECONDS, ReplayCheck, UnprovableReplayError, batch_marker

pytestmark = pytest.mark.integration

QUERY, OTHER = "3f0c5d9e-query", "77aa01b2-other"


def _checkpoint(tmp_path: Path, batch_id: int, batch_time: float) -> str:
    """A streaming checkpoint's offset log entry as Spark writes it: version, batch metadata, source offsets."""
    offsets = tmp_path / "checkpoint" / "offsets"
    offsets.mkdir(parents=True, exist_ok=True)
    metadata = {"batchWatermarkMs": 0, "batchTimestampMs": int(batch_time * 1000), "conf": {}}
    (offsets / str(batch_id)).write_text(f"v1\n{json.dumps(metadata)}\n" + '{"events.abc":{"0":150}}\n')
    return str(tmp_path / "checkpoint")


def _commits(spark, path: str, markers: list[str | None]) -> None:
    for marker in markers:
        writer = spark.range(1).write.format("delta").mode("append")
        if marker is not None:
            writer = writer.option("userMetadata", marker)
        writer.save(path)


def test_the_newest_commit_of_the_query_decides(spark, tmp_path: Path) -> None:
    table = str(tmp_path / "events")
    _commits(spark, table, [batch_marker(QUERY, 2), batch_marker(QUERY, 3), batch_marker(OTHER, 9), None])
    checkpoint = _checkpoint(tmp_path, 3, time.time())
    assert ReplayCheck(spark, checkpoint, QUERY, 3).holds(table)
    _checkpoint(tmp_path, 4, time.time())
    assert not ReplayCheck(spark, checkpoint, QUERY, 4).holds(table), "batch 3 is the query's newest commit"
    _checkpoint(tmp_path, 0, time.time())
    assert not ReplayCheck(spark, checkpoint, OTHER.replace("other", "fresh"), 0).holds(table)


def test_the_answer_beyond_the_first_page_of_history(spark, tmp_path: Path) -> None:
    table = str(tmp_path / "events")
    _commits(spark, table, [batch_marker(QUERY, 5)] + [None] * 20)  # compactions, other writers
    checkpoint = _checkpoint(tmp_path, 5, time.time() - 60)
    assert ReplayCheck(spark, checkpoint, QUERY, 5).holds(table)


def _clean_log_before(spark, table: str, version: int) -> None:
    """What Delta's log cleanup leaves: a checkpoint at ``version`` and no commit files before it."""
    spark.sql(f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES ('delta.checkpointInterval' = '1')")
    _commits(spark, table, [None])
    log = Path(table, "_delta_log")
    assert any(p.name.endswith(".checkpoint.parquet") for p in log.iterdir())
    for entry in log.iterdir():  # commits, their checksums and Hadoop's hidden .crc files of both
        number = entry.name.lstrip(".").split(".")[0]
        if number.isdigit() and int(number) < version and not entry.name.endswith("checkpoint.parquet"):
            entry.unlink()


def test_a_commit_older_than_the_batch_ends_the_search(spark, tmp_path: Path) -> None:
    table = str(tmp_path / "quarantine")
    _commits(spark, table, [batch_marker(QUERY, 1), None, None])  # versions 0-2
    _clean_log_before(spark, table, 2)  # version 3 (table property) and 4 (append) are written now
    batch_time = time.time()
    old = batch_time - CLOCK_MARGIN_SECONDS - 600
    os.utime(Path(table, "_delta_log", f"{2:020d}.json"), (old, old))
    checkpoint = _checkpoint(tmp_path, 7, batch_time)
    assert not ReplayCheck(spark, checkpoint, QUERY, 7).holds(table)


def test_a_log_cleaned_past_the_batch_is_an_error_not_a_guess(spark, tmp_path: Path) -> None:
    table = str(tmp_path / "quarantine")
    _commits(spark, table, [batch_marker(QUERY, 7), None, None])
    _clean_log_before(spark, table, 2)  # batch 7's commit is gone, every remaining one is newer than the batch
    checkpoint = _checkpoint(tmp_path, 7, time.time() - 60)
    with pytest.raises(UnprovableReplayError, match="cannot tell whether bronze batch 7 reached"):
        ReplayCheck(spark, checkpoint, QUERY, 7).holds(table)

"""Whether a bronze table already holds a micro-batch: the check that lets most batches skip Delta's lookup.

Delta's transaction id (``txnAppId``/``txnVersion`` on a write) makes a replayed append a no-op, but
delta-spark 4.4 reads it by rebuilding the table's whole state (``snapshot.transactions``) before every such
commit: about 0.7 s per table, measured on the 2-CPU bench, a third of a micro-batch at 5,000 events/s. Yet
only one batch of a run can be a replay: Spark writes batch N+1's offsets after batch N's commit, and on a
restart re-runs at most the last batch whose offsets it wrote. So ``BatchWriter``:

* names each append's batch in the commit's ``userMetadata`` (``bronze <query id> batch <N>``, which
  ``DESCRIBE HISTORY`` shows);
* appends a batch that directly follows one it completed with no check at all - no earlier attempt of it exists;
* checks any other batch (the first of a run, or one after a failed attempt) with ``ReplayCheck``, table by
  table, and writes what is missing with Delta's transaction id as well, which checks a second time.

``ReplayCheck`` reads the table's history back from the newest commit. The first of this query's commits
it meets (the query's newest) decides: it is this batch (held) or an earlier one (not held - the batch's commits
would be newer). A commit
older than the batch's own time also decides (not held): the batch's first attempt began at that time, taken
from Spark's offset log, so it cannot have committed before. The margin absorbs clock skew between the
driver and the storage's file times.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_MARKER = re.compile(r"^bronze (?P<query>\S+) batch (?P<batch>\d+)$")
CLOCK_MARGIN_SECONDS = 3600.0
_FIRST_PAGE = 16  # commits read first; a further page reads 8 times as many


class UnprovableReplayError(RuntimeError):
    """The table's log no longer reaches back to the batch's first attempt: neither answer can be proven."""


def batch_marker(query_id: str, batch_id: int) -> str:
    """The ``userMetadata`` every bronze append carries: which query and batch the commit holds."""
    return f"bronze {query_id} batch {batch_id}"


class ReplayCheck:
    """For one batch that may be a replay: which tables already hold it (one history read per table)."""

    def __init__(self, spark: SparkSession, checkpoint: str, query_id: str, batch_id: int) -> None:
        self.spark = spark
        self.checkpoint = checkpoint
        self.query_id = query_id
        self.batch_id = batch_id
        self._batch_time: float | None = None

    def batch_time(self) -> float:
        """When the batch's first attempt began (epoch seconds): the time Spark fixed for it in the offset log."""
        if self._batch_time is None:
            lines = [row[0] for row in self.spark.read.text(f"{self.checkpoint}/offsets/{self.batch_id}").collect()]
            metadata = next((json.loads(line) for line in lines if '"batchTimestampMs"' in line), None)
            if metadata is None:
                raise RuntimeError(f"streaming checkpoint {self.checkpoint}: offsets/{self.batch_id} has no batch time")
            self._batch_time = metadata["batchTimestampMs"] / 1000
        return self._batch_time

    def holds(self, path: str) -> bool:
        """Whether the Delta table at ``path`` has a commit of this batch (see the module docstring)."""
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        table = DeltaTable.forPath(self.spark, path)
        oldest_possible = self.batch_time() - CLOCK_MARGIN_SECONDS
        limit = _FIRST_PAGE
        while True:
            commits = (
                table.history(limit)
                .select("version", F.col("timestamp").cast("double").alias("at"), "userMetadata")
                .collect()
            )
            for commit in sorted(commits, key=lambda c: -c["version"]):
                found = _MARKER.match(commit["userMetadata"] or "")
                if found is not None and found["query"] == self.query_id:
                    held = int(found["batch"]) >= self.batch_id
                    log.info("bronze batch %d %s in %s", self.batch_id, "already" if held else "not yet", path)
                    return held
                if commit["at"] < oldest_possible:
                    return False
            if len(commits) < limit:  # the whole retained log is read
                oldest = min((c["version"] for c in commits), default=0)
                if oldest > 0:
                    raise UnprovableReplayError(
                        f"cannot tell whether bronze batch {self.batch_id} reached {path}: the table's log before "
                        f"version {oldest} is cleaned up and the batch first ran before that. Restore the log or "
                        "start the query from a new checkpoint after reconciling the table."
                    )
                return False
            limit *= 8

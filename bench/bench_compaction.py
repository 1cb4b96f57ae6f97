"""Bronze compaction: data files per million events before and after ``OPTIMIZE``, contents unchanged.

The bronze stream commits one file per (tenant, day, event type) partition it touches in each micro-batch, so a
day of small batches leaves many small files; ``maintenance run`` compacts bronze with
``pipelines.platform.tables.compact`` (Delta's ``OPTIMIZE``, bin-packing each partition up to 1 GiB). Compaction
never merges files of different partitions, so the files left are at least the partitions the events fall in:
how many files a million events leave depends on how densely they fill their partitions. Two layouts of the
same number of events, each written as the stream writes it (micro-batches of ``--batch-events`` events in
arrival order, one file per partition and batch: ``pipelines.synthetic.bronze.write_bronze``), then compacted:

* ``spread``: the silver + gold bench's data, 4 tenants x 7 days per million events (224 partitions of some
  4,300 events - a small tenant's event type per day);
* ``dense``: 1 tenant x 1 day (8 partitions of over 100,000 events each - a busy tenant's day).

Contents: row count and an order-independent checksum (the sum of ``xxhash64`` over every column of every row)
before and after must be equal. Target (issue 18): at most 100 files per million events after compaction.

Run: ``.venv/bin/python -m bench.bench_compaction [--events N] [--batch-events B]``; rewrites the ``compaction``
section of BENCHMARKS.md (``--validation``: labelled as a small validation run, not a result). The Spark JVM
and the metastore database are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.common import (
    EVENTS_PER_USER_DAY,
    bench_environ,
    driver_memory,
    machine,
    markdown_table,
    private_spark,
    section_heading,
    write_section,
)
from pipelines.config import load_settings
from pipelines.platform.lake import Lake
from pipelines.platform.registry import table as declared_table
from pipelines.platform.tables import compact
from pipelines.synthetic.bronze import bronze_rows_from_generated, bronze_table, write_bronze
from pipelines.synthetic.generator import GeneratorSpec, generate

TARGET_FILES_PER_MILLION = 100
LAYOUTS = {"spread": (4, 7), "dense": (1, 1)}  # (tenants, days) per million events


def _contents(spark, path: str) -> tuple[int, int]:
    """Rows and the sum of every row's xxhash64 (as a decimal: a long sum could overflow)."""
    from pyspark.sql import functions as F

    frame = spark.read.format("delta").load(path)
    row = frame.select(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.xxhash64(*frame.columns).cast("decimal(38,0)")).alias("checksum"),
    ).first()
    assert row is not None
    return int(row["rows"]), int(row["checksum"] or 0)


def _files(spark, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).detail().first()["numFiles"])


def _partitions(spark, path: str) -> int:
    partitioned_by = declared_table("bronze", "events").partitioned_by
    return spark.read.format("delta").load(path).select(*partitioned_by).distinct().count()


def bench_layout(spark, settings, layout: str, events: int, batch_events: int) -> dict[str, Any]:
    tenants, days_per_million = LAYOUTS[layout]
    days = max(1, round(days_per_million * events / 1_000_000))
    users = max(1, round(events / (tenants * days * EVENTS_PER_USER_DAY)))
    spec = GeneratorSpec(seed=31, tenants=tenants, users_per_tenant=users, days=days, start_date=date(2026, 1, 5))
    messages, _ = generate(spec, settings.kafka.topic_for_event_type)
    table = bronze_table(bronze_rows_from_generated(messages))
    path = f"{Lake(settings).bronze_events}_{layout}"
    clock = time.monotonic()
    batches = -(-table.num_rows // batch_events)
    for index in range(batches):
        write_bronze(spark, path, table.slice(index * batch_events, batch_events))
    write_seconds = time.monotonic() - clock
    files_before, partitions = _files(spark, path), _partitions(spark, path)
    before = _contents(spark, path)
    clock = time.monotonic()
    compact(spark, path)
    optimize_seconds = time.monotonic() - clock
    files_after = _files(spark, path)
    after = _contents(spark, path)
    per_million = files_after * 1_000_000 / table.num_rows
    print(
        f"[bench] {layout}: {table.num_rows:,} rows in {batches} batches ({write_seconds:.1f} s), "
        f"{files_before} -> {files_after} files, OPTIMIZE {optimize_seconds:.1f} s",
        file=sys.stderr,
    )
    return {
        "layout": f"{layout}: {tenants} tenant(s) x {days} day(s)",
        "bronze rows": f"{table.num_rows:,}",
        "partitions": partitions,
        "micro-batches": batches,
        "files before": files_before,
        "files after": files_after,
        "after / before": f"{files_after / files_before:.3f}x",
        "files per 1M events after": f"{per_million:,.0f}",
        "target met": "yes" if per_million <= TARGET_FILES_PER_MILLION else "no",
        "OPTIMIZE s": f"{optimize_seconds:.1f}",
        "contents equal": "yes" if before == after else f"NO: {before} -> {after}",
    }


def run(events: int, batch_events: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-compaction-") as workdir:
        settings = load_settings(environ=bench_environ(Path(workdir)))
        # the local profile's driver memory, what `maintenance run` gets (Spark's default 1 GiB ran out of heap in
        # OPTIMIZE of the dense layout's partitions: over 100 MB of rows each, two rewritten at once)
        with private_spark(settings, "bench-compaction") as spark:
            return [bench_layout(spark, settings, layout, events, batch_events) for layout in LAYOUTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per layout (default 1000000)")
    parser.add_argument("--batch-events", type=int, default=20_000, help="events per micro-batch (default 20000)")
    parser.add_argument("--validation", action="store_true", help="label the section as a small validation run")
    args = parser.parse_args()
    rows = run(args.events, args.batch_events)
    if any(not row["contents equal"].startswith("yes") for row in rows):
        raise SystemExit(f"compaction changed a table's contents: {rows}")
    body = "\n".join(
        [
            section_heading("Bronze compaction: files per million events (issue 18)", args.validation),
            "",
            f"Machine: {machine()}. Data: generated events, the generator's users sized for about {args.events:,} "
            "per layout (its events per user and day vary with the days generated: the bronze rows column says "
            "what was written), written to a bronze.events table as the stream writes it (micro-batches of "
            f"{args.batch_events:,} events in arrival order, one file per partition and batch), then compacted by "
            "`pipelines.platform.tables.compact` (Delta's `OPTIMIZE`, what `maintenance run` does), Spark "
            f"`local[*]` with the local profile's driver memory ({driver_memory(load_settings())}). Compaction "
            "cannot merge files of different (tenant, day, type) partitions, so the files left are at least the "
            "partitions. Contents = row count and the sum of every row's xxhash64, before and after. Target: at "
            f"most {TARGET_FILES_PER_MILLION} files per million events.",
            "",
            markdown_table(rows, list(rows[0])),
        ]
    )
    write_section("compaction", body)


if __name__ == "__main__":
    main()

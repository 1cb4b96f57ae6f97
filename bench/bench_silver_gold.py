"""Silver + gold build time on Spark vs the same aggregations in DuckDB, over the same bronze table, same run.

The question a user weighs: is a single-machine engine enough? The generated stream (duplicates and late
events included) is written to a bronze Delta table once; then

* Spark: ``silver.build`` (dedup, upcast, HMAC pseudonyms, stitching, sessionization, UA parsing,
  enrichment) + ``gold.build`` (all six tables), reading and writing with delta-spark (``format("delta")``)
  and naming every table it writes in the Hive metastore (a private Derby database for the run);
* DuckDB: dedup, stitching, DAU/WAU/MAU/new users, event counts, sessions (given ids plus 30-minute
  inactivity blocks) and revenue, in SQL over the same bronze files (delta-rs' ``to_pyarrow_dataset()`` of the
  table delta-spark wrote; DuckDB's delta extension cannot be downloaded here). No HMAC, no user-agent
  parsing, no funnels or anomalies: DuckDB does strictly less work. Its DAU, event counts and revenue must
  equal gold's.

Wall-clock seconds, one run per size; bronze generation is not timed. The ratio column is Spark's time over
DuckDB's for the same size (above 1: DuckDB is faster). Peak memory (PSS) of the Spark builds is sampled per
process role (Python driver, Spark JVM, Python workers): the driver's shows whether a build collects into
Python. Bronze is generated in a child process first; each size is then built in a Spark JVM of its own with
the local profile's driver memory (what a user's `./dev run` gets), stopped by PID with the metastore database
at the end.

Run: ``.venv/bin/python -m bench.bench_silver_gold [--events 1000000 10000000]``; rewrites its BENCHMARKS.md
section (``--validation``: labelled as a small validation run, not a result). Generating 10M events takes
about 20 minutes: ``--workdir DIR`` keeps each size's bronze in DIR, and a later run with the same DIR reuses
it, removing and rebuilding everything built from it (the timed part is unchanged: a first build).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    EVENTS_PER_USER_DAY,
    PeakRss,
    bench_environ,
    driver_memory,
    machine,
    markdown_table,
    private_spark,
    section_heading,
    write_section,
)
from pipelines import gold, silver
from pipelines.config import Settings, load_settings
from pipelines.platform.lake import Lake
from pipelines.synthetic.bronze import bronze_rows_from_generated, bronze_table, write_bronze
from pipelines.synthetic.generator import GeneratorSpec, generate
from pipelines.synthetic.users import sample_users, write_users_file

CHUNK_EVENTS = 1_000_000  # generated (and held in memory) at most this many at a time
DAYS_PER_CHUNK = 7
GENERATED = "generated.json"  # written once a size's bronze and users file are complete
TENANTS = 4

DUCKDB_SQL = """
CREATE TEMP TABLE kept AS
SELECT * EXCLUDE (raw_value) FROM bronze
QUALIFY row_number() OVER (PARTITION BY tenant_id, event_id ORDER BY ingested_at, topic, "partition", "offset") = 1;

CREATE TEMP TABLE stitch AS
SELECT tenant_id, anonymous_id, arg_min(user_id, occurred_at) AS stitched_user_id
FROM kept WHERE event_type = 'signup' AND anonymous_id IS NOT NULL AND user_id IS NOT NULL
GROUP BY ALL;

CREATE TEMP TABLE ev AS
SELECT k.*, coalesce(k.user_id, s.stitched_user_id, k.anonymous_id) AS who
FROM kept k LEFT JOIN stitch s USING (tenant_id, anonymous_id);

CREATE TEMP TABLE active AS
SELECT DISTINCT tenant_id, who, event_date FROM ev WHERE event_type <> 'system_alert';

CREATE TEMP TABLE dau AS
WITH expanded AS (
  SELECT tenant_id, who, k, event_date + k::INTEGER AS date
  FROM active, range(0, 29) t(k)
), per_user AS (
  SELECT tenant_id, date, who, max(k = 0)::INT AS today, max(k < 7)::INT AS week, max(k < 28)::INT AS month,
         max(k BETWEEN 1 AND 28)::INT AS seen_before
  FROM expanded WHERE date BETWEEN $first AND $last GROUP BY ALL
)
SELECT tenant_id, date, sum(today) AS dau, sum(week) AS wau, sum(month) AS mau,
       sum(today * (1 - seen_before)) AS new_users
FROM per_user GROUP BY ALL HAVING sum(month) > 0;

CREATE TEMP TABLE event_counts AS
SELECT tenant_id, event_date AS date, event_type, count(*) AS events FROM ev GROUP BY ALL;

CREATE TEMP TABLE revenue AS
SELECT tenant_id, event_date AS date, json_extract_string(properties, '$.currency') AS currency, count(*) AS orders,
       sum(CAST(json_extract(properties, '$.amount') AS DECIMAL(18, 2))) AS revenue
FROM ev WHERE event_type = 'order_completed' GROUP BY ALL;

CREATE TEMP TABLE sessions AS
WITH ordered AS (
  SELECT *, epoch_us(occurred_at) - lag(epoch_us(occurred_at)) OVER w AS gap FROM ev
  WHERE event_type <> 'system_alert' WINDOW w AS (PARTITION BY tenant_id, who ORDER BY occurred_at, event_id)
), blocks AS (
  SELECT *, sum(CASE WHEN gap IS NULL OR gap > 1800000000 THEN 1 ELSE 0 END)
              OVER (PARTITION BY tenant_id, who ORDER BY occurred_at, event_id) AS block FROM ordered
), resolved AS (
  SELECT *, coalesce(session_id,
      last_value(session_id IGNORE NULLS) OVER (PARTITION BY tenant_id, who, block ORDER BY occurred_at, event_id
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
      first_value(session_id IGNORE NULLS) OVER (PARTITION BY tenant_id, who, block ORDER BY occurred_at, event_id
                                                 ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING),
      'ds:' || who || ':' || block) AS sid
  FROM blocks
), per_session AS (
  SELECT tenant_id, sid, min(event_date) AS date, count(*) AS events,
         (epoch_us(max(occurred_at)) - epoch_us(min(occurred_at))) / 1e6 AS duration
  FROM resolved GROUP BY ALL
)
SELECT tenant_id, date, count(*) AS sessions, avg((events = 1)::DOUBLE) AS bounce_rate,
       avg(duration) AS avg_duration_seconds, median(duration) AS median_duration_seconds
FROM per_session GROUP BY ALL;
"""


def _spec(events: int, chunk: int) -> GeneratorSpec:
    size = min(CHUNK_EVENTS, events - chunk * CHUNK_EVENTS)
    users = max(1, round(size / (TENANTS * DAYS_PER_CHUNK * EVENTS_PER_USER_DAY)))
    return GeneratorSpec(
        seed=1000 + chunk,
        tenants=TENANTS,
        users_per_tenant=users,
        days=DAYS_PER_CHUNK,
        start_date=date(2026, 1, 5) + timedelta(days=DAYS_PER_CHUNK * chunk),
    )


def write_generated_bronze(spark, settings, events: int) -> tuple[int, date, date]:
    """Generate chunk by chunk into bronze (and the users file); returns rows written and the day range."""
    rows_written, users = 0, []
    offsets: dict[tuple[str, int], int] = {}  # one stream: Kafka coordinates unique across chunks
    chunks = -(-events // CHUNK_EVENTS)
    for chunk in range(chunks):
        spec = _spec(events, chunk)
        messages, _ = generate(spec, settings.kafka.topic_for_event_type)
        users.extend(sample_users(messages))
        table = bronze_table(bronze_rows_from_generated(messages, offsets=offsets))
        write_bronze(spark, Lake(settings).bronze_events, table)
        rows_written += table.num_rows
    write_users_file(users, Path(settings.resolve_path(settings.silver.dimensions_dir)) / "users.csv")
    first = _spec(events, 0).start_date
    last = first + timedelta(days=DAYS_PER_CHUNK * chunks - 1)
    return rows_written, first, last


def _duckdb(settings, first: date, last: date) -> tuple[float, dict[str, dict]]:
    import duckdb
    from deltalake import DeltaTable

    started = time.monotonic()
    connection = duckdb.connect()
    connection.execute(f"SET threads TO {os.cpu_count() or 1}")
    # DuckDB's default limit (80% of RAM) ignores the Spark JVM still alive in this run: at 10M events the
    # process was OOM-killed (17 GiB anonymous memory beside a 7 GiB JVM). Bounded, it spills to disk instead.
    limit_mib = int(0.4 * psutil.virtual_memory().available / 2**20)
    connection.execute(f"SET memory_limit = '{limit_mib}MiB'")
    connection.execute(f"SET temp_directory = '{Path(Lake(settings).root).parent / 'duckdb_spill'}'")
    connection.register("bronze", DeltaTable(Lake(settings).bronze_events).to_pyarrow_dataset())
    script = DUCKDB_SQL.replace("$first", f"DATE '{first}'").replace("$last", f"DATE '{last}'")
    for statement in filter(str.strip, script.split(";")):
        connection.execute(statement)
    results = {
        "dau": {(t, d): n for t, d, n in connection.execute("SELECT tenant_id, date, dau FROM dau").fetchall()},
        "event_counts": {(t, d, e): n for t, d, e, n in connection.execute("SELECT * FROM event_counts").fetchall()},
        "revenue": {(t, d, c): (n, r) for t, d, c, n, r in connection.execute("SELECT * FROM revenue").fetchall()},
        "sessions": {
            (t, d): n for t, d, n in connection.execute("SELECT tenant_id, date, sessions FROM sessions").fetchall()
        },
    }
    return time.monotonic() - started, results


def _gold_results(spark, settings) -> dict[str, dict]:
    def rows(name: str) -> list:
        return spark.read.format("delta").load(gold.table_path(settings, name)).collect()

    return {
        "dau": {(r.tenant_id, r.date): r.dau for r in rows("daily_active_users")},
        "event_counts": {(r.tenant_id, r.date, r.event_type): r.events for r in rows("event_counts")},
        "revenue": {(r.tenant_id, r.date, r.currency): (r.orders, Decimal(r.revenue)) for r in rows("revenue")},
        "sessions": {(r.tenant_id, r.date): r.sessions for r in rows("sessions")},
    }


def size_root(workdir: Path, events: int) -> Path:
    """The folder of one size's lake, users file and generated-bronze record."""
    return workdir / f"lake-{events}"


def size_settings(workdir: Path, events: int) -> Settings:
    """The settings of one size's lake under ``workdir``; one metastore database for every size."""
    root = size_root(workdir, events)
    environ = bench_environ(
        root,
        LAKEHOUSE__CATALOG__STATE_DIR=str(workdir / "metastore"),
        LAKEHOUSE__SILVER__DIMENSIONS_DIR=str(root / "dims"),
    )
    return load_settings(environ=environ)


def generate_sizes(sizes: tuple[int, ...], workdir: Path) -> None:
    """Generate and write each size's bronze and users file that ``workdir`` does not hold yet.

    Runs in a child process with its own Spark JVM (``run``), so what generation leaves in Python's and the JVM's
    heaps is gone before the builds are measured."""
    missing = [events for events in sizes if not (size_root(workdir, events) / GENERATED).exists()]
    if not missing:
        return
    with private_spark(size_settings(workdir, missing[0]), "bench-silver-gold-generate") as spark:
        for events in missing:
            started = time.monotonic()
            settings = size_settings(workdir, events)
            bronze_rows, first, last = write_generated_bronze(spark, settings, events)
            facts = {"bronze_rows": bronze_rows, "first": str(first), "last": str(last)}
            (size_root(workdir, events) / GENERATED).write_text(json.dumps(facts))  # bronze and users complete
            print(
                f"[bench] {events:,} events: bronze generated and written in {time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )


def generated_bronze(settings: Settings, workdir: Path, events: int) -> tuple[int, date, date]:
    """A size's generated bronze (rows, first and last day), with every table an earlier run built from it
    removed: the timed builds are first builds."""
    for layer in ("silver", "gold", "ops"):
        shutil.rmtree(Path(Lake(settings).root) / layer, ignore_errors=True)
    facts = json.loads((size_root(workdir, events) / GENERATED).read_text())
    return facts["bronze_rows"], date.fromisoformat(facts["first"]), date.fromisoformat(facts["last"])


def bench_size(
    events: int, workdir: Path, keep: bool = False, memory: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Rows of one size, built in a Spark JVM of its own (started here with ``memory``, else the local profile's
    driver memory), and the peak memory of its silver + gold builds. ``run`` calls it in a child process."""
    settings = size_settings(workdir, events)
    bronze_rows, first, last = generated_bronze(settings, workdir, events)
    with private_spark(settings, "bench-silver-gold", {"spark.driver.memory": memory} if memory else None) as spark:
        with PeakRss() as memory:
            started = time.monotonic()
            built = silver.build(spark, settings, first, last)
            silver_s = time.monotonic() - started
            started = time.monotonic()
            gold.build(spark, settings, first, last, lookback=False)
            gold_s = time.monotonic() - started
        peak = f"{events:,} events: {memory.describe()}"
        print(f"[bench] {events:,} events: silver {silver_s:.1f} s, gold {gold_s:.1f} s; {peak}", file=sys.stderr)
        label = f"{events:,} generated events ({bronze_rows:,} bronze rows, {built.events:,} unique)"
        rows = [
            {"engine": "Spark local[*]: silver.build", "size": label, "seconds": round(silver_s, 1)},
            {"engine": "Spark local[*]: gold.build (6 tables)", "size": label, "seconds": round(gold_s, 1)},
            {"engine": "Spark local[*]: silver + gold", "size": label, "seconds": round(silver_s + gold_s, 1)},
        ]
        seconds, results = _duckdb(settings, first, last)
        print(f"[bench] {events:,} events: DuckDB {seconds:.1f} s", file=sys.stderr)
        expected = _gold_results(spark, settings)
    disagree = [name for name in ("dau", "event_counts", "revenue") if results[name] != expected[name]]
    if disagree:
        raise AssertionError(f"DuckDB and gold disagree on {disagree}")
    rows.append(
        {
            "engine": "DuckDB: dedup, stitch, DAU/WAU/MAU, counts, sessions, revenue",
            "size": label,
            "seconds": round(seconds, 1),
        }
    )
    for row in rows:
        row["Spark / DuckDB"] = f"{row['seconds'] / seconds:.1f}x"
    if not keep:
        shutil.rmtree(size_root(workdir, events), ignore_errors=True)
    print(markdown_table(rows, ["engine", "size", "seconds", "Spark / DuckDB"]), flush=True)
    return rows, peak


def run(
    sizes: tuple[int, ...] = (1_000_000,), keep: Path | None = None, memory: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per engine and size (engine, size, seconds, Spark / DuckDB), and one peak-memory line per size.

    Bronze is generated first, in a child process (its own interpreter and Spark JVM, both gone when it exits);
    then each size is built and compared with DuckDB in a child process of its own (interpreter and JVM), so a
    size's peak memory is its own builds', not what generation, a smaller size or DuckDB's run left in heaps that
    never shrink (at 10M events the Python driver held 0.52 GiB before the builds when sizes shared it).
    ``keep``: work in that folder and keep each size's generated bronze there (a later run with the same folder
    reuses it and rebuilds silver and gold from scratch); by default a temporary folder, removed.
    """
    rows: list[dict[str, Any]] = []
    peaks: list[str] = []
    with (
        nullcontext(str(keep)) if keep is not None else tempfile.TemporaryDirectory(prefix="bench-silver-gold-")
    ) as workdir:
        generator = multiprocessing.get_context("spawn").Process(target=generate_sizes, args=(sizes, Path(workdir)))
        generator.start()
        generator.join()
        if generator.exitcode != 0:
            raise SystemExit(f"generating bronze failed (exit {generator.exitcode}); see the messages above")
        for events in sizes:
            started = time.monotonic()
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
                size_rows, peak = child.submit(bench_size, events, Path(workdir), keep is not None, memory).result()
            rows.extend(size_rows)
            peaks.append(peak)
            print(f"[bench] {events:,} events: {time.monotonic() - started:.1f} s in all", file=sys.stderr)
    return rows, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000], help="sizes (default 1000000)")
    parser.add_argument("--validation", action="store_true", help="label the section as a small validation run")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the generated bronze in this folder; a later run with it skips generation (default: temporary)",
    )
    parser.add_argument(
        "--driver-memory",
        help="the Spark JVM's heap, e.g. 6g (default: the local profile's spark.driver.memory)",
    )
    args = parser.parse_args()
    rows, peaks = run(tuple(args.events), args.workdir, args.driver_memory)
    profile = load_settings()
    memory = f"driver memory {driver_memory(profile, args.driver_memory)}"
    if not args.driver_memory:
        memory += " (the local profile's)"
    java_options = profile.spark.conf.get("spark.driver.extraJavaOptions")
    if java_options:
        memory += f", JVM options `{java_options}`"
    heading = section_heading("Silver + gold batch build vs DuckDB (issue 5)", args.validation)
    body = "\n".join(
        [
            heading,
            "",
            f"Machine: {machine()}. Data: generated events over {TENANTS} tenants written straight to bronze "
            "(duplicates and late events included), 7 days per million events. Spark `local[*]` (pyspark 4.2) "
            'reading and writing with delta-spark 4.4 (`format("delta")`), tables named in a Hive metastore '
            f"on Derby, {memory}, a fresh process (Python and JVM) per size; DuckDB over the same "
            "bronze parquet files (delta-rs pyarrow dataset of the table delta-spark wrote), doing less work (no "
            "HMAC, no user-agent parsing, no funnels or anomalies). Wall clock, one run; DuckDB's DAU, event counts "
            "and revenue are checked equal to gold's.",
            "",
            markdown_table(rows, ["engine", "size", "seconds", "Spark / DuckDB"]),
            "",
            "Peak memory (PSS, shared pages split between the processes sharing them) during the Spark silver + gold "
            "builds, sampled every second: the total's split at its peak, then each process role's own peak and its "
            "value when the builds started; the Derby metastore left out:",
            "",
            *(f"- {line}" for line in peaks),
        ]
    )
    write_section("silver_gold", body)
    print(body)


if __name__ == "__main__":
    main()

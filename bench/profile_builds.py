"""Where silver.build and gold.build spend their time: the platform's steps, and Spark's side of each build.

Issue 18 asks for a profile before any speed change. Three sources, one run:

* the driver under cProfile: the platform's functions by cumulative wall clock (a step includes the steps it
  calls). The driver mostly waits on Py4J while Spark runs a step's jobs, so this is where each build's time
  goes, step by step; cProfile slows the Python code it traces (GX's the most), not the JVM;
* Spark's own event log (written by the session, parsed when it stops): the jobs of each build, the time
  during which at least one ran, and their tasks' executor and GC time. Wall time outside every job is the
  driver's: Python, query planning, Delta's commits and log replays. (Jobs cannot be named by step from the
  log: most, Delta's writes and GX's included, carry no Python call site.)
* Java Flight Recorder on the JVM during each build: what the executor threads were doing, sample by sample
  (JSON parsing, SHA-256, Parquet, sorting, shuffles, generated code...). Spark's SQL metrics cannot say
  this: a generated-code stage's "duration" is the wall time from its iterator's creation to its end, which
  includes whatever consumes its rows.

    python -m bench.profile_builds --events 1000000 [--workdir DIR]

Same data and driver memory as ``bench.bench_silver_gold`` (generated bronze, gates on); its
``--workdir`` keeps the generated bronze for a later run. Writes the ``profile`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_silver_gold import generate_sizes, generated_bronze, size_settings
from bench.common import (
    ROOT,
    bench_environ,
    driver_memory,
    machine,
    markdown_table,
    private_spark,
    return_freed_memory,
    section_heading,
    write_section,
)
from pipelines import gold, silver
from pipelines.config import load_settings

TOP_STEPS = 15


@dataclass
class Job:
    submitted_ms: int
    completed_ms: int = 0
    task_ms: int = 0  # executor run time of its tasks
    gc_ms: int = 0


def read_event_log(path: Path) -> list[Job]:
    """Jobs of one application's event log, with their tasks' executor time."""
    jobs: dict[int, Job] = {}
    stage_job: dict[int, int] = {}
    with path.open() as log:
        for line in log:
            event = json.loads(line)
            kind = event["Event"]
            if kind == "SparkListenerJobStart":
                jobs[event["Job ID"]] = Job(event["Submission Time"])
                for stage in event["Stage IDs"]:
                    stage_job[stage] = event["Job ID"]
            elif kind == "SparkListenerJobEnd" and event["Job ID"] in jobs:
                jobs[event["Job ID"]].completed_ms = event["Completion Time"]
            elif kind == "SparkListenerTaskEnd" and event.get("Stage ID") in stage_job:
                metrics = event.get("Task Metrics") or {}
                job = jobs[stage_job[event["Stage ID"]]]
                job.task_ms += metrics.get("Executor Run Time", 0)
                job.gc_ms += metrics.get("JVM GC Time", 0)
    return [job for job in jobs.values() if job.completed_ms]


# What the JVM's executor threads were doing, from Java Flight Recorder's execution samples. A sample goes to the
# first category, in this order (SAMPLE_CATEGORIES, INNER_CATEGORIES, LAST_CATEGORIES), that its frames name.
# Only code that is called per row sits high in the list (a parser, a digest, a writer's column encoders); code
# that drives a task (Spark's shuffle writer pulling rows, Delta's file writer, a window iterating its input)
# would claim the whole pipeline under it, so it is named only by its own inner parts or sits low.
SAMPLE_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON (from_json, to_json, get_json_object)", ("com.fasterxml.jackson.", "sql.catalyst.json.")),
    ("SHA-256 (HMAC pseudonyms)", ("sun.security.provider.", "java.security.MessageDigest", "commons.codec.digest")),
    ("regular expressions", ("java.util.regex.",)),
    ("compression (zstd, snappy, lz4)", ("zstd", "snappy", "lz4", ".compress.")),
    ("Parquet read", ("VectorizedParquetRecordReader", "VectorizedColumnReader", "parquet.hadoop.ParquetFileReader")),
    ("Parquet write (encoding)", ("org.apache.parquet.column.", "ParquetWriteSupport", "ParquetOutputWriter")),
    ("Delta write statistics", ("sql.delta.stats.",)),
    ("sort", ("UnsafeExternalSorter", "UnsafeInMemorySorter", "RadixSort", "TimSort", "UnsafeSorterSpill")),
    (
        "shuffle (sort, spill, fetch, serialize)",
        ("ShuffleExternalSorter", "ShuffleBlockFetcherIterator", "DiskBlockObjectWriter", "UnsafeRowSerializer"),
    ),
    ("hash tables (joins, aggregates, distinct)", ("BytesToBytesMap", "HashedRelation", "UnsafeHashedRelation")),
    ("Arrow (Python workers' batches)", ("org.apache.arrow.", "ArrowWriter", "api.python.", "execution.python.")),
    (
        "in-memory cache (persist: column builders, stats, accessors)",
        ("sql.execution.columnar.compression.", "ColumnStats", "ColumnBuilder", "ColumnAccessor"),
    ),
]
# Helpers that also sit under the libraries above, or wrap every iterator (Scala's), are named only when they
# are among a sample's innermost frames: the code running, not the code waiting on it.
INNERMOST = 3
INNER_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("hashing (Murmur3, xxHash64)", ("unsafe.hash.", "XXH64", "expressions.Murmur3", "expressions.XxHash64")),
    (
        "Scala sets and maps (isin, lookups)",
        ("scala.collection.mutable.Hash", "scala.collection.immutable.Hash", "scala.runtime.BoxesRunTime"),
    ),
    ("string functions (UTF8String)", ("unsafe.types.UTF8String",)),
    ("row encoding (UnsafeRow writers, copies)", ("UnsafeRowWriter", "UnsafeWriter", "BufferHolder", "UnsafeRow.")),
]
LAST_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("generated code (projections, filters, expressions)", ("GeneratedClass", "sql.catalyst.expressions.")),
    ("window", ("WindowExec", "WindowEvaluatorFactory", "WindowFunctionFrame", "ExternalAppendOnlyUnsafeRowArray")),
    ("Delta (other)", ("sql.delta.",)),
]
# Spark renames a pooled executor thread per task ("Executor task launch worker for task ...") and back when it
# is idle; JFR keeps the name a thread had when a recording first saw it, so both names mean an executor thread.
EXECUTOR_THREAD = "Executor task "
STACK_DEPTH = "64"


def _java_tool(name: str) -> str:
    """A JDK tool next to the ``java`` Spark runs (JAVA_HOME, else the one on PATH)."""
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home, "bin", "java") if java_home else Path(shutil.which("java") or "java")
    return str(java.resolve().parent / name)


def categorize(frames: list[str]) -> str:
    """``frames`` innermost first."""
    for categories, searched in (
        (SAMPLE_CATEGORIES, frames),
        (INNER_CATEGORIES, frames[:INNERMOST]),
        (LAST_CATEGORIES, frames),
    ):
        for category, patterns in categories:
            if any(pattern in frame for frame in searched for pattern in patterns):
                return category
    return "other"


def sample_categories(recording: Path) -> tuple[dict[str, int], int]:
    """Executor threads' samples per category, and the samples of every other thread (the driver's planning
    and Delta log replays, RPC, GC helpers), from one recording (``jfr print``, streamed)."""
    counts: dict[str, int] = {}
    unnamed: dict[str, int] = {}  # the innermost frame of samples no category names, for the run's log
    others = 0
    command = [_java_tool("jfr"), "print", "--stack-depth", STACK_DEPTH, "--events", "jdk.ExecutionSample"]
    with subprocess.Popen([*command, str(recording)], stdout=subprocess.PIPE, text=True) as printer:
        assert printer.stdout is not None
        thread, frames, in_stack = "", [], False
        for line in printer.stdout:
            text = line.strip()
            if text.startswith("sampledThread = "):
                thread = text
            elif text.startswith("stackTrace = ["):
                frames, in_stack = [], True
            elif in_stack and text == "]":
                in_stack = False
                if EXECUTOR_THREAD in thread:
                    category = categorize(frames)
                    counts[category] = counts.get(category, 0) + 1
                    if category == "other" and frames:
                        unnamed[frames[0]] = unnamed.get(frames[0], 0) + 1
                else:
                    others += 1
            elif in_stack:
                frames.append(text.split("(", 1)[0])
    if printer.returncode != 0:
        raise RuntimeError(f"jfr print failed on {recording} (exit {printer.returncode})")
    top = sorted(unnamed.items(), key=lambda item: item[1], reverse=True)[:8]
    print(f"[profile] {recording.name}: uncategorized samples' innermost frames: {top}", file=sys.stderr)
    return counts, others


@contextmanager
def flight_recording(spark, destination: Path) -> Iterator[None]:
    """Java Flight Recorder's "profile" settings on the session's JVM (driver and, in ``local[*]``, executors)
    for the block; the recording is written to ``destination``."""
    jvm = spark.sparkContext._jvm
    recording = jvm.jdk.jfr.Recording(jvm.jdk.jfr.Configuration.getConfiguration("profile"))
    recording.start()
    try:
        yield
    finally:
        recording.stop()
        recording.dump(jvm.java.io.File(str(destination)).toPath())
        recording.close()


def sample_rows(name: str, counts: dict[str, int], others: int) -> list[dict[str, Any]]:
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: item[1], reverse=True)
    rows = [
        {"build": name, "executor threads were in": category, "samples": n, "share": f"{100 * n / total:.0f}%"}
        for category, n in ranked
    ]
    rows.append(
        {"build": name, "executor threads were in": "(other threads: driver, RPC)", "samples": others, "share": "-"}
    )
    return rows


def _covered_ms(jobs: list[Job]) -> int:
    """Milliseconds during which at least one job ran (jobs may overlap)."""
    covered, end = 0, 0
    for job in sorted(jobs, key=lambda j: j.submitted_ms):
        start = max(job.submitted_ms, end)
        if job.completed_ms > start:
            covered += job.completed_ms - start
            end = job.completed_ms
    return covered


def job_summary(name: str, jobs: list[Job], started_ms: int, ended_ms: int) -> str:
    """One build's Spark side in a line: wall clock, jobs, time inside them and outside, executor time."""
    mine = [job for job in jobs if started_ms <= job.submitted_ms <= ended_ms]
    wall = (ended_ms - started_ms) / 1000
    in_jobs = _covered_ms(mine) / 1000
    return (
        f"{name}: {wall:.1f} s wall, {len(mine)} Spark jobs; "
        f"inside jobs {in_jobs:.1f} s ({100 * in_jobs / wall:.0f}%), "
        f"on the driver outside any job (Python, planning, Delta commits and log reads) {wall - in_jobs:.1f} s "
        f"({100 * (wall - in_jobs) / wall:.0f}%); executor task time {sum(j.task_ms for j in mine) / 1000:.1f} s "
        f"on 2 cores, of which GC {sum(j.gc_ms for j in mine) / 1000:.1f} s"
    )


def step_rows(name: str, profile: cProfile.Profile, wall_s: float) -> list[dict[str, Any]]:
    """The platform's functions that took the most of one build's wall clock (cumulative: a step includes the
    steps it calls; the build's own entry point is left out)."""
    package = f"{ROOT}/pipelines/"
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    steps = []
    for (filename, _line, function), (_cc, calls, _tt, cumulative, _callers) in stats.items():
        if filename.startswith(package) and function != "build" and not function.startswith("<"):
            steps.append((cumulative, calls, f"{filename.removeprefix(str(ROOT) + '/')}:{function}"))
    steps.sort(reverse=True)
    return [
        {
            "build": name,
            "step (function, cumulative)": f"`{where}`",
            "calls": calls,
            "seconds": f"{cumulative:.1f}",
            "share of build": f"{100 * cumulative / wall_s:.0f}%",
        }
        for cumulative, calls, where in steps[:TOP_STEPS]
    ]


def run(events: int, keep: Path | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Step rows (cProfile), operator rows (event log) and a Spark summary line per build."""
    with nullcontext(str(keep)) if keep is not None else tempfile.TemporaryDirectory(prefix="profile-") as folder:
        workdir = Path(folder)
        log_dir = workdir / "eventlog"
        shutil.rmtree(log_dir, ignore_errors=True)  # an earlier run's log
        log_dir.mkdir(parents=True)
        settings = load_settings(environ=bench_environ(workdir))
        conf = {  # the local profile's driver memory, as bench_silver_gold
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": log_dir.as_uri(),
            "spark.eventLog.rolling.enabled": "false",  # one plain JSON-lines file per application
            "spark.eventLog.compress": "false",
        }
        generate_sizes((events,), workdir)  # in a JVM of its own, stopped before the profiled one starts
        built = size_settings(workdir, events)
        _, first, last = generated_bronze(built, workdir, events)
        return_freed_memory()
        with private_spark(settings, "profile-builds", conf) as spark:
            marks = [time.time()]
            profiles = [cProfile.Profile(), cProfile.Profile()]
            with flight_recording(spark, workdir / "silver.jfr"), profiles[0]:
                silver.build(spark, built, first, last)
            marks.append(time.time())
            with flight_recording(spark, workdir / "gold.jfr"), profiles[1]:
                gold.build(spark, built, first, last, lookback=False)
            marks.append(time.time())
        (log,) = list(log_dir.iterdir())  # the session stopped: its log is complete
        jobs = read_event_log(log)
        samples = [sample_categories(workdir / f"{layer}.jfr") for layer in ("silver", "gold")]
    rows: list[dict[str, Any]] = []
    sample_table: list[dict[str, Any]] = []
    summaries = []
    for index, name in enumerate(("silver.build", "gold.build")):
        started, ended = marks[index], marks[index + 1]
        summaries.append(job_summary(name, jobs, int(started * 1000), int(ended * 1000)))
        rows += step_rows(name, profiles[index], ended - started)
        sample_table += sample_rows(name, *samples[index])
        print(f"[profile] {summaries[-1]}", file=sys.stderr)
    return rows, sample_table, summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="generated events (default 1000000)")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the generated bronze in this folder")
    parser.add_argument("--validation", action="store_true", help="label the section as a small validation run")
    args = parser.parse_args()
    rows, samples, summaries = run(args.events, args.workdir)
    heading = section_heading("Profile: where silver + gold spend their time (issue 18)", args.validation)
    body = "\n".join(
        [
            heading,
            "",
            f"Machine: {machine()}. Data: {args.events:,} generated events written straight to bronze "
            "(as in the silver + gold bench), gates on, the local profile's driver memory "
            f"({driver_memory(load_settings())}). Steps: the platform's functions by cumulative wall clock under "
            "cProfile (a step includes the steps it calls; traced Python, GX's most, runs slower than untraced). "
            "Spark: from the session's event log.",
            "",
            *[f"- {summary}" for summary in summaries],
            "",
            markdown_table(rows, list(rows[0])),
            "",
            'What the executor threads were doing (Java Flight Recorder\'s execution samples, "profile" settings, '
            "the same run): each sample goes to the first category one of its frames names, in the order of "
            "the category lists in `bench/profile_builds.py` (code called per row first - a parser, a digest, "
            "an encoder - so the code driving a task does not claim the pipeline under it).",
            "",
            markdown_table(samples, list(samples[0])),
        ]
    )
    print(body)
    write_section("profile", body)


if __name__ == "__main__":
    main()

"""Where silver.build and gold.build spend their time: the platform's steps, and Spark's side of each build.

Issue 18 asks for a profile before any speed change. Two sources, one run:

* the driver under cProfile: the platform's functions by cumulative wall clock (a step includes the steps it
  calls). The driver mostly waits on Py4J while Spark runs a step's jobs, so this is where each build's time
  goes, step by step; cProfile slows the Python code it traces (GX's the most), not the JVM;
* Spark's own event log (written by the session, parsed when it stops): the jobs of each build, the time
  during which at least one ran, and their tasks' executor and GC time. Wall time outside every job is the
  driver's: Python, query planning, Delta's commits and log replays. (Jobs cannot be named by step from the
  log: most, Delta's writes and GX's included, carry no Python call site.)

    python -m bench.profile_builds --events 1000000 [--workdir DIR]

Same data as ``bench.bench_silver_gold`` (generated bronze, gates on; a 6 GiB driver, as when first run); its
``--workdir`` keeps the generated bronze for a later run. Writes the ``profile`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_silver_gold import generate_sizes, generated_bronze, size_settings
from bench.common import (
    ROOT,
    bench_environ,
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


def run(events: int, keep: Path | None) -> tuple[list[dict[str, Any]], list[str]]:
    with nullcontext(str(keep)) if keep is not None else tempfile.TemporaryDirectory(prefix="profile-") as folder:
        workdir = Path(folder)
        log_dir = workdir / "eventlog"
        shutil.rmtree(log_dir, ignore_errors=True)  # an earlier run's log
        log_dir.mkdir(parents=True)
        settings = load_settings(environ=bench_environ(workdir))
        conf = {
            "spark.driver.memory": "6g",
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
            with profiles[0]:
                silver.build(spark, built, first, last)
            marks.append(time.time())
            with profiles[1]:
                gold.build(spark, built, first, last, lookback=False)
            marks.append(time.time())
        (log,) = list(log_dir.iterdir())  # the session stopped: its log is complete
        jobs = read_event_log(log)
    rows: list[dict[str, Any]] = []
    summaries = []
    for index, name in enumerate(("silver.build", "gold.build")):
        started, ended = marks[index], marks[index + 1]
        summaries.append(job_summary(name, jobs, int(started * 1000), int(ended * 1000)))
        rows += step_rows(name, profiles[index], ended - started)
        print(f"[profile] {summaries[-1]}", file=sys.stderr)
    return rows, summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="generated events (default 1000000)")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the generated bronze in this folder")
    parser.add_argument("--validation", action="store_true", help="label the section as a small validation run")
    args = parser.parse_args()
    rows, summaries = run(args.events, args.workdir)
    heading = section_heading("Profile: where silver + gold spend their time (issue 18)", args.validation)
    columns = list(rows[0])
    body = "\n".join(
        [
            heading,
            "",
            f"Machine: {machine()}. Data: {args.events:,} generated events written straight to bronze "
            "(as in the silver + gold bench), gates on, driver memory 6 GiB. Steps: the platform's functions by "
            "cumulative wall clock under cProfile (a step includes the steps it calls; traced Python, GX's most, "
            "runs slower than untraced). Spark: from the session's event log.",
            "",
            *[f"- {summary}" for summary in summaries],
            "",
            markdown_table(rows, columns),
        ]
    )
    print(body)
    write_section("profile", body)


if __name__ == "__main__":
    main()

"""Quality-gate overhead: silver + gold with their gates vs without, same data, same run; and peak memory.

The generated stream (duplicates and late events included) is written to bronze once. Two warm-up builds, one
without gates (it also fills the dimension tables) and one with, are reported but not compared: the first build
down each path pays its one-time costs (the JIT compiling its code, the gated one importing GX - a cost a fresh
process such as an Airflow task pays once, shown on its own line). Then ``--rounds`` pairs run in ABBA order
(gated first in odd rounds, ungated first in even ones), so neither side always runs on a JVM warmed by the
other; the overhead is the gated time over the ungated one, per layer and in all, from the medians. Peak
memory (PSS) is sampled every second over the whole process tree of the run (this Python driver, the
Spark JVM, its Python workers; the Derby metastore is a separate, already-running process and is left out).

Run: ``.venv/bin/python -m bench.bench_gates [--events 1000000] [--rounds 2]``; rewrites its BENCHMARKS.md
section (``--validation``: labelled as a small validation run, not a result).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_silver_gold import write_generated_bronze
from bench.common import PeakRss, bench_environ, machine, markdown_table, private_spark, section_heading, write_section
from pipelines import gold, silver
from pipelines.config import load_settings


def _timed_build(spark, settings, first, last, skip_gates: bool) -> tuple[float, float]:
    started = time.monotonic()
    silver.build(spark, settings, first, last, skip_gates=skip_gates)
    silver_s = time.monotonic() - started
    started = time.monotonic()
    gold.build(spark, settings, first, last, lookback=False, skip_gates=skip_gates)
    return silver_s, time.monotonic() - started


def run(events: int, rounds: int) -> tuple[list[dict[str, Any]], str, dict[bool, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as workdir:
        work = Path(workdir)
        environ = bench_environ(
            work,
            LAKEHOUSE__SILVER__DIMENSIONS_DIR=str(work / "dims"),
            LAKEHOUSE__QUALITY__DOCS_DIR=str(work / "docs"),
        )
        settings = load_settings(environ=environ)
        with PeakRss() as memory, private_spark(settings, "bench-gates", {"spark.driver.memory": "6g"}) as spark:
            bronze_rows, first, last = write_generated_bronze(spark, settings, events)
            print(f"[bench] {events:,} events written to bronze ({bronze_rows:,} rows)", file=sys.stderr)
            warm: dict[bool, float] = {}
            for gated in (False, True):
                warm[gated] = sum(_timed_build(spark, settings, first, last, skip_gates=not gated))
                print(f"[bench] warm-up build, gated={gated}: {warm[gated]:.1f} s", file=sys.stderr)
            timings: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for round_index in range(rounds):
                for gated in (True, False) if round_index % 2 == 0 else (False, True):
                    timings[gated].append(_timed_build(spark, settings, first, last, skip_gates=not gated))
                    print(f"[bench] gated={gated}: {sum(timings[gated][-1]):.1f} s", file=sys.stderr)
    rows = []
    for index, layer in ((0, "silver.build"), (1, "gold.build (6 tables)")):
        plain = statistics.median(t[index] for t in timings[False])
        gated = statistics.median(t[index] for t in timings[True])
        rows.append(_row(layer, events, plain, gated))
    plain = statistics.median(sum(t) for t in timings[False])
    gated = statistics.median(sum(t) for t in timings[True])
    rows.append(_row("silver + gold", events, plain, gated))
    peak = f"{memory.describe()}; driver memory 6 GiB"
    return rows, peak, warm


def _row(layer: str, events: int, plain: float, gated: float) -> dict[str, Any]:
    return {
        "build": layer,
        "events": f"{events:,}",
        "without gates (s)": round(plain, 1),
        "with gates (s)": round(gated, 1),
        "gate overhead": f"{100 * (gated - plain) / plain:.0f}%",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="generated events (default 1000000)")
    parser.add_argument("--rounds", type=int, default=2, help="gated/ungated pairs, in ABBA order (default 2)")
    parser.add_argument("--validation", action="store_true", help="label the section as a small validation run")
    args = parser.parse_args()
    rows, peak, warm = run(args.events, args.rounds)
    heading = section_heading("Quality-gate overhead: silver + gold with vs without gates (issue 14)", args.validation)
    columns = ["build", "events", "without gates (s)", "with gates (s)", "gate overhead"]
    body = "\n".join(
        [
            heading,
            "",
            f"Machine: {machine()}. Data: generated events over 4 tenants written straight to bronze, 7 days per "
            "million events; Spark `local[*]`, delta-spark 4.4, Great Expectations 1.24 (the shipped suites of "
            "`expectations/`). After one warm-up build down each path, gated and ungated builds of the same days "
            f"alternate in ABBA order ({args.rounds} pair(s), medians). Target: overhead at most 25% of the build "
            "it guards.",
            "",
            markdown_table(rows, columns),
            "",
            f"Warm-up builds, not compared: without gates {warm[False]:.1f} s (the first build of the process, "
            f"filling the dimension tables), then with gates {warm[True]:.1f} s (the first gated build: it imports "
            "GX and compiles the gates' code paths, as a fresh process such as an Airflow task does once).",
            "",
            f"Peak memory (PSS) of the run: {peak}.",
        ]
    )
    write_section("gates", body)
    print(body)


if __name__ == "__main__":
    main()

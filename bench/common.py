"""Shared benchmark plumbing: machine description, a private broker, and BENCHMARKS.md sections.

Each benchmark owns one section of BENCHMARKS.md between ``<!-- name:start -->`` and
``<!-- name:end -->`` markers and rewrites only that section, so benchmarks can run separately.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nWritten by the scripts in `bench/`; each section says its machine, data size and baseline.\n"


def machine() -> str:
    """CPU model (from /proc/cpuinfo where platform.processor() is empty), cores, memory, Python."""
    name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    return f"{name or platform.machine()}, {os.cpu_count()} CPUs{memory}, Python {platform.python_version()}"


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def sustained_rate(progress: list[dict[str, Any]]) -> float | None:
    """Rows / trigger time of a streaming query's non-empty micro-batches after the first (query start,
    planning and cold workers excluded): what a running stream sustains. None without such batches."""
    later = [p for p in progress if p["batchId"] > 0 and p["numInputRows"]]
    millis = sum(p["durationMs"]["triggerExecution"] for p in later)
    return sum(p["numInputRows"] for p in later) / (millis / 1000) if millis else None


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)


@contextmanager
def private_broker(state_dir: Path) -> Iterator[str]:
    """A Tansu broker for one benchmark run, stopped by PID afterwards."""
    from pipelines.broker import EmbeddedBroker

    broker = EmbeddedBroker(state_dir)
    handle = broker.start()
    try:
        yield handle.bootstrap_servers
    finally:
        broker.stop()

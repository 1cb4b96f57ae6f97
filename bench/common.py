"""Shared benchmark plumbing: machine description, private services, and BENCHMARKS.md sections.

Each benchmark owns one section of BENCHMARKS.md between ``<!-- name:start -->`` and
``<!-- name:end -->`` markers and rewrites only that section, so benchmarks can run separately.

A benchmark run owns every process it needs and stops each one by its PID when done, whatever happens:
the embedded Apache Kafka broker (:func:`private_broker`), the Spark driver JVM and the Derby metastore
database ``build_spark`` starts for it (:func:`private_spark`). All their state lives under the run's own
temporary folder (:func:`bench_environ`), never in the checkout's ``.lakehouse/``.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pipelines.config import Settings

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
# Events the generator makes per user and day at its default rates (measured over 7-day specs; a 1-day spec
# makes more: first-day signups): how the benches size a GeneratorSpec's users for a wanted number of events.
EVENTS_PER_USER_DAY = 3.4
HEADER = "# Benchmarks\n\nWritten by the scripts in `bench/`; each section says its machine, data size and baseline.\n"


class PeakRss:
    """Peak resident memory of this process and its descendants, sampled on a thread every ``interval_s``.

    Once a second, not more often: a PSS sample walks the process's page tables (about 30 ms of CPU for a
    3 GiB JVM, more as it grows), so sampling five times a second took some 15% of a core from the measured
    builds on a 2-CPU machine - and more from the ones holding more memory, such as gated builds.

    Measured as PSS (proportional set size: a page shared by n processes counts 1/n in each), because
    PySpark's Python workers are forked from one daemon and share most of their pages; their RSS summed
    would count the interpreter and libraries once per worker.

    Kept per role as well as in all, because they answer different questions: the Python driver's peak shows
    whether a job collects data into Python, the Spark JVM's (driver and, in ``local[*]``, executors) is
    bounded by its heap setting, the Python workers' by the UDFs' batches. Each role's peak is its own
    highest sample; ``total`` is the highest sum of one sample, so it can be below the sum of the peaks, and
    ``at_peak`` that sample's split (which role to cut to lower the total). The first sample is kept too
    (``at_start``): what the process held before the measured work (a benchmark's data generator, say). The
    Derby metastore JVM is a descendant but not part of a build: left out.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.total = 0
        self.roles = {"Python driver": 0, "Spark JVM": 0, "Python workers": 0}
        self.at_start: dict[str, int] | None = None
        self.at_peak: dict[str, int] = dict.fromkeys(self.roles, 0)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            sample = dict.fromkeys(self.roles, 0)
            for process in [me, *me.children(recursive=True)]:
                try:
                    rss = process.memory_full_info().pss  # forked workers share pages: RSS would count them twice
                    name = process.name()
                    derby = name == "java" and any("derby.system.home" in arg for arg in process.cmdline())
                except psutil.Error:
                    continue
                if derby:
                    continue
                role = "Python driver" if process.pid == me.pid else "Spark JVM" if name == "java" else "Python workers"
                sample[role] += rss
            if self.at_start is None:
                self.at_start = dict(sample)
            for role, rss in sample.items():
                self.roles[role] = max(self.roles[role], rss)
            total = sum(sample.values())
            if total > self.total:
                self.total, self.at_peak = total, sample
            self._stop.wait(self._interval)

    def describe(self) -> str:
        start = self.at_start or {}
        parts = ", ".join(
            f"{role} {rss / 2**30:.2f} ({start.get(role, 0) / 2**30:.2f} at start)" for role, rss in self.roles.items()
        )
        split = ", ".join(f"{role} {rss / 2**30:.2f}" for role, rss in self.at_peak.items())
        return f"{self.total / 2**30:.2f} GiB in all ({split} at that moment; peaks per process role, GiB: {parts})"

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def return_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so a memory sample
    taken next is not what generated test data left behind."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to trim
        pass


def driver_memory(settings: Settings, override: str | None = None) -> str:
    """The heap of the one local JVM (driver and executors), ``override`` or as the profile sets it, for a
    bench's section."""
    memory = override or settings.spark.conf.get("spark.driver.memory")
    if memory is None:
        return "1 GiB, Spark's default"
    return f"{memory[:-1]} GiB" if memory.lower().endswith("g") else memory


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


def section_heading(title: str, validation: bool) -> str:
    """A section's ``## title``, marked as not a result when the run only proves the bench works (--validation)."""
    heading = f"## {title}"
    return heading + " - VALIDATION RUN at a small size: not a result" if validation else heading


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    elif "\n## History" in text:  # a new section goes before the history of earlier stacks
        head, history = text.split("\n## History", 1)
        text = head.rstrip() + "\n\n" + section + "\n\n## History" + history
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)


def bench_environ(work: Path, **overrides: str) -> dict[str, str]:
    """LAKEHOUSE__* settings for a private run under ``work``: the local profile with its lake, metastore
    database and broker state in that folder (``overrides``: more ``LAKEHOUSE__...`` keys)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE")}
    environ |= {
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__LAKE__ROOT": str(work / "lake"),
        "LAKEHOUSE__CATALOG__STATE_DIR": str(work / "metastore"),
        "LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(work / "broker"),
    }
    return environ | overrides


def _stop_pid(process: subprocess.Popen, name: str, timeout_s: float) -> None:
    """Wait for ``process`` (our child) to exit; SIGTERM, then SIGKILL by its PID if it does not."""
    for signal_it in (None, process.terminate, process.kill):
        if signal_it is not None:
            print(f"[bench] {name} (PID {process.pid}) still running: {signal_it.__name__}", file=sys.stderr)
            signal_it()
        try:
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue
    raise RuntimeError(f"{name} (PID {process.pid}) survived SIGKILL")


def stop_spark(spark: SparkSession, timeout_s: float = 30.0) -> None:
    """Stop the session AND its driver JVM (PySpark's ``spark.stop()`` leaves the JVM running until Python
    exits). The JVM exits on its own once the pipe PySpark holds on its stdin closes; if it does not, it
    gets SIGTERM then SIGKILL by PID. Its Python workers exit with it."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None)
    spark.stop()
    if process is None:  # a JVM PySpark did not launch (e.g. spark-submit): not ours to stop
        return
    if process.stdin is not None:
        process.stdin.close()
    _stop_pid(process, "Spark driver JVM", timeout_s)
    SparkContext._gateway = None
    SparkContext._jvm = None
    print(f"[bench] stopped Spark driver JVM (PID {process.pid})", file=sys.stderr)


@contextmanager
def private_spark(
    settings: Settings, app_name: str, extra_conf: dict[str, str] | None = None
) -> Iterator[SparkSession]:
    """A SparkSession for one run; afterwards its JVM and - when this run started it - the metastore database
    (Derby, under ``settings.catalog.state_dir``) are stopped by PID."""
    from pipelines.platform.metastore import EmbeddedMetastore
    from pipelines.platform.spark import build_spark

    metastore = EmbeddedMetastore.from_settings(settings) if settings.catalog.metastore == "embedded" else None
    started_here = metastore is not None and metastore.running() is None
    spark = None
    try:
        spark = build_spark(settings, app_name=app_name, extra_conf=extra_conf)
        yield spark
    finally:
        try:
            if spark is not None:
                stop_spark(spark)
        finally:
            if metastore is not None and started_here:
                handle = metastore.running()
                if metastore.stop() and handle is not None:
                    print(f"[bench] stopped metastore database (PID {handle.pid})", file=sys.stderr)


@contextmanager
def private_broker(state_dir: Path) -> Iterator[str]:
    """An embedded Apache Kafka broker (``pipelines.kafka.broker.EmbeddedBroker``, KRaft, one node) with its log dir
    in ``state_dir``, for one benchmark run; yields its bootstrap servers and stops it by its recorded PID."""
    from pipelines.kafka.broker import EmbeddedBroker

    broker = EmbeddedBroker(state_dir)
    handle = broker.start()
    try:
        yield handle.bootstrap_servers
    finally:
        broker.stop()
        print(f"[bench] stopped Kafka broker (PID {handle.pid})", file=sys.stderr)

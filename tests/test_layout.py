"""The package layout keeps its promises: modules import without starting Spark, and data flows one way.

The layers are ordered as the data flows (README, "Code map"): a package may import from itself, from the
shared foundation (config, platform, contracts) and from packages before it, never from one after it. A
reversed import is how a layer starts to depend on its consumers; this test names the line that does it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipelines"
FOUNDATION = {"config", "platform", "contracts"}
# Data order: a package may import the ones listed before it.
FLOW = [
    "kafka",
    "bronze",
    "quality",
    "silver",
    "gold",
    "replay",
    "erasure",
    "serve",
    "notebook",
    "ops",
    "orchestration",
    "synthetic",
    "cli",
    "__main__",
]


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _area(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_module_imports_without_starting_spark(tmp_path: Path) -> None:
    modules = [m for m in _modules() if m != "pipelines.__main__"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "from pyspark import SparkContext\n"
        "assert SparkContext._gateway is None and SparkContext._active_spark_context is None, 'a JVM started'\n"
        "print(len(sys.modules))\n"
    )
    environ = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}  # the DAG operator imports Airflow
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environ)
    assert done.returncode == 0, done.stderr[-2000:]


def test_packages_import_only_upstream_of_them() -> None:
    reversed_imports = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        area = _area(module)
        if area in FOUNDATION or area == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipelines"):
                targets = [node.module] if node.module != "pipelines" else [f"pipelines.{a.name}" for a in node.names]
                for target in targets:
                    other = _area(target)
                    if other in FOUNDATION or other == area:
                        continue
                    if FLOW.index(other) > FLOW.index(area):
                        reversed_imports.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {target}")
    assert reversed_imports == []


def test_synthetic_data_is_not_imported_by_the_platform() -> None:
    """Test and bench data stand where producers stand: only the CLI's demo commands may use them."""
    users = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if _area(module) in {"synthetic", "cli"}:
            continue
        if "pipelines.synthetic" in path.read_text():
            users.append(str(path.relative_to(PACKAGE.parent)))
    assert users == []


def test_only_the_platform_picks_a_storage_level() -> None:
    """Frames are persisted through ``platform.spark.persist_for_reuse``: pyspark's ``StorageLevel.MEMORY_AND_DISK``
    is the serialized level, unlike Scala's, and a module naming a level itself is how that slipped in (silver at
    10M events ran 13% slower for it, BENCHMARKS.md)."""
    naming = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "StorageLevel" in path.read_text() and path != PACKAGE / "platform" / "spark.py"
    ]
    assert naming == []


# Every createDataFrame outside the platform, by its first argument: each one an Arrow table (a pickled Python
# list would start Python workers for every job that reads the frame; rows the driver holds go through
# ``platform.spark.local_frame``). A new call fails here until it is checked and listed.
ARROW_FRAMES = {
    ("gate.py", "table"),
    ("tables.py", "table"),
    ("bronze.py", "table.select(BRONZE_EVENTS_SCHEMA.names).cast(BRONZE_EVENTS_SCHEMA)"),
    ("dimensions.py", "file_rows"),
    ("dimensions.py", "new"),
}


def test_driver_rows_reach_spark_as_arrow_only() -> None:
    calls = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "platform" / "spark.py":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "createDataFrame":
                calls.add((path.name, ast.get_source_segment(source, node.args[0])))
    assert calls == ARROW_FRAMES

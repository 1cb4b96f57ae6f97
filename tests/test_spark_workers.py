"""Bytecode in Spark's worker archives: imports from the zip stop compiling, and stale bytecode never runs."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
import zipfile
from pathlib import Path

from pipelines.platform.spark_workers import add_bytecode, has_current_bytecode, spark_archives

# Imports modules from an archive in a fresh interpreter and reports how many sources zipimport compiled.
PROBE = """
import builtins, json, sys, traceback
archive, modules = sys.argv[1], sys.argv[2:]
compiled = []
real_compile = builtins.compile
def counting_compile(source, filename, *args, **kwargs):
    if str(filename).startswith(archive):
        compiled.append(str(filename))
    return real_compile(source, filename, *args, **kwargs)
builtins.compile = counting_compile
sys.path.insert(0, archive)
result = {}
for name in modules:
    module = __import__(name, fromlist=["_"])
    if hasattr(module, "answer"):
        result["answer"] = module.answer()
    if hasattr(module, "fail"):
        try:
            module.fail()
        except ZeroDivisionError:
            result["traceback_file"] = traceback.extract_tb(sys.exc_info()[2])[-1].filename
result["compiled"] = sorted(set(compiled))  # zipimport can compile a module twice per import
print(json.dumps(result))
"""


def _probe(archive: Path, *modules: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(archive), *modules], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def _write_archive(path: Path, sources: dict[str, bytes], keep_from: Path | None = None) -> None:
    """Write ``sources``; with ``keep_from``, also copy that archive's .pyc entries (stale bytecode)."""
    with zipfile.ZipFile(path, "w") as target:
        for name, data in sources.items():
            target.writestr(name, data)
        if keep_from is not None:
            with zipfile.ZipFile(keep_from) as old:
                for name in old.namelist():
                    if name.endswith(".pyc"):
                        target.writestr(name, old.read(name))


SOURCES = {
    "pkg/__init__.py": b"",
    "pkg/mod.py": b"def answer():\n    return 41\n\n\ndef fail():\n    return 1 / 0\n",
    "pkg/latin.py": "# -*- coding: latin-1 -*-\nNAME = 'caf\xe9'\n".encode("latin-1"),
    "pkg/broken.py": b"print 'python 2'\n",  # does not compile: left to zipimport, which reports it on import
}


def test_bytecode_in_an_archive_skips_compiling_and_keeps_tracebacks(tmp_path) -> None:
    archive = tmp_path / "lib.zip"
    _write_archive(archive, SOURCES)
    assert not has_current_bytecode(archive)
    before = _probe(archive, "pkg.mod", "pkg.latin")
    assert len(before["compiled"]) == 3  # pkg/__init__, mod, latin: zipimport compiles every start

    assert add_bytecode(archive) is True
    assert add_bytecode(archive) is False  # idempotent: already current
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
    assert {"pkg/__init__.pyc", "pkg/mod.pyc", "pkg/latin.pyc"} <= names and "pkg/broken.pyc" not in names

    after = _probe(archive, "pkg.mod", "pkg.latin")
    assert after["compiled"] == []
    assert after["answer"] == 41
    assert after["traceback_file"] == f"{archive}/pkg/mod.py"


def test_bytecode_shipped_without_its_source_survives_the_rewrite(tmp_path) -> None:
    source = tmp_path / "sourceless.py"
    source.write_text("def answer():\n    return 7\n")
    compiled = tmp_path / "sourceless.pyc"
    py_compile.compile(str(source), cfile=str(compiled), doraise=True)
    archive = tmp_path / "lib.zip"
    _write_archive(archive, {**SOURCES, "pkg/sourceless.pyc": compiled.read_bytes()})

    assert add_bytecode(archive) is True
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.read("pkg/sourceless.pyc") == compiled.read_bytes()
    assert _probe(archive, "pkg.sourceless")["answer"] == 7


def test_stale_bytecode_in_an_archive_never_runs(tmp_path) -> None:
    original = tmp_path / "original.zip"
    _write_archive(original, SOURCES)
    add_bytecode(original)
    changed = tmp_path / "changed.zip"
    _write_archive(changed, {**SOURCES, "pkg/mod.py": SOURCES["pkg/mod.py"].replace(b"41", b"42")}, keep_from=original)

    result = _probe(changed, "pkg.mod")
    assert result["answer"] == 42  # the .pyc of the old source fails its hash check: the source is compiled
    assert result["compiled"] == [f"{changed}/pkg/mod.py"]


def test_installed_spark_worker_archives_carry_bytecode() -> None:
    """``./dev install`` precompiled pyspark for Spark's workers (``python -m pipelines.platform.spark_workers``)."""
    archives = spark_archives()
    assert [a.name for a in archives if a.name.startswith("pyspark")] == ["pyspark.zip"]
    assert all(has_current_bytecode(archive) for archive in archives)
    pyspark_zip = next(a for a in archives if a.name == "pyspark.zip")
    result = _probe(pyspark_zip, "pyspark.worker", "pyspark.sql.streaming.python_streaming_source_runner")
    assert result["compiled"] == []

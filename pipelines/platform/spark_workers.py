"""Fast start for Spark's Python worker processes: bytecode inside Spark's ``pyspark.zip``.

Spark puts ``$SPARK_HOME/python/lib/pyspark.zip`` (and py4j's zip) first on every Python worker's path,
also when pyspark is pip-installed. The zips ship sources only, and zipimport never writes bytecode, so
every fresh worker compiled pyspark again: about 0.9 s of CPU before it did any work (1.2 s instead of
0.3 s to import the streaming source runner on a 2-core machine). Each streaming query starts one such
process for its Python source, and Python data sources start more for planning.

``add_bytecode`` rewrites an archive with a checked-hash ``.pyc`` next to each ``.py``: zipimport uses it
while it matches the source's hash and compiles the source otherwise, so a stale or foreign ``.pyc`` can
never run. The new archive replaces the old one atomically (a new file, so hard links into a package
cache are left alone). ``./dev install`` runs this; on a cluster, run it once per node after installing
Spark: ``python -m pipelines.platform.spark_workers [--spark-home DIR]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import py_compile
import tempfile
import warnings
import zipfile
from pathlib import Path


def spark_archives(spark_home: Path | None = None) -> list[Path]:
    """The zips Spark puts on its Python workers' path (pip-installed pyspark when no home is given)."""
    if spark_home is None:
        import pyspark

        spark_home = Path(pyspark.__file__).parent
    return sorted((spark_home / "python" / "lib").glob("*.zip"))


# Written into a rewritten archive: which bytecode version it holds. A new Spark brings a new archive without it.
MARKER = "lakehouse-bytecode.txt"


def has_current_bytecode(archive: Path) -> bool:
    """The archive was rewritten by ``add_bytecode`` for this interpreter's bytecode version."""
    with zipfile.ZipFile(archive) as zipped:
        try:
            return zipped.read(MARKER) == importlib.util.MAGIC_NUMBER.hex().encode()
        except KeyError:
            return False


def add_bytecode(archive: Path) -> bool:
    """Rewrite ``archive`` with checked-hash bytecode for its sources; False when it already has it."""
    if has_current_bytecode(archive):
        return False
    handle, temporary = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)
    os.close(handle)
    try:
        with (
            zipfile.ZipFile(archive) as source,
            zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as target,
            tempfile.TemporaryDirectory() as scratch,
        ):
            names = set(source.namelist())
            for info in source.infolist():
                if info.filename == MARKER or (info.filename.endswith(".pyc") and info.filename[:-1] in names):
                    continue  # rebuilt below (bytecode without a source next to it is kept as it is)
                data = source.read(info)
                target.writestr(info, data)
                if info.filename.endswith(".py"):
                    bytecode = _compile(data, f"{archive}{os.sep}{info.filename}", Path(scratch))
                    if bytecode is not None:
                        entry = zipfile.ZipInfo(f"{info.filename}c", info.date_time)
                        entry.compress_type = zipfile.ZIP_STORED  # read at every worker start: skip inflating
                        target.writestr(entry, bytecode)
            target.writestr(MARKER, importlib.util.MAGIC_NUMBER.hex())
        os.chmod(temporary, archive.stat().st_mode & 0o777)
        os.replace(temporary, archive)
    except BaseException:
        os.unlink(temporary)
        raise
    return True


def _compile(source: bytes, shown_path: str, scratch: Path) -> bytes | None:
    """Checked-hash .pyc bytes for one source; None when it does not compile (zipimport then reports it)."""
    source_file, compiled_file = scratch / "module.py", scratch / "module.pyc"
    source_file.write_bytes(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyspark's own SyntaxWarnings are not ours to print
            py_compile.compile(
                str(source_file),
                cfile=str(compiled_file),
                dfile=shown_path,  # tracebacks name the file inside the archive
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
    except py_compile.PyCompileError:
        return None
    return compiled_file.read_bytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spark-home", type=Path, help="Spark installation (default: the pip-installed pyspark)")
    args = parser.parse_args(argv)
    for archive in spark_archives(args.spark_home):
        if add_bytecode(archive):
            print(f">> {archive}: bytecode added (faster Python worker start)")


if __name__ == "__main__":
    main()

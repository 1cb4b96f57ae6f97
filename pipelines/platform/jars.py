"""The JVM jars the platform needs on top of pyspark's, resolved from Maven Central by pinned coordinates.

Three groups, each declared by a small pom in ``infra/maven/`` (the only place versions live):

* ``spark``     - Delta (``delta-spark_4.2_2.13``), Spark's Kafka source (``spark-sql-kafka-0-10``),
                  S3A (``hadoop-aws`` + the AWS SDK bundle) and the metastore's JDBC client; loaded by
                  every SparkSession (``pipelines.platform.spark``) and shipped to executors;
* ``kafka``     - the embedded Apache Kafka broker (KRaft), run with ``java`` (``pipelines.kafka.broker``);
* ``metastore`` - the Derby network server holding the local Hive metastore (``pipelines.platform.metastore``).

``python -m pipelines.platform.jars`` (run by ``./dev install``) calls Maven's ``dependency:copy-dependencies``
with strict checksums, drops every jar pyspark already ships (same artifact, any version: two copies of a
class on one classpath is how Spark breaks in odd ways), and writes a manifest. A later install whose pom
and files match the manifest makes no Maven call at all. Users without Maven access set
``LAKEHOUSE_JARS_DIR`` to a folder holding ``spark/``, ``kafka/`` and ``metastore/`` subfolders of
pre-downloaded jars; the same required-artifact check runs on them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import project_home

POM_DIR = Path("infra") / "maven"  # in the project directory: the pinned coordinates
JARS_DIR = Path(".lakehouse") / "jars"  # in the project directory, unless LAKEHOUSE_JARS_DIR names a folder
JARS_DIR_ENV = "LAKEHOUSE_JARS_DIR"
MANIFEST = "manifest.json"
_VERSIONED = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d[\w.\-]*)\.jar$")


class JarsError(RuntimeError):
    """Jars are missing or could not be resolved; the message says which and what to do."""


@dataclass(frozen=True)
class JarGroup:
    name: str
    pom: str
    # artifacts that must be present (file name prefixes): what makes the group usable
    required: tuple[str, ...]
    # drop jars pyspark already ships (only for jars that join Spark's classpath)
    skip_pyspark_jars: bool


GROUPS = {
    group.name: group
    for group in (
        JarGroup(
            "spark",
            "spark.pom.xml",
            (
                "delta-spark_4.2_2.13-",
                "delta-storage-",
                "spark-sql-kafka-0-10_2.13-",
                "spark-token-provider-kafka-0-10_2.13-",
                "kafka-clients-",
                "commons-pool2-",
                "hadoop-aws-",
                "bundle-",
                "derbyclient-",
            ),
            skip_pyspark_jars=True,
        ),
        JarGroup(
            "kafka",
            "kafka.pom.xml",
            ("kafka_2.13-", "kafka-server-", "log4j-core-", "log4j-slf4j2-impl-", "slf4j-api-2."),
            False,
        ),
        JarGroup("metastore", "metastore.pom.xml", ("derbynet-", "derby-", "derbytools-", "derbyshared-"), False),
    )
}


def jars_root() -> Path:
    configured = os.environ.get(JARS_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else project_home() / JARS_DIR


def group_dir(name: str) -> Path:
    return jars_root() / name


def jar_paths(name: str) -> list[Path]:
    """The jars of one group, checked: raises JarsError naming what is missing and how to get it."""
    group = GROUPS[name]
    folder = group_dir(name)
    jars = sorted(folder.glob("*.jar"))
    names = [jar.name for jar in jars]
    missing = [prefix.rstrip("-") for prefix in group.required if not any(n.startswith(prefix) for n in names)]
    if missing:
        raise JarsError(
            f"jars for {name!r} missing in {folder}: {', '.join(missing)}; run `./dev install` "
            f"(resolves them from Maven) or point {JARS_DIR_ENV} at a folder of pre-downloaded jars"
        )
    return jars


def classpath(name: str) -> str:
    return os.pathsep.join(str(jar) for jar in jar_paths(name))


def _artifact(file_name: str) -> str:
    match = _VERSIONED.match(file_name)
    return match.group("artifact") if match else file_name


def _pyspark_artifacts() -> set[str]:
    import pyspark

    return {_artifact(jar.name) for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_matches(folder: Path, pom_hash: str) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if manifest.get("pom_sha256") != pom_hash:
        return False
    files = manifest.get("files", {})
    present = {jar.name: jar.stat().st_size for jar in folder.glob("*.jar")}
    return present == {name: entry["size"] for name, entry in files.items()}


def resolve(name: str, *, verbose: bool = False) -> tuple[Path, bool]:
    """Make group ``name`` present and current; returns (folder, whether Maven ran)."""
    group = GROUPS[name]
    folder = group_dir(name)
    if os.environ.get(JARS_DIR_ENV):  # user-provided jars: check, never download
        jar_paths(name)
        return folder, False
    pom = project_home() / POM_DIR / group.pom
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()
    if _manifest_matches(folder, pom_hash):
        return folder, False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsError(
            f"Maven (mvn) is not installed, so the {name!r} jars cannot be resolved; install Maven "
            f"(apt-get install maven) or point {JARS_DIR_ENV} at a folder of pre-downloaded jars"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as staging:
        command = [
            mvn,
            "-B",
            "--strict-checksums",  # a corrupt download fails instead of landing on the classpath
            *([] if verbose else ["-q"]),
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        done = subprocess.run(command, capture_output=not verbose, text=True)
        if done.returncode != 0:
            output = ((done.stdout or "") + (done.stderr or "")).strip().splitlines()
            errors = [line for line in output if "ERROR" in line][:3] or output[-3:]
            raise JarsError(f"Maven could not resolve the {name!r} jars ({pom}):\n  " + "\n  ".join(errors))
        shipped = _pyspark_artifacts() if group.skip_pyspark_jars else set()
        for jar in Path(staging).glob("*.jar"):
            if _artifact(jar.name) in shipped:
                jar.unlink()
        files = {jar.name: {"size": jar.stat().st_size, "sha256": _sha256(jar)} for jar in Path(staging).glob("*.jar")}
        (Path(staging) / MANIFEST).write_text(json.dumps({"pom_sha256": pom_hash, "files": files}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
        folder.chmod(0o755)
    jar_paths(name)
    return folder, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.platform.jars", description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", help=f"groups to resolve: {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--verbose", action="store_true", help="show Maven's output")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown jar group(s) {unknown}; expected {', '.join(GROUPS)}")
    try:
        for name in args.groups or list(GROUPS):
            started = time.monotonic()
            folder, downloaded = resolve(name, verbose=args.verbose)
            size = sum(jar.stat().st_size for jar in folder.glob("*.jar"))
            how = f"resolved in {time.monotonic() - started:.1f}s" if downloaded else "up to date"
            print(f"jars {name}: {len(list(folder.glob('*.jar')))} files, {size / 2**20:.0f} MiB in {folder} ({how})")
    except JarsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

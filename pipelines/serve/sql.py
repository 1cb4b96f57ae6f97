"""The SQL endpoint: Spark Thrift Server (HiveServer2 protocol) for JDBC/ODBC clients and BI tools.

It runs inside a PySpark session of the profile, so it reads the same Delta tables through the same catalog as
the jobs: ``gold.*`` and ``silver.*`` by name, always at their latest published version (Delta resolves the
snapshot per query; nothing to restart after a publication). Clients log in with a user name and password from
the users file (``serve.sql_users_file``, PBKDF2 hashes; ``serve sql-user add``); each user is bound to one
tenant, or to every tenant for operators. Isolation is enforced inside the engine by a small Spark extension
compiled from ``infra/sql-endpoint/`` (``lakehouse.sql.TenantIsolation``): a tenant login's queries read every
table through ``tenant_id = '<tenant>'``, only ``gold`` and ``silver`` tables are readable, and anything but
read-only metadata commands is refused. See the README for beeline, DBeaver and Superset settings.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import Settings
from pipelines.platform.catalog import name_tables
from pipelines.platform.jars import jar_paths, jars_root
from pipelines.platform.spark import build_spark, spark_conf
from pipelines.serve.tokens import write_private

SOURCES = Path("infra") / "sql-endpoint" / "src"  # in the project directory
EXTENSION = "lakehouse.sql.TenantIsolation"
AUTHENTICATOR = "lakehouse.sql.PasswordAuthenticator"
CUSTOM_CLASS_KEY = "hive.server2.custom.authentication.class"
USERS_FILE_ENV = "LAKEHOUSE_SQL_USERS_FILE"
ITERATIONS = 120_000


class SqlEndpointError(ValueError):
    """The endpoint cannot start or a users-file change is refused; the message says what to do."""


@dataclass(frozen=True)
class SqlUser:
    name: str
    tenant: str


class SqlUsers:
    """The users file the endpoint authenticates against (read by ``lakehouse.sql.SqlUsers`` in the JVM)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [line.split("\t") for line in self.path.read_text().splitlines() if line and not line.startswith("#")]

    def users(self) -> list[SqlUser]:
        return [SqlUser(fields[0], fields[1]) for fields in self._lines()]

    def add(self, name: str, tenant: str, password: str | None = None) -> str:
        """Add ``name`` bound to ``tenant``; returns the password (generated when not given)."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise SqlEndpointError(f"user name {name!r}: use letters, digits, '-' and '_'")
        if any(user.name == name for user in self.users()):
            raise SqlEndpointError(f"a SQL user named {name!r} exists in {self.path}: remove it first")
        password = password or secrets.token_urlsafe(18)
        salt = secrets.token_bytes(16)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
        line = "\t".join([name, tenant, str(ITERATIONS), salt.hex(), digest.hex()])
        self._write([*("\t".join(fields) for fields in self._lines()), line])
        return password

    def remove(self, name: str) -> None:
        kept = [fields for fields in self._lines() if fields[0] != name]
        if len(kept) == len(self._lines()):
            raise SqlEndpointError(f"no SQL user named {name!r} in {self.path}")
        self._write(["\t".join(fields) for fields in kept])

    def _write(self, lines: list[str]) -> None:
        header = "# name\ttenant\titerations\tsalt\tpbkdf2-sha256 (written by `serve sql-user`)\n"
        write_private(self.path, header + "".join(line + "\n" for line in lines))


def users_file(settings: Settings) -> SqlUsers:
    return SqlUsers(Path(settings.resolve_path(settings.serve.sql_users_file)))


def extension_jar(settings: Settings) -> Path:
    """The endpoint's Spark extension and authenticator, compiled from ``infra/sql-endpoint`` with the JDK's
    javac against pyspark's own jars; rebuilt only when the sources change (their hash names the jar)."""
    import pyspark

    sources = sorted((Path(settings.home) / SOURCES).rglob("*.java"))
    if not sources:
        raise SqlEndpointError(f"no Java sources under {Path(settings.home) / SOURCES}")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    target = jars_root() / "sql-endpoint" / f"lakehouse-sql-endpoint-{digest}.jar"
    if target.exists():
        return target
    javac = shutil.which("javac") or (Path(os.environ.get("JAVA_HOME", "/nonexistent")) / "bin" / "javac")
    if not Path(javac).exists():
        raise SqlEndpointError("javac not found: the SQL endpoint compiles a small Spark extension; install a JDK 17+")
    classpath = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory() as build:
        done = subprocess.run(
            [str(javac), "--release", "17", "-cp", classpath, "-d", build, *map(str, sources)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SqlEndpointError(f"compiling {SOURCES} failed:\n{done.stderr[-2000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(".tmp")
        with zipfile.ZipFile(staging, "w") as jar:
            for path in sorted(Path(build).rglob("*.class")):
                jar.write(path, path.relative_to(build).as_posix())
        os.replace(staging, target)
    return target


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def endpoint_conf(settings: Settings, jar: Path, port: int) -> dict[str, str]:
    base = spark_conf(settings)
    scratch = Path(settings.resolve_path(settings.serve.sql_state_dir)) / "scratch"
    # Thrift's query threads load classes through the JVM's class path, not through spark.jars' loader: Delta
    # and the extension go on it (Delta classes first used by a tenant's filtered query were otherwise missing).
    on_class_path = [base.get("spark.driver.extraClassPath", ""), *map(str, jar_paths("spark")), str(jar)]
    class_path = [p for p in on_class_path if p]
    return {
        "spark.sql.extensions": f"{base['spark.sql.extensions']},{EXTENSION}",
        "spark.driver.extraClassPath": os.pathsep.join(class_path),
        "spark.sql.runSQLOnFiles": "false",  # no path-based reads around the catalog's names
        "spark.sql.hive.thriftServer.singleSession": "false",  # one Spark session per connection
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.thrift.bind.host": settings.serve.host,
        "spark.hadoop.hive.server2.transport.mode": "binary",
        "spark.hadoop.hive.server2.authentication": "CUSTOM",
        "spark.hadoop.hive.server2.custom.authentication.class": AUTHENTICATOR,
        # Hive's CUSTOM provider reads its class from a fresh HiveConf, which sees JVM system properties only.
        "spark.driver.extraJavaOptions": " ".join(
            p for p in (base.get("spark.driver.extraJavaOptions", ""), f"-D{CUSTOM_CLASS_KEY}={AUTHENTICATOR}") if p
        ),
        "spark.hadoop.hive.server2.enable.doAs": "true",  # queries run as the login: the extension reads it
        "spark.hadoop.hive.server2.logging.operation.enabled": "false",
        "spark.hadoop.hive.exec.scratchdir": str(scratch / "hdfs"),
        "spark.hadoop.hive.exec.local.scratchdir": str(scratch / "local"),
        "spark.hadoop.hive.downloaded.resources.dir": str(scratch / "resources"),
        "spark.ui.enabled": "false",
    }


def run_endpoint(settings: Settings, say: Callable[[str], None], port: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM: the Thrift server inside this process's Spark driver."""
    users = users_file(settings)
    if not users.users():
        raise SqlEndpointError(f"no SQL users in {users.path}: add one with `serve sql-user add --name N --tenant T`")
    jar = extension_jar(settings)
    port = port if port is not None else settings.serve.sql_port
    port = port or _free_port(settings.serve.host)
    os.environ[USERS_FILE_ENV] = str(users.path)  # the JVM (started next) reads it
    (Path(settings.resolve_path(settings.serve.sql_state_dir)) / "scratch" / "local").mkdir(parents=True, exist_ok=True)
    spark = build_spark(settings, app_name="sql-endpoint", extra_conf=endpoint_conf(settings, jar, port))
    named = name_tables(spark, settings)
    jvm = spark._jvm
    server = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithSparkSession(
        spark._jsparkSession, False
    )
    host = settings.serve.host
    say(
        f"SQL endpoint on jdbc:hive2://{host}:{port}/default ({len(named)} tables named; users from {users.path}); "
        "Ctrl-C stops it"
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    say("stopping the SQL endpoint")
    server.stop()

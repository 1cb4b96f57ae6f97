"""Serving as clients see it, over gold and silver tables the real builds published: the metrics API (a real
uvicorn server), the SQL endpoint (Spark Thrift Server; PyHive and beeline as clients) and direct reads with
DuckDB and Polars.

Every answer is checked against the same table read with Spark, so a filter, type conversion or tenant scoping
mistake shows as a difference. Tokens and logins are managed through the CLI while the servers run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_silver import D1, D2, D5, fixture_rows, lake_settings, read_rows

from pipelines import gold, silver
from pipelines.platform.lake import Lake
from pipelines.serve.metrics import METRICS
from pipelines.synthetic.bronze import bronze_table, write_bronze

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Gold built from the silver fixture's bronze rows (tenants t1, t2), a tenant token per tenant, an operator
    token, and the API started with `python -m pipelines serve api` on a free port (stopped by PID)."""
    root = tmp_path_factory.mktemp("serve")
    settings = lake_settings(root)
    write_bronze(spark, Lake(settings).bronze_events, bronze_table(fixture_rows()))
    silver.build(spark, settings, D1, D5)
    gold.build(spark, settings, D1, D5)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE__")}
    environ |= {
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__LAKE__ROOT": str(root / "lake"),
        "LAKEHOUSE__SERVE__TOKENS_FILE": str(root / "tokens.json"),
        "LAKEHOUSE__SERVE__MAX_RANGE_DAYS": "31",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelines", *args], env=environ, capture_output=True, text=True, timeout=120
        )

    tokens = {}
    for name, option in (("t1", ["--tenant", "t1"]), ("t2", ["--tenant", "t2"]), ("ops", ["--all-tenants"])):
        created = cli("serve", "token", "create", "--name", name, *option)
        assert created.returncode == 0, created.stderr
        tokens[name] = created.stdout.strip()
    assert oct((root / "tokens.json").stat().st_mode & 0o777) == "0o600"
    assert all(t not in (root / "tokens.json").read_text() for t in tokens.values())  # hashes only

    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "serve", "api"],
        env=environ,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found, line
        yield {"url": found.group(0), "tokens": tokens, "settings": settings, "cli": cli, "environ": environ}
    finally:
        server.terminate()
        server.wait(timeout=30)


def get(served: dict[str, Any], path: str, token: str | None = "t1", accept: str | None = None):
    """(status, headers, body) of a GET; ``token`` names one of the fixture's tokens (None: no header)."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {served['tokens'].get(token, token)}"
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(served["url"] + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def spark_rows(spark, settings, table: str, tenant: str, first: date, last: date) -> list[dict[str, Any]]:
    """The gold rows the API must answer, as JSON renders them (ISO dates, decimals as strings)."""

    def rendered(value: Any) -> Any:
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        return value

    rows = read_rows(spark, gold.table_path(settings, table))
    return [
        {k: rendered(v) for k, v in row.items() if k != "tenant_id"}
        for row in rows
        if row["tenant_id"] == tenant and first <= row["date"] <= last
    ]


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def test_every_metric_answers_exactly_the_tenants_gold_rows(spark, served) -> None:
    first, last = D1, D5
    for metric in METRICS:
        for tenant in ("t1", "t2"):
            status, headers, body = get(served, f"/v1/{metric.path}?from={first}&to={last}", token=tenant)
            assert status == 200, (metric.path, body)
            answer = json.loads(body)
            assert answer["tenant"] == tenant and answer["table"] == f"gold.{metric.table}"
            assert answer["version"] == int(headers["X-Table-Version"])
            expected = spark_rows(spark, served["settings"], metric.table, tenant, first, last)
            assert canonical(answer["rows"]) == canonical(expected), (metric.path, tenant)
            assert [r["date"] for r in answer["rows"]] == sorted(r["date"] for r in answer["rows"])
    dau = json.loads(get(served, f"/v1/active-users?from={D1}&to={D5}", token="t1")[2])["rows"]
    assert dau and sum(r["dau"] for r in dau) > 0  # the fixture has activity: an empty answer is not a pass


def test_filters_narrow_the_rows_and_csv_matches_json(spark, served) -> None:
    status, _, body = get(served, f"/v1/event-counts?from={D1}&to={D5}&event_type=page_view")
    assert status == 200
    rows = json.loads(body)["rows"]
    everything = json.loads(get(served, f"/v1/event-counts?from={D1}&to={D5}")[2])["rows"]
    assert rows == [r for r in everything if r["event_type"] == "page_view"] and 0 < len(rows) < len(everything)

    flagged = json.loads(get(served, f"/v1/anomalies?from={D1}&to={D5}&flagged=false")[2])["rows"]
    assert all(r["flagged"] is False for r in flagged)

    status, headers, text = get(served, f"/v1/event-counts?from={D1}&to={D5}", accept="text/csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    from_csv = list(csv.DictReader(io.StringIO(text)))
    assert [{k: str(v) for k, v in r.items()} for r in everything] == from_csv
    assert get(served, f"/v1/event-counts?from={D1}&to={D5}&format=csv")[2] == text


def test_a_token_reads_only_its_tenant(served) -> None:
    path = f"/v1/active-users?from={D1}&to={D5}"
    status, _, body = get(served, path + "&tenant=t2", token="t1")
    assert status == 403 and json.loads(body) == {
        "error": "tenant: this token reads tenant t1 only",
        "parameter": "tenant",
    }
    status, headers, body = get(served, path, token=None)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert get(served, path, token="lh_not-a-token")[0] == 401
    status, _, body = get(served, path, token="ops")
    assert status == 400 and json.loads(body)["parameter"] == "tenant"  # an operator names the tenant
    as_ops = json.loads(get(served, path + "&tenant=t2", token="ops")[2])
    assert as_ops["tenant"] == "t2" and as_ops["rows"] == json.loads(get(served, path, token="t2")[2])["rows"]

    created = served["cli"]("serve", "token", "create", "--name", "short-lived", "--tenant", "t1")
    secret = created.stdout.strip()
    assert get(served, path, token=secret)[0] == 200  # no restart: the file is re-read when it changes
    revoked = served["cli"]("serve", "token", "revoke", "short-lived")
    assert revoked.returncode == 0, revoked.stderr
    assert get(served, path, token=secret)[0] == 401
    again = served["cli"]("serve", "token", "revoke", "short-lived")
    assert again.returncode == 2 and "no token named 'short-lived'" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize(
    ("query", "parameter", "message"),
    [
        (f"from={D1}&to=2026-13-01", "to", "month value is outside expected range"),
        (f"from={D5}&to={D1}", "from", f"from: {D5} is after to ({D1})"),
        (f"to={D1}", "from", "from: Field required"),
        (f"from={D1}&to={D5}&format=xml", "format", "format: String should match pattern"),
        (f"from={D1}&to={D5}&frm=1", "frm", "frm: unknown parameter; known: format, from, tenant, to"),
        (f"from={D1}&to={D1 + timedelta(days=31)}", "to", "to: at most 31 days per request"),
    ],
)
def test_a_bad_parameter_gets_a_400_naming_it(served, query: str, parameter: str, message: str) -> None:
    status, _, body = get(served, f"/v1/active-users?{query}")
    answer = json.loads(body)
    assert status == 400 and answer["parameter"] == parameter and message in answer["error"], answer


def test_a_bad_filter_value_names_the_filter(served) -> None:
    status, _, body = get(served, f"/v1/anomalies?from={D1}&to={D5}&flagged=maybe")
    assert status == 400 and json.loads(body) == {
        "error": "flagged: 'maybe' is not true or false",
        "parameter": "flagged",
    }


def test_answers_are_cached_until_gold_publishes_a_new_version(spark, served) -> None:
    path = f"/v1/active-users?from={D1}&to={D5}"
    _, first_headers, first = get(served, path, token="t2")
    _, headers, body = get(served, path, token="t2")
    assert headers["X-Cache"] == "hit" and body == first
    assert headers["X-Table-Version"] == first_headers["X-Table-Version"]

    # A new publication of one day (what a gold build's replaceWhere commit looks like to a reader).
    from pyspark.sql import functions as F

    target = gold.table_path(served["settings"], "daily_active_users")
    day = F.col("date") == F.lit(D1)
    republished = spark.read.format("delta").load(target).filter(day).withColumn("dau", F.col("dau") + 100)
    republished.write.format("delta").mode("overwrite").option("replaceWhere", f"date = '{D1}'").save(target)

    _, headers, body = get(served, path, token="t2")
    assert headers["X-Cache"] == "miss" and int(headers["X-Table-Version"]) > int(first_headers["X-Table-Version"])
    before = {r["date"]: r["dau"] for r in json.loads(first)["rows"]}
    after = {r["date"]: r["dau"] for r in json.loads(body)["rows"]}
    assert after == {d: dau + 100 if d == D1.isoformat() else dau for d, dau in before.items()}
    assert get(served, path, token="t2")[1]["X-Cache"] == "hit"


def test_openapi_documents_every_metric_and_its_filters(served) -> None:
    status, _, body = get(served, "/openapi.json", token=None)
    spec = json.loads(body)
    assert status == 200
    for metric in METRICS:
        operation = spec["paths"][f"/v1/{metric.path}"]["get"]
        names = {p["name"] for p in operation["parameters"]}
        assert names == {"from", "to", "tenant", "format", *metric.filters}, metric.path
    assert get(served, "/docs", token=None)[0] == 200
    assert get(served, "/health", token=None)[2] == '{"status":"ok"}'


def test_duckdb_and_polars_read_gold_through_delta_rs(spark, served) -> None:
    """The light-tool recipe the README documents: no JVM, the same rows Spark reads."""
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    path = gold.table_path(served["settings"], "event_counts")
    expected = sorted((r["tenant_id"], r["date"], r["event_type"], r["events"]) for r in read_rows(spark, path))
    event_counts = DeltaTable(path).to_pyarrow_dataset()  # noqa: F841 - DuckDB finds it by name
    with duckdb.connect() as con:
        via_duckdb = sorted(con.execute("SELECT tenant_id, date, event_type, events FROM event_counts").fetchall())
    via_polars = sorted(pl.read_delta(path).select("tenant_id", "date", "event_type", "events").iter_rows())
    assert via_duckdb == expected == via_polars and expected


# --- the SQL endpoint ------------------------------------------------------------------------------------------

PASSWORDS = {"t1_bi": "pw-t1", "t2_bi": "pw-t2", "operator": "pw-ops"}


@pytest.fixture(scope="module")
def sql_endpoint(served) -> Iterator[int]:
    """`python -m pipelines serve sql` on a free port with a login per tenant and an operator login; stopped by
    PID (SIGTERM: the server stops its Thrift service and Spark)."""
    root = Path(served["environ"]["LAKEHOUSE__SERVE__TOKENS_FILE"]).parent
    environ = served["environ"] | {
        "LAKEHOUSE__SERVE__SQL_USERS_FILE": str(root / "sql_users.tsv"),
        "LAKEHOUSE__SERVE__SQL_STATE_DIR": str(root / "sql-endpoint"),
        "LAKEHOUSE__CATALOG__METASTORE": "none",
        "LAKEHOUSE__SPARK__MASTER": "local[2]",
    }
    for name, tenant in (("t1_bi", ["--tenant", "t1"]), ("t2_bi", ["--tenant", "t2"]), ("operator", ["--all-tenants"])):
        added = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines",
                "serve",
                "sql-user",
                "add",
                "--name",
                name,
                "--password-env",
                "PASSWORD",
                *tenant,
            ],
            env=environ | {"PASSWORD": PASSWORDS[name]},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert added.returncode == 0, added.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "serve", "sql"],
        env=environ,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = None
        for line in server.stderr:  # Spark's start-up lines come first
            found = re.search(r"jdbc:hive2://127\.0\.0\.1:(\d+)/default", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "the SQL endpoint did not print its JDBC URL"
        threading.Thread(target=server.stderr.read, daemon=True).start()  # keep draining its log
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def sql(port: int, user: str, statement: str, password: str | None = None) -> list[tuple]:
    from pyhive import hive

    connection = hive.connect(
        host="127.0.0.1", port=port, username=user, password=password or PASSWORDS[user], auth="CUSTOM"
    )
    try:
        cursor = connection.cursor()
        cursor.execute(statement)
        return cursor.fetchall()
    finally:
        connection.close()


SERVED_TABLES = [f"gold.{metric.table}" for metric in METRICS] + ["silver.events"]


def test_sql_logins_see_only_their_tenants_rows_in_every_table(spark, served, sql_endpoint) -> None:
    settings = served["settings"]
    both = spark.read.format("delta").load(gold.table_path(settings, "daily_active_users")).select("tenant_id")
    assert {r.tenant_id for r in both.distinct().collect()} == {"t1", "t2"}  # isolation has something to hide
    for table in SERVED_TABLES:
        path = Lake(settings).table(*table.split("."))
        expected = {
            r["tenant_id"]: r["count"]
            for r in spark.read.format("delta").load(path).groupBy("tenant_id").count().collect()
        }
        statement = f"SELECT tenant_id, count(*) FROM {table} GROUP BY tenant_id"
        assert dict(sql(sql_endpoint, "operator", statement)) == expected, table
        for tenant in ("t1", "t2"):
            seen = dict(sql(sql_endpoint, f"{tenant}_bi", statement))
            assert seen == ({tenant: expected[tenant]} if tenant in expected else {}), table  # no other tenant's rows
    # a predicate naming the other tenant, a subquery and time travel all go through the same filter
    assert sql(sql_endpoint, "t1_bi", "SELECT count(*) FROM gold.event_counts WHERE tenant_id = 't2'") == [(0,)]
    nested = (
        "SELECT count(*) FROM gold.event_counts WHERE date IN (SELECT date FROM silver.events WHERE tenant_id = 't2')"
    )
    assert sql(sql_endpoint, "t1_bi", nested) == [(0,)]
    old = sql(sql_endpoint, "t1_bi", "SELECT DISTINCT tenant_id FROM gold.daily_active_users VERSION AS OF 0")
    assert old == [("t1",)]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("SELECT count(*) FROM ops.quality_results", "ops.quality_results is not available to tenant logins"),
        ("SELECT count(*) FROM silver.dim_devices", "silver.dim_devices is not available to tenant logins"),
        ("DROP TABLE gold.revenue", "tenant logins are read-only: DropTable is not allowed"),
        ("DELETE FROM gold.revenue WHERE true", "tenant logins are read-only"),
        ("CREATE TEMPORARY VIEW mine AS SELECT 1", "tenant logins are read-only"),
        ("SET spark.sql.runSQLOnFiles=true", "tenant logins cannot change settings"),
        ("SELECT count(*) FROM delta.`{lake}/gold/revenue`", "TABLE_OR_VIEW_NOT_FOUND"),
    ],
)
def test_sql_tenant_logins_are_refused_anything_but_reading_their_rows(
    served, sql_endpoint, statement: str, message: str
) -> None:
    from pyhive.exc import OperationalError

    lake = served["environ"]["LAKEHOUSE__LAKE__ROOT"]
    with pytest.raises(OperationalError, match=re.escape(message)):
        sql(sql_endpoint, "t1_bi", statement.format(lake=lake))
    assert sql(sql_endpoint, "t1_bi", "SELECT count(*) FROM gold.revenue")[0][0] >= 0  # the session still works


def test_sql_refuses_a_wrong_password_and_a_removed_login(served, sql_endpoint) -> None:
    from thrift.transport.TTransport import TTransportException

    with pytest.raises(TTransportException, match="Error validating the login"):
        sql(sql_endpoint, "t1_bi", "SELECT 1", password="wrong")
    environ = served["environ"] | {
        "LAKEHOUSE__SERVE__SQL_USERS_FILE": str(
            Path(served["environ"]["LAKEHOUSE__SERVE__TOKENS_FILE"]).parent / "sql_users.tsv"
        )
    }
    cli = [sys.executable, "-m", "pipelines", "serve", "sql-user"]
    added = subprocess.run(
        [*cli, "add", "--name", "temp_bi", "--tenant", "t2"], env=environ, capture_output=True, text=True
    )
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip()
    distinct = "SELECT DISTINCT tenant_id FROM gold.daily_active_users"
    assert sql(sql_endpoint, "temp_bi", distinct, password=password) == [("t2",)]
    removed = subprocess.run([*cli, "remove", "temp_bi"], env=environ, capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    with pytest.raises(TTransportException, match="Error validating the login"):
        sql(sql_endpoint, "temp_bi", "SELECT 1", password=password)


def test_sql_reads_the_latest_publication_without_a_restart(spark, served, sql_endpoint) -> None:
    from pyspark.sql import functions as F

    statement = f"SELECT sum(events) FROM gold.event_counts WHERE date = '{D2}'"
    before = sql(sql_endpoint, "t1_bi", statement)[0][0]
    target = gold.table_path(served["settings"], "event_counts")
    day = F.col("date") == F.lit(D2)
    republished = spark.read.format("delta").load(target).filter(day).withColumn("events", F.col("events") + 1000)
    republished.write.format("delta").mode("overwrite").option("replaceWhere", f"date = '{D2}'").save(target)
    rows_t1 = spark.read.format("delta").load(target).filter(day & (F.col("tenant_id") == "t1")).count()
    assert rows_t1 > 0 and sql(sql_endpoint, "t1_bi", statement)[0][0] == before + 1000 * rows_t1


def test_beeline_connects_over_jdbc_as_a_tenant(served, sql_endpoint) -> None:
    """The JDBC path BI tools take: Hive's JDBC driver (beeline, shipped with pyspark), user and password."""
    import pyspark

    home = Path(pyspark.__file__).parent
    done = subprocess.run(
        [
            str(home / "bin" / "beeline"),
            "-u",
            f"jdbc:hive2://127.0.0.1:{sql_endpoint}/default",
            "-n",
            "t2_bi",
            "-p",
            PASSWORDS["t2_bi"],
            "--silent=true",
            "--outputformat=csv2",
            "-e",
            "SELECT tenant_id, count(*) AS days FROM gold.daily_active_users GROUP BY tenant_id",
        ],
        env=served["environ"] | {"SPARK_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split("> ", 1)[-1] for line in done.stdout.splitlines() if "," in line]  # after the prompt
    assert lines[0] == "tenant_id,days" and [line.split(",")[0] for line in lines[1:]] == ["t2"]

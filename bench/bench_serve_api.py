"""Metrics API latency and throughput, cached and uncached, next to the same queries through the SQL endpoint.

Gold is built by the real jobs from generated events (``--events``, duplicates and late events included; the
build is not timed). Then, one after the other, on that lake:

* the metrics API (``python -m pipelines serve api``, one uvicorn process) with its response cache off
  (``serve.cache_entries=0``: every request reads gold through delta-rs), then on (warmed by one pass over the
  query mix, so every measured request is a hit);
* the SQL endpoint (``python -m pipelines serve sql``: Spark Thrift Server, an operator login, PyHive over the
  HiveServer2 protocol), the same questions as SQL - the baseline a BI tool would get.

The query mix: DAU, event counts and revenue for each tenant over a 7-day window sliding across the data.
Latency: sequential requests on one kept-open connection. Throughput: ``--clients`` threads, each with its own
connection, for ``--seconds``. Every server is stopped by PID.

Run: ``.venv/bin/python -m bench.bench_serve_api [--events 1000000]``; rewrites its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.bench_silver_gold import write_generated_bronze
from bench.common import bench_environ, machine, markdown_table, private_spark, section_heading, write_section
from pipelines import gold, silver
from pipelines.config import load_settings

WINDOW_DAYS = 7
PASSWORD = ("--password-env", "BENCH_SQL_PASSWORD")
QUERIES = ("active-users", "event-counts", "revenue")
SQL = {
    "active-users": "SELECT * FROM gold.daily_active_users WHERE tenant_id = '{t}' AND date BETWEEN '{a}' AND '{b}'",
    "event-counts": "SELECT * FROM gold.event_counts WHERE tenant_id = '{t}' AND date BETWEEN '{a}' AND '{b}'",
    "revenue": "SELECT * FROM gold.revenue WHERE tenant_id = '{t}' AND date BETWEEN '{a}' AND '{b}'",
}


def query_mix(tenants: list[str], first: date, last: date) -> list[tuple[str, str, date, date]]:
    mix = []
    start = first
    while start + timedelta(days=WINDOW_DAYS - 1) <= last:
        for tenant in tenants:
            for query in QUERIES:
                mix.append((query, tenant, start, start + timedelta(days=WINDOW_DAYS - 1)))
        start += timedelta(days=1)
    return mix


@contextmanager
def api_server(environ: dict[str, str]) -> Iterator[str]:
    """A `serve api` process on a free port; yields host:port, stops it by PID."""
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "serve", "api"],
        env=environ,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        found = re.search(r"http://(127\.0\.0\.1:\d+)", server.stderr.readline())
        if not found:
            raise RuntimeError("the API did not print its address")
        yield found.group(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
        print(f"[bench] stopped API server (PID {server.pid})", file=sys.stderr)


def _path(query: str, tenant: str, first: date, last: date) -> str:
    return f"/v1/{query}?from={first}&to={last}&tenant={tenant}"


def _get(connection: http.client.HTTPConnection, path: str, token: str, expect_cache: str | None) -> None:
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    response.read()
    if response.status != 200 or (expect_cache and response.getheader("X-Cache") != expect_cache):
        raise RuntimeError(f"{path}: {response.status} {response.getheader('X-Cache')}")


def latencies(address: str, token: str, mix: list, rounds: int, expect_cache: str | None) -> list[float]:
    connection = http.client.HTTPConnection(address, timeout=60)
    samples = []
    for _ in range(rounds):
        for request in mix:
            started = time.perf_counter()
            _get(connection, _path(*request), token, expect_cache)
            samples.append(time.perf_counter() - started)
    connection.close()
    return samples


def concurrently(clients: int, seconds: float, connect: Callable[[], Callable[[int], None]]) -> float:
    """Requests/s of ``clients`` threads for ``seconds``: each opens its own connection (``connect``) and sends
    request n, n + clients, ... of the mix (the function ``connect`` returns sends one)."""
    done = [0] * clients
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        send = connect()
        n = index
        while time.monotonic() < deadline:
            send(n)
            done[index] += 1
            n += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def throughput(address: str, token: str, mix: list, clients: int, seconds: float) -> float:
    def connect() -> Callable[[int], None]:
        connection = http.client.HTTPConnection(address, timeout=60)
        return lambda n: _get(connection, _path(*mix[n % len(mix)]), token, None)

    return concurrently(clients, seconds, connect)


def _row(name: str, samples: list[float], rate: float, baseline_p50: float | None) -> dict[str, Any]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    return {
        "path": name,
        "requests": len(samples),
        "p50 ms": f"{p50 * 1000:.2f}",
        "p99 ms": f"{ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000:.2f}",
        "requests/s": f"{rate:,.0f}",
        "p50 vs SQL endpoint": f"{baseline_p50 / p50:.1f}x faster" if baseline_p50 else "1.0x (baseline)",
    }


@contextmanager
def sql_endpoint(environ: dict[str, str]) -> Iterator[int]:
    """A `serve sql` process with an operator login; yields its port, stops it by PID."""
    subprocess.run(
        [sys.executable, "-m", "pipelines", "serve", "sql-user", "add", "--name", "bench", "--all-tenants", *PASSWORD],
        env=environ,
        capture_output=True,
        check=True,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "serve", "sql"], env=environ, stderr=subprocess.PIPE, text=True
    )
    try:
        port = None
        for line in server.stderr:
            found = re.search(r"jdbc:hive2://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
                break
        if port is None:
            raise RuntimeError("the SQL endpoint did not print its JDBC URL")
        threading.Thread(target=server.stderr.read, daemon=True).start()
        yield port
    finally:
        server.terminate()
        server.wait(timeout=120)
        print(f"[bench] stopped SQL endpoint (PID {server.pid})", file=sys.stderr)


def _sql_connection(port: int, password: str):
    from pyhive import hive

    return hive.connect(host="127.0.0.1", port=port, username="bench", password=password, auth="CUSTOM")


def sql_latencies(port: int, password: str, mix: list, rounds: int) -> list[float]:
    cursor = _sql_connection(port, password).cursor()
    samples = []
    for _ in range(rounds):
        for query, tenant, a, b in mix:
            started = time.perf_counter()
            cursor.execute(SQL[query].format(t=tenant, a=a, b=b))
            cursor.fetchall()
            samples.append(time.perf_counter() - started)
    return samples


def sql_throughput(port: int, password: str, mix: list, clients: int, seconds: float) -> float:
    def connect() -> Callable[[int], None]:
        cursor = _sql_connection(port, password).cursor()

        def send(n: int) -> None:
            query, tenant, a, b = mix[n % len(mix)]
            cursor.execute(SQL[query].format(t=tenant, a=a, b=b))
            cursor.fetchall()

        return send

    return concurrently(clients, seconds, connect)


def run(events: int, rounds: int, clients: int, seconds: float) -> tuple[list[dict[str, Any]], str]:
    with tempfile.TemporaryDirectory(prefix="bench-serve-api-") as workdir:
        root = Path(workdir)
        environ = bench_environ(root, LAKEHOUSE__SILVER__DIMENSIONS_DIR=str(root / "dims"))
        environ |= {
            "LAKEHOUSE__SERVE__TOKENS_FILE": str(root / "tokens.json"),
            "LAKEHOUSE__SERVE__SQL_USERS_FILE": str(root / "sql_users.tsv"),
            "LAKEHOUSE__SERVE__SQL_STATE_DIR": str(root / "sql-endpoint"),
            "BENCH_SQL_PASSWORD": "bench-password",
        }
        settings = load_settings(environ=environ)
        with private_spark(settings, "bench-serve-api", {"spark.driver.memory": "6g"}) as spark:  # as when first run
            started = time.monotonic()
            bronze_rows, first, last = write_generated_bronze(spark, settings, events)
            silver.build(spark, settings, first, last)
            gold.build(spark, settings, first, last, lookback=False)
            print(f"[bench] gold built from {events:,} events in {time.monotonic() - started:.0f} s", file=sys.stderr)
            tenants = sorted(
                r.tenant_id for r in spark.table("gold.daily_active_users").select("tenant_id").distinct().collect()
            )
        mix = query_mix(tenants, first, last)
        with sql_endpoint(environ) as port:
            sql_latencies(port, "bench-password", mix, 1)  # warm: plans, snapshots, file listings
            sql_samples = sql_latencies(port, "bench-password", mix, rounds)
            sql_rate = sql_throughput(port, "bench-password", mix, clients, seconds)
        baseline_p50 = statistics.median(sql_samples)
        rows = [_row("SQL endpoint (Spark Thrift Server, PyHive), warm", sql_samples, sql_rate, None)]
        token = subprocess.run(
            [sys.executable, "-m", "pipelines", "serve", "token", "create", "--name", "bench", "--all-tenants"],
            env=environ,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        with api_server(environ | {"LAKEHOUSE__SERVE__CACHE_ENTRIES": "0"}) as address:
            latencies(address, token, mix, 1, "miss")  # warm: table handles opened
            samples = latencies(address, token, mix, rounds, "miss")
            rate = throughput(address, token, mix, clients, seconds)
            rows.append(_row("metrics API, cache off (delta-rs read per request)", samples, rate, baseline_p50))
        with api_server(environ) as address:
            latencies(address, token, mix, 1, None)  # fills the cache
            samples = latencies(address, token, mix, rounds, "hit")
            rate = throughput(address, token, mix, clients, seconds)
            rows.append(_row("metrics API, cached (same table version)", samples, rate, baseline_p50))
        size = (
            f"{events:,} generated events ({bronze_rows:,} bronze rows), {len(tenants)} tenants, {first}..{last}; "
            f"{len(mix)} distinct requests (DAU, event counts, revenue x tenant x {WINDOW_DAYS}-day window) x "
            f"{rounds} rounds; throughput: {clients} client threads for {seconds:.0f} s"
        )
        return rows, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="generated events (default 1000000)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the query mix per path (default 5)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for requests/s (default 8)")
    parser.add_argument("--seconds", type=float, default=10, help="throughput measuring time (default 10)")
    parser.add_argument("--validation", action="store_true", help="label the section as a small validation run")
    args = parser.parse_args()
    rows, size = run(args.events, args.rounds, args.clients, args.seconds)
    heading = section_heading("Metrics API and SQL endpoint over gold (issue 16)", args.validation)
    columns = ["path", "requests", "p50 ms", "p99 ms", "requests/s", "p50 vs SQL endpoint"]
    body = (
        f"{heading}\n\nMachine: {machine()}. Data: {size}. Client, servers and Spark on the same machine "
        "(loopback), one at a time; the API is one uvicorn process; the SQL endpoint Spark `local[*]` with the "
        "metastore on Derby.\n\n"
        f"{markdown_table(rows, columns)}\n"
    )
    write_section("serve_api", body)
    print(body)


if __name__ == "__main__":
    main()

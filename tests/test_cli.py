"""The command line: every command has --help, the main job runs end to end, errors are clear."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cli import build_parser
from pipelines.config import load_settings
from pipelines.synthetic.generator import GeneratorSpec, generate


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def all_command_paths(parser=None, prefix=()) -> list[tuple[str, ...]]:
    import argparse

    parser = parser or build_parser()
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += all_command_paths(sub, (*prefix, name))
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p) or "(root)")
def test_every_command_has_help(path: tuple[str, ...], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m pipelines" in capsys.readouterr().out


def test_root_help_lists_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "broker", "topics", "generate", "schemas", "config"):
        assert command in result.stdout


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_main_job_runs_the_chain_and_prints_a_true_gold_summary(tmp_path: Path) -> None:
    """`run` on the embedded default: starts its own broker, publishes, ingests, builds silver and gold through
    the gates, prints counts and a gold summary equal to the generator's truth, stops what it started."""
    env = {
        "LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_path / "broker"),
        "LAKEHOUSE__LAKE__ROOT": str(tmp_path / "lake"),
        "LAKEHOUSE__CATALOG__STATE_DIR": str(tmp_path / "metastore"),
        "LAKEHOUSE__QUALITY__DOCS_DIR": str(tmp_path / "data_docs"),
        "LAKEHOUSE__LINEAGE__FILE": str(tmp_path / "lineage.jsonl"),
    }
    arguments = ("run", "--users", "40", "--days", "2", "--seed", "7", "--truth", str(tmp_path / "t.json"))
    result = run_cli(*arguments, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr
    settings = load_settings("local", environ={})
    messages, truth = generate(GeneratorSpec(seed=7, users_per_tenant=40, days=2), settings.kafka.topic_for_event_type)
    expected: dict[str, int] = {}
    for message in messages:
        expected[message.topic] = expected.get(message.topic, 0) + 1
    published_part, _, bronze_part = result.stdout.partition("bronze.events by tenant and type")
    events_part, _, quarantine_part = bronze_part.partition("bronze.quarantine by tenant and type")
    row = re.compile(r"│ (\S+)\s+│\s+(\d+) │")
    printed = {match.group(1): int(match.group(2)) for match in row.finditer(published_part)}
    assert printed == {**expected, "total": len(messages)}, result.stdout

    # bronze ran in catch-up mode: events + quarantine account for every published message
    total = re.compile(r"│ total\s+│\s+│\s+(\d+) │")
    bronze_total = int(total.search(events_part).group(1))
    quarantine_total = int(total.search(quarantine_part).group(1))
    assert bronze_total == truth.unique_valid_events + truth.duplicates
    assert quarantine_total == truth.malformed
    assert bronze_total + quarantine_total == len(messages)
    assert (tmp_path / "lake" / "bronze" / "events" / "_delta_log").is_dir()

    # ... then silver and gold through their gates, and a gold summary that matches the generator's truth
    _, _, summary_part = result.stdout.partition("gold summary")
    line = re.compile(r"│ (\S+)\s+│ (\d{4}-\d{2}-\d{2}) │\s+(\d+) │\s+(\d+) │\s+(.+?) │")
    dau, orders, revenue_cents = {}, {}, {}
    for tenant, day, users, order_count, money in line.findall(summary_part):
        dau[(tenant, day)] = int(users)
        if int(order_count):
            orders[(tenant, day)] = int(order_count)
        for amount in money.split(", ") if money != "-" else []:
            value, currency = amount.split(" ")
            revenue_cents[(tenant, day, currency)] = round(float(value) * 100)
    assert dau == truth.distinct_users
    assert revenue_cents == truth.revenue_cents
    expected_orders: dict[tuple[str, str], int] = {}
    for (tenant, day, _currency), count in truth.orders.items():
        expected_orders[(tenant, day)] = expected_orders.get((tenant, day), 0) + count
    assert orders == expected_orders
    assert re.search(r"│ silver\.events\s+│ (passed|warned)", result.stdout), "silver's gate ran and published"
    assert "funnel conversion" in result.stdout and "Data Docs:" in result.stdout

    # the run reported itself to OpenLineage: one run id, START then COMPLETE, Kafka in, the tables out
    events = [json.loads(line) for line in (tmp_path / "lineage.jsonl").read_text().splitlines()]
    assert [(e["job"]["name"], e["eventType"]) for e in events] == [("run", "START"), ("run", "COMPLETE")]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]
    assert "kafka" in [d["name"] for d in events[1]["inputs"]]
    assert {"bronze.events", "silver.events", "gold.revenue"} <= {d["name"] for d in events[1]["outputs"]}
    assert (tmp_path / "lake" / "ops" / "quality_results" / "_delta_log").is_dir()
    # ... and its metrics (ops.job_metrics, what `metrics serve` exports): outcome, rows written, gate rules
    from pipelines.platform.tables import arrow_dataset

    recorded = arrow_dataset(str(tmp_path / "lake" / "ops" / "job_metrics")).to_table().to_pylist()
    run_metrics = {(r["metric"], r["labels"]): r["value"] for r in recorded if r["run_id"] == events[0]["run"]["runId"]}
    assert run_metrics[("succeeded", "{}")] == 1.0 and run_metrics[("duration_seconds", "{}")] > 0
    assert run_metrics[("rows_written", '{"table": "bronze.events"}')] == bronze_total
    assert run_metrics[("gate_rules", '{"outcome": "passed", "table": "silver.events"}')] > 0
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads(truth.to_json())
    assert "embedded broker stopped" in result.stdout
    assert not (tmp_path / "broker" / "broker.json").exists(), "the broker it started is stopped"
    assert not (tmp_path / "metastore" / "metastore.json").exists(), "so is the metastore database"

    # An uncommitted leftover (a micro-batch that failed as a whole) past retention: listed, then deleted.
    events = tmp_path / "lake" / "bronze" / "events"
    orphan = next(events.glob("tenant_id=*/event_date=*/event_type=*")) / "part-orphan-c000.snappy.parquet"
    orphan.write_bytes(b"PAR1 never committed")
    eight_days_ago = time.time() - 8 * 24 * 3600
    os.utime(orphan, (eight_days_ago, eight_days_ago))
    listed = run_cli("bronze", "vacuum", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "would delete (dry run; --apply deletes) 1 file(s)" in listed.stdout and orphan.name in listed.stdout
    assert orphan.exists()
    applied = run_cli("bronze", "vacuum", "--apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"{events}: deleted 1 file(s)" in applied.stdout.replace("\n", "")
    assert not orphan.exists()


@pytest.mark.integration
def test_broker_commands_round_trip(tmp_path: Path) -> None:
    env = {"LAKEHOUSE__EMBEDDED_BROKER__STATE_DIR": str(tmp_path / "broker")}
    assert run_cli("broker", "status", env=env).returncode == 1
    started = run_cli("broker", "start", env=env)
    try:
        assert started.returncode == 0, started.stderr
        assert "bootstrap=127.0.0.1:" in started.stdout
        status = run_cli("broker", "status", env=env)
        assert status.returncode == 0 and "pid=" in status.stdout
        generated = run_cli("generate", "--users", "10", "--days", "1", env=env)
        assert generated.returncode == 0, generated.stderr
        assert "total" in generated.stdout
    finally:
        stopped = run_cli("broker", "stop", env=env)
    assert "stopped" in stopped.stdout
    assert run_cli("broker", "status", env=env).returncode == 1


def test_bad_config_fails_before_work(tmp_path: Path) -> None:
    result = run_cli("run", env={"LAKEHOUSE__KAFKA__TOPICS__USER.ACTIVITY__PARTITIONS": "zero"})
    assert result.returncode == 2
    assert "kafka.topics.user.activity.partitions" in result.stderr
    assert "lakehouse.yaml" in result.stderr


def test_engine_failures_are_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """A damaged table reaches the user as one line naming it (delta-rs' Rust backtrace, Py4J's call and the
    JVM's stack trace stay out of the terminal), with a non-zero exit; --debug shows the traceback."""
    log = tmp_path / "lake" / "silver" / "events" / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text('{"commitInfo": ')  # truncated mid-write
    env = {"LAKEHOUSE__LAKE__ROOT": str(tmp_path / "lake"), "LAKEHOUSE__OPS__STATE_DIR": str(tmp_path / "ops")}
    days = ("--from", "2026-01-01", "--to", "2026-01-01")

    gold = run_cli("gold", "build", *days, env=env)  # reads silver's partitions with delta-rs first
    assert gold.returncode == 2
    assert f"error: cannot read the Delta table at {tmp_path / 'lake' / 'silver' / 'events'}: " in gold.stderr

    validate = run_cli("quality", "validate", "--table", "silver.events", *days, env=env)  # Spark reads the log
    assert validate.returncode == 1
    (line,) = [line for line in validate.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: Spark: SparkException: [FAILED_READ_FILE") and "00000000000000000000.json" in line
    assert line.endswith("(--debug shows the traceback)")
    for noise in ("Traceback", "Py4J", "\tat org.apache", "<unknown>"):
        assert noise not in gold.stderr + validate.stderr, noise

    debug = run_cli("--debug", "quality", "validate", "--table", "silver.events", *days, env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "Py4JJavaError" in debug.stderr


def test_generate_to_file_and_validate(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert run_cli("generate", "--users", "5", "--days", "1", "--out", str(out)).returncode == 0
    result = run_cli("schemas", "validate", str(out))
    # the stream contains deliberate malformed messages: each is reported with file, line and path
    assert result.returncode == 1
    assert f"{out}:" in result.stdout and ": $" in result.stdout


def test_schemas_check_passes() -> None:
    result = run_cli("schemas", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backward compatible" in result.stdout


def test_schemas_check_names_fields_without_a_pii_rule(tmp_path: Path) -> None:
    rules = tmp_path / "pii.yaml"
    rules.write_text(
        (Path(__file__).parents[1] / "conf" / "pii.yaml")
        .read_text()
        .replace("  properties.title: drop", "")
        .replace("  context.os: keep", "")
    )
    result = run_cli("schemas", "check", env={"LAKEHOUSE__SILVER__PII_RULES": str(rules)})
    assert result.returncode == 1
    assert re.search(r"UNCLASSIFIED \S*page_view/v1\.json: properties\.title: no rule in", result.stderr)
    assert "envelope.json: context.os" in result.stderr and "page_view/v2.json: properties.title" in result.stderr

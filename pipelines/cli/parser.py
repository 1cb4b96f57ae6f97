"""The top-level parser and ``main``: global options, one sub-command per command group, and the error handling
that turns expected failures into one line and an exit code (``--debug`` shows the traceback instead)."""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from deltalake.exceptions import DeltaError
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

from pipelines.cli import (
    audit,
    broker,
    bronze,
    builds,
    catalog,
    config,
    dimensions,
    erase,
    generate,
    maintenance,
    metastore,
    quality,
    run,
    schemas,
    serve,
    stack,
    status,
)
from pipelines.cli.render import err_console
from pipelines.config import ConfigError, load_settings
from pipelines.kafka.broker import BrokerError
from pipelines.orchestration.stack import StackError
from pipelines.platform.jars import JarsError
from pipelines.platform.metastore import MetastoreError
from pipelines.quality.gate import GateFailed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Lakehouse for event analytics: Kafka -> bronze/silver/gold Delta tables.",
    )
    parser.add_argument(
        "--profile", help="configuration profile (default: LAKEHOUSE_PROFILE or the file's default_profile)"
    )
    parser.add_argument("--config", help="configuration file (default: LAKEHOUSE_CONFIG or conf/lakehouse.yaml)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order --help lists them; each command group's module defines its sub-commands and options.
    run.add_run_command(commands)
    status.add_status_command(commands)
    broker.add_broker_command(commands)
    metastore.add_metastore_command(commands)
    catalog.add_catalog_command(commands)
    broker.add_topics_command(commands)
    generate.add_generate_command(commands)
    bronze.add_bronze_command(commands)
    schemas.add_schemas_command(commands)
    builds.add_silver_command(commands)
    builds.add_gold_command(commands)
    quality.add_quality_command(commands)
    builds.add_replay_command(commands)
    dimensions.add_dimensions_command(commands)
    maintenance.add_maintenance_command(commands)
    erase.add_erase_command(commands)
    serve.add_serve_command(commands)
    audit.add_audit_command(commands)
    stack.add_stack_command(commands)
    config.add_config_command(commands)
    return parser


class _Failed(Exception):
    """A job command returned a non-zero status: its lineage run ends in FAIL."""

    def __init__(self, code: int) -> None:
        self.code = code


REFUSED = (ConfigError, BrokerError, JarsError, MetastoreError, StackError, ValueError)  # exit status 2
PERSONAL_OPTIONS = ("--user-id", "--anonymous-id")  # never written to the audit log


def _audited(args: argparse.Namespace, command: str) -> list[dict]:
    """The audit entries a command makes (outcome added when it ends): replays, erasures, skipped gates."""
    found = []
    days = f"{getattr(args, 'from_date', '')}..{getattr(args, 'to_date', '')}"
    tenants = getattr(args, "tenant", None)
    if command == "replay":
        detail = {"tenants": tenants, "layers": args.layers, "skip_gates": args.skip_gates}
        found.append({"action": "replay", "target": days, "detail": detail})
    if command == "erase":
        kind = "user_id" if args.user_id or os.environ.get("LAKEHOUSE_ERASE_USER_ID") else "anonymous_id"
        found.append({"action": "erasure", "target": f"tenant {args.tenant}", "detail": {"id_kind": kind}})
    if getattr(args, "skip_gates", False):
        found.append({"action": "gate_skip", "target": days, "detail": {"command": command, "tenants": tenants}})
    return found


def _command_line(argv: Sequence[str]) -> str:
    shown, hide = [], False
    for part in argv:
        if hide:
            shown.append("***")
        elif any(part.startswith(option + "=") for option in PERSONAL_OPTIONS):
            shown.append(part.split("=", 1)[0] + "=***")
        else:
            shown.append(part)
        hide = part in PERSONAL_OPTIONS
    return "python -m pipelines " + " ".join(shown)


def _run_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the command; a job (a command that writes tables) reports its run to OpenLineage, and replays,
    erasures, skipped gates and schema changes are recorded in the audit log whatever their outcome."""
    from pipelines.ops.lineage import is_job, job_run

    command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
    audited = _audited(args, command)
    if not is_job(command) and not audited and command != "schemas check":
        return args.func(args)
    try:
        settings = load_settings(profile=args.profile, path=args.config)
    except ConfigError:
        return args.func(args)  # the command reports the configuration error itself
    code, error, run_id, started = 1, None, "", datetime.now(UTC)
    try:
        if is_job(command):
            with job_run(settings, command) as run_id:
                code = args.func(args)
                if code:
                    raise _Failed(code)
        else:
            code = args.func(args)
    except _Failed as failed:
        code = failed.code
    except BaseException as exc:
        code, error = (2 if isinstance(exc, REFUSED) else 1), exc
        raise
    finally:
        _record_audit(settings, command, audited, code, error, argv)
        if is_job(command):
            _record_metrics(settings, command, run_id, started, code)
    return code


def _record_metrics(settings, command: str, run_id: str, started: datetime, code: int) -> None:
    from pipelines.ops.metrics import record_job

    try:
        record_job(settings, command, run_id, started, code)
    except Exception as exc:  # the job's result stands; its metrics are history, not its outcome
        err_console.print(f"[yellow]warning:[/yellow] metrics of `{command}` not recorded: {exc}", highlight=False)


def _record_audit(
    settings, command: str, audited: list[dict], code: int, error: BaseException | None, argv: Sequence[str]
) -> None:
    from pipelines.ops.audit import record, schema_change

    outcome = "succeeded" if code == 0 and error is None else "refused" if code == 2 else "failed"
    try:
        if command == "schemas check" and (change := schema_change(settings)) is not None:
            audited = [*audited, {"action": "schema_change", "target": str(settings.schemas_dir), "detail": change}]
        line = _command_line(argv)
        record(settings, [entry | {"command": line, "outcome": outcome, "exit_code": code} for entry in audited])
    except Exception as exc:  # the command's own result stands; say loudly that its record is missing
        err_console.print(f"[red]warning:[/red] audit entry for `{command}` not recorded: {exc}", highlight=False)


_JAVA_CLASS = re.compile(r"^(?:[a-z_]\w*\.)+(\w+(?:Exception|Error)): ")


def _engine_error(exc: Exception) -> str:
    """Spark's or delta-rs' error in one line: the message, not the Py4J call or the Java package path."""
    source = "Delta" if isinstance(exc, DeltaError) else "Spark"
    lines = [line.strip().removeprefix(": ") for line in str(exc).strip().splitlines() if line.strip()]
    if isinstance(exc, Py4JJavaError):  # "An error occurred while calling o84.load." then ": org.x.SomeException: ..."
        lines = [line for line in lines if not line.startswith("An error occurred while calling")]
    first = _JAVA_CLASS.sub(r"\1: ", lines[0]) if lines else type(exc).__name__
    return f"{source}: {first}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    session_before = SparkSession.getActiveSession()
    try:
        return _run_command(args, sys.argv[1:] if argv is None else argv)
    except (ConfigError, BrokerError, JarsError, MetastoreError, StackError, ValueError) as exc:
        if args.debug:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except GateFailed as exc:
        if args.debug:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        err_console.print("nothing was published; the rules' results are in ops.quality_results and the Data Docs")
        return 1
    except (PySparkException, Py4JJavaError, DeltaError) as exc:
        if args.debug:
            raise
        # An expected engine failure (missing table, bad SQL, a failed query, a damaged table) in one or two lines,
        # without the JVM's or Rust's stack.
        err_console.print(
            f"[red]error:[/red] {_engine_error(exc)[:500]} (--debug shows the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    finally:
        # Stop the SparkSession the command started while the interpreter is whole: the JVM gateway and Spark's
        # threads end before Python's shutdown tears down modules. A caller's own session is left alone.
        session = SparkSession.getActiveSession()
        if session is not None and session is not session_before:
            session.stop()
        # delta-rs handles (a dataset's filesystem, its tokio runtime) sit in reference cycles: collected at
        # interpreter teardown, their native threads abort the process ("terminate called without an active
        # exception", exit 134) about one run in ten. Collected here, while the interpreter is whole, they end.
        gc.collect()

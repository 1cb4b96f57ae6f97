"""``stack up|down|status``: the local stack for people who want the Airflow UI (see pipelines.orchestration.stack)."""

from __future__ import annotations

import argparse

from pipelines.cli.render import _settings, console


def cmd_stack_up(args: argparse.Namespace) -> int:
    from pipelines.orchestration.stack import LocalStack

    LocalStack(_settings(args)).up(stream=not args.without_stream, say=console.print)
    return 0


def cmd_stack_down(args: argparse.Namespace) -> int:
    from pipelines.orchestration.stack import LocalStack

    LocalStack(_settings(args)).down(say=console.print)
    return 0


def _running(args: argparse.Namespace):
    from pipelines.orchestration.stack import LocalStack, StackError

    stack = LocalStack(_settings(args))
    state = stack.state()
    if state is None:
        raise StackError("the stack is not running (./dev stack up)")
    return stack, state


def cmd_stack_status(args: argparse.Namespace) -> int:
    from pipelines.platform.processes import pid_alive

    stack, state = _running(args)
    down = [part for part, pid in state.processes.items() if not pid_alive(pid)]
    for part, pid in state.processes.items():
        console.print(f"{part:14} pid={pid} {'running' if part not in down else 'STOPPED'}")
    console.print(f"Airflow UI: {stack.url}  login: admin / {stack.password()}")
    return 1 if down else 0


def cmd_stack_airflow(args: argparse.Namespace) -> int:
    import subprocess
    import sys

    stack, state = _running(args)
    command = [sys.executable, "-m", "airflow", *args.airflow_args]
    return subprocess.run(command, env=stack.airflow_env(state.port)).returncode


def add_stack_command(commands: argparse._SubParsersAction) -> None:
    stack = commands.add_parser("stack", help="the local stack: broker, bronze stream, Airflow (UI on 127.0.0.1)")
    stack_commands = stack.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = stack_commands.add_parser("up", help="start broker, metastore, bronze stream and Airflow; print the UI URL")
    up.add_argument("--without-stream", action="store_true", help="no continuous bronze stream (use the catch-up DAG)")
    up.set_defaults(func=cmd_stack_up)
    stack_commands.add_parser("down", help="stop exactly what `stack up` started").set_defaults(func=cmd_stack_down)
    airflow = stack_commands.add_parser(
        "airflow", help="an `airflow` command against the stack, e.g. stack airflow dags trigger lakehouse_replay ..."
    )
    airflow.add_argument("airflow_args", nargs=argparse.REMAINDER, help="arguments for the airflow CLI")
    airflow.set_defaults(func=cmd_stack_airflow)
    stack_commands.add_parser("status", help="the stack's processes; exit 1 if one stopped").set_defaults(
        func=cmd_stack_status
    )

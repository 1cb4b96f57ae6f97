"""``status``, ``alerts`` and ``metrics``: what an on-call engineer runs first, and what schedulers and
Prometheus run for them. None of them starts a JVM."""

from __future__ import annotations

import argparse
import json
import signal
import threading

from rich.table import Table

from pipelines.cli.render import _settings, console, err_console
from pipelines.ops.alerts import check_now

# `status` exit codes: 0 every rule holds, 1 a threshold is breached (a cron job or sensor fails), 2 refused.
BREACHED = 1
TIME = "%m-%d %H:%M:%S"


def cmd_status(args: argparse.Namespace) -> int:
    """Lag, stream, freshness, gates, quarantine and the alert rules that fail; exit 1 when one does."""
    status, alerts = check_now(_settings(args))
    if args.json:
        body = status.to_json() | {"alerts": [a.__dict__ | {"key": a.key} for a in alerts], "healthy": not alerts}
        print(json.dumps(body, indent=2))
        return BREACHED if alerts else 0
    _print_status(status)
    if alerts:
        table = Table("severity", "rule", "subject", "condition", title="[red]thresholds breached[/red]")
        for alert in alerts:
            table.add_row(alert.severity, alert.rule, alert.subject, alert.message)
        console.print(table)
        return BREACHED
    console.print("[green]healthy:[/green] every alert rule holds (conf/alerts.yaml)")
    return 0


def _print_status(status) -> None:
    if status.kafka_error:
        console.print(f"[red]Kafka:[/red] {status.kafka_error}")
    else:
        table = Table("topic", "partition", "latest offset", "committed offset", "lag", title="Kafka lag (checkpoint)")
        for p in status.kafka:
            table.add_row(p.topic, str(p.partition), str(p.latest_offset), str(p.committed_offset), str(p.lag))
        table.add_row("[bold]total", "", "", "", f"[bold]{sum(p.lag for p in status.kafka)}")
        console.print(table)
    stream = status.stream
    line = f"bronze stream: [bold]{stream.get('state')}[/bold]"
    if stream.get("batch_id") is not None:
        rate = stream.get("processed_rows_per_second") or 0
        line += (
            f", last batch {stream['batch_id']}: {stream.get('input_rows')} rows in {stream.get('duration_ms')} ms "
            f"({rate:.0f} rows/s) at {stream.get('reported_at')}"
        )
    if stream.get("state") == "running" and stream.get("metrics_url"):
        line += f"; metrics {stream['metrics_url']}"
    console.print(line, highlight=False)
    table = Table(title="freshness (times UTC)")
    table.add_column("table", no_wrap=True)  # names stay whole on a narrow terminal; the other columns wrap
    for column in ("version", "published", "current as of", "newest event", "age (min)"):
        table.add_column(column, overflow="fold")
    for t in status.tables:
        current = t.current_as_of.strftime(TIME) if t.current_as_of else "-"
        age = f"{t.age_minutes:.1f}" if t.age_minutes is not None else "-"
        newest = str(t.newest_event or "-")[:19]
        table.add_row(t.table, str(t.version), t.published_at.strftime(TIME), current, newest, age)
    console.print(table)
    if status.gates:
        table = Table(title="latest gate runs (times UTC)")
        table.add_column("table", no_wrap=True)
        for column in ("at", "rules", "failed", "warned", "quarantined"):  # run ids: --json, ops.quality_results
            table.add_column(column, overflow="fold")
        for g in status.gates:
            failed = f"[red]{g.failed}[/red]" if g.failed else "0"
            at = g.recorded_at.strftime(TIME)
            table.add_row(g.table, at, str(g.rules), failed, str(g.warned), str(g.quarantined))
        console.print(table)
    if status.quarantine is not None:
        q = status.quarantine
        console.print(f"quarantine, last {q.window_hours} h: {q.quarantined} of {q.messages} messages ({q.pct:.2f}%)")


def cmd_alerts_check(args: argparse.Namespace) -> int:
    """Evaluate the rules and notify: firing once per incident, resolved when it clears."""
    from pipelines.ops.alerts import DeliveryError, notify

    settings = _settings(args)
    _status, alerts = check_now(settings)
    try:
        sent = notify(settings, alerts)
    except DeliveryError as exc:
        err_console.print(f"[red]error:[/red] {exc}; the undelivered alerts are sent again at the next check")
        return 1
    for n in sent:
        colour = "red" if n.state == "firing" else "green"
        console.print(f"[{colour}]{n.state}[/{colour}] [{n.alert.severity}] {n.alert.key}: {n.alert.message}")
    console.print(f"{len(alerts)} condition(s) hold; {len(sent)} notification(s) sent")
    return 0


def cmd_alerts_list(args: argparse.Namespace) -> int:
    from pipelines.ops.alerts import open_incidents

    opened = open_incidents(_settings(args))
    if args.json:
        print(json.dumps(list(opened.values()), default=str, indent=2))
        return 0
    table = Table("since (UTC)", "severity", "key", "message", title="open incidents (ops.alert_events)")
    for row in sorted(opened.values(), key=lambda r: r["at"]):
        table.add_row(row["at"].strftime("%Y-%m-%d %H:%M:%S"), row["severity"], row["key"], row["message"])
    console.print(table)
    return 0


def cmd_metrics_serve(args: argparse.Namespace) -> int:
    """Serve the ops tables and the status snapshot as Prometheus metrics until SIGTERM/Ctrl-C."""
    from prometheus_client import CollectorRegistry, start_http_server

    from pipelines.ops.metrics import OpsCollector

    settings = _settings(args)
    registry = CollectorRegistry()
    registry.register(OpsCollector(settings))
    host, port = settings.ops.metrics_host, settings.ops.exporter_port
    server, _thread = start_http_server(port, addr=host, registry=registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"metrics: http://{host}:{server.server_port}/metrics (Ctrl-C stops)", highlight=False)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
    return 0


def add_status_command(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser(
        "status", help="lag, stream, freshness, gates, quarantine; exit 1 when an alert rule is breached"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    alerts = commands.add_parser("alerts", help="notify alerts (once per incident) and list the open ones")
    actions = alerts.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("check", help="evaluate conf/alerts.yaml and notify the log and webhook").set_defaults(
        func=cmd_alerts_check
    )
    listing = actions.add_parser("list", help="open incidents")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_alerts_list)

    metrics = commands.add_parser("metrics", help="Prometheus metrics of the jobs and the platform's state")
    metric_actions = metrics.add_subparsers(dest="action", required=True, metavar="ACTION")
    metric_actions.add_parser("serve", help="serve them on 127.0.0.1 (ops.exporter_port)").set_defaults(
        func=cmd_metrics_serve
    )

"""Events/s of event validation: the Python jsonschema reference alone vs the jsonschema_rs fast path.

Bronze ingestion validates every Kafka message inside Spark executors, so the figure that matters is
events/s per core. The stream is the synthetic generator's: ~20k realistic events (duplicates
included) plus ~1% malformed ones. Single process; validators are compiled in a warm-up pass first.
Time is the process's CPU time (``time.process_time``), so other work on a shared machine inflates
it less than wall time; fast rows take the best of five passes, reference rows one pass. Parsed
events are dropped at once, as a streaming consumer does: keeping all 20k alive costs ~30% more
(cyclic GC rescans them). Both paths must return the same verdicts and violations, or the run stops.

Run: ``.venv/bin/python -m bench.bench_validation``. Prints a markdown table; ``run()`` returns its rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import machine
from pipelines.config import load_settings
from pipelines.contracts.registry import SchemaRegistry
from pipelines.contracts.validation import _reject_constant
from pipelines.synthetic.generator import GeneratorSpec, generate

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "conf" / "schemas"
SPEC = GeneratorSpec(seed=2026, tenants=4, users_per_tenant=600, days=2, malformed_rate=0.01)
FAST_REPEATS = 5


def reference_validate_json(registry: SchemaRegistry, raw: bytes) -> tuple[bool, bool]:
    """validate_json before the fast path (json.loads, then Python jsonschema): (is an object, is valid)."""
    try:
        event = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:
        return False, False
    if not isinstance(event, dict):
        return False, False
    return True, registry._reference_violations(event) == []


def fast_validate_json(registry: SchemaRegistry, raw: bytes) -> tuple[bool, bool]:
    event, violations = registry.validate_json(raw)
    return event is not None, not violations


def _timed(function: Callable[[Any], Any], inputs: list[Any], repeats: int) -> tuple[float, list[Any]]:
    """Best CPU seconds over ``repeats`` passes, and the results of the last pass."""
    best = float("inf")
    results: list[Any] = []
    for _ in range(repeats):
        started = time.process_time()
        results = [function(item) for item in inputs]
        best = min(best, time.process_time() - started)
    return best, results


def _row(name: str, events: int, seconds: float, baseline: float | None = None) -> dict[str, Any]:
    rate = events / seconds
    return {
        "name": name,
        "events": events,
        "cpu_seconds": round(seconds, 3),
        "events_per_s": round(rate),
        "speedup": round(rate / baseline, 1) if baseline else 1.0,
    }


def run() -> list[dict[str, Any]]:
    """One row per path: name, events, cpu_seconds, events_per_s, speedup (vs its reference), machine."""
    messages, _ = generate(SPEC, load_settings("local", environ={}).kafka.topic_for_event_type)
    raws = [message.value for message in messages]
    valid_raws = [message.value for message in messages if message.kind != "malformed"]
    registry = SchemaRegistry.load(SCHEMAS_DIR)
    events = [event for event, _ in map(registry.validate_json, raws) if event is not None]  # also a warm-up
    for event in events:
        registry._reference_violations(event)

    reference_json_s, expected_json = _timed(lambda raw: reference_validate_json(registry, raw), raws, 1)
    fast_json_s, actual_json = _timed(lambda raw: fast_validate_json(registry, raw), raws, FAST_REPEATS)
    fast_valid_s, valid_results = _timed(lambda raw: fast_validate_json(registry, raw), valid_raws, FAST_REPEATS)
    reference_dict_s, expected_dict = _timed(registry._reference_violations, events, 1)
    fast_dict_s, actual_dict = _timed(registry.validate, events, FAST_REPEATS)

    assert actual_json == expected_json, "the fast path changed a verdict"
    assert actual_dict == expected_dict, "the fast path changed a violation"
    assert all(valid for _, valid in valid_results), "the generator's valid events must be valid"

    invalid = sum(1 for _, valid in expected_json if not valid)
    reference_json_rate = len(raws) / reference_json_s
    rows = [
        _row(f"reference: json.loads + jsonschema ({invalid / len(raws):.1%} invalid)", len(raws), reference_json_s),
        _row("fast: validate_json, same stream", len(raws), fast_json_s, reference_json_rate),
        _row("fast: validate_json, valid events only", len(valid_raws), fast_valid_s, reference_json_rate),
        _row("reference: jsonschema on parsed dicts", len(events), reference_dict_s),
        _row("fast: validate on parsed dicts", len(events), fast_dict_s, len(events) / reference_dict_s),
    ]
    for row in rows:
        row["machine"] = machine()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"Machine: {rows[0]['machine']}; single process, CPU time",
        "",
        "| path | events | CPU s | events/s | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['name']} | {row['events']} | {row['cpu_seconds']:.2f} | {row['events_per_s']:,} | {row['speedup']}x |"
        for row in rows
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    from bench.common import write_section

    body = "## Event validation (issue 2)\n\n" + markdown(run())
    write_section("validation", body)
    print(body)

"""The ground truth of a synthetic stream: the metrics the lakehouse's tables must reproduce.

``_TruthBuilder`` accumulates it while ``simulation`` generates the valid events (each unique by
construction); ``generate`` then freezes it into a ``Truth``, adding the stream-level counts (duplicates,
malformed, late, swaps). ``Truth`` round-trips through JSON so a later run or a notebook can check against it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _rows(table: dict[tuple, Any], names: tuple[str, ...], value_name: str) -> list[dict[str, Any]]:
    return [{**dict(zip(names, key, strict=True)), value_name: value} for key, value in sorted(table.items())]


@dataclass
class Truth:
    """The answers the lakehouse must reproduce from the stream, computed from unique valid events.

    Dates are the UTC date of ``occurred_at``. ``distinct_users`` counts people after identity
    stitching: an anonymous visitor who signs up in the window is counted under their user_id on
    every day, including the days before the signup (the signup event carries both ids); visitors who
    never sign up count by anonymous_id. ``distinct_identities`` is the unstitched count of
    ``coalesce(user_id, anonymous_id)``. System alerts (anonymous_id ``host-<n>``) are not users.
    Revenue is the sum of ``amount`` of completed orders, kept in minor units (cents) to stay exact.
    A late event is one published one hour to three days after its occurred_at (re-sends come later still).
    """

    spec: dict[str, Any]
    total_messages: int
    messages_by_topic: dict[str, int]
    unique_valid_events: int
    duplicates: int
    malformed_by_defect: dict[str, int]
    late_event_ids: list[str]
    out_of_order_swaps: int
    anonymous_signups: int
    distinct_users: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, date)
    distinct_identities: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, date)
    event_counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (tenant, date, event_type)
    events_by_version: dict[tuple[str, int], int] = field(default_factory=dict)  # (event_type, version)
    orders: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (tenant, date, currency)
    revenue_cents: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (tenant, date, currency)

    @property
    def malformed(self) -> int:
        return sum(self.malformed_by_defect.values())

    @property
    def late_events(self) -> int:
        return len(self.late_event_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "total_messages": self.total_messages,
            "messages_by_topic": dict(sorted(self.messages_by_topic.items())),
            "unique_valid_events": self.unique_valid_events,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "malformed_by_defect": dict(sorted(self.malformed_by_defect.items())),
            "late_events": self.late_events,
            "late_event_ids": sorted(self.late_event_ids),
            "out_of_order_swaps": self.out_of_order_swaps,
            "anonymous_signups": self.anonymous_signups,
            "distinct_users": _rows(self.distinct_users, ("tenant_id", "date"), "users"),
            "distinct_identities": _rows(self.distinct_identities, ("tenant_id", "date"), "identities"),
            "event_counts": _rows(self.event_counts, ("tenant_id", "date", "event_type"), "events"),
            "events_by_version": _rows(self.events_by_version, ("event_type", "version"), "events"),
            "orders": [
                {
                    "tenant_id": t,
                    "date": d,
                    "currency": c,
                    "orders": n,
                    "revenue": round(self.revenue_cents[(t, d, c)] / 100, 2),
                    "revenue_cents": self.revenue_cents[(t, d, c)],
                }
                for (t, d, c), n in sorted(self.orders.items())
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def write_truth(self, path: str | Path) -> Path:
        """Write ``to_json()`` to ``path`` (parents created) so a later run or a notebook can check against it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json() + "\n")
        return target

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        def table(rows_name: str, key_names: tuple[str, ...], value_name: str) -> dict[tuple, Any]:
            return {tuple(row[k] for k in key_names): row[value_name] for row in data[rows_name]}

        order_key = ("tenant_id", "date", "currency")
        return cls(
            spec=data["spec"],
            total_messages=data["total_messages"],
            messages_by_topic=data["messages_by_topic"],
            unique_valid_events=data["unique_valid_events"],
            duplicates=data["duplicates"],
            malformed_by_defect=data["malformed_by_defect"],
            late_event_ids=data["late_event_ids"],
            out_of_order_swaps=data["out_of_order_swaps"],
            anonymous_signups=data["anonymous_signups"],
            distinct_users=table("distinct_users", ("tenant_id", "date"), "users"),
            distinct_identities=table("distinct_identities", ("tenant_id", "date"), "identities"),
            event_counts=table("event_counts", ("tenant_id", "date", "event_type"), "events"),
            events_by_version=table("events_by_version", ("event_type", "version"), "events"),
            orders=table("orders", order_key, "orders"),
            revenue_cents=table("orders", order_key, "revenue_cents"),
        )

    @classmethod
    def read_truth(cls, path: str | Path) -> Truth:
        return cls.from_dict(json.loads(Path(path).read_text()))


class _TruthBuilder:
    """Accumulates the ground truth while valid events are generated (each is unique by construction)."""

    def __init__(self) -> None:
        self.event_counts: Counter[tuple[str, str, str]] = Counter()
        self.events_by_version: Counter[tuple[str, int]] = Counter()
        self.orders: Counter[tuple[str, str, str]] = Counter()
        self.revenue_cents: Counter[tuple[str, str, str]] = Counter()
        self.user_ids: dict[tuple[str, str], set[str]] = {}
        self.anonymous_ids: dict[tuple[str, str], set[str]] = {}
        self.stitched: dict[tuple[str, str], str] = {}  # (tenant, anonymous_id) -> user_id

    def add(self, event: dict[str, Any]) -> None:
        tenant, day, event_type = event["tenant_id"], event["occurred_at"][:10], event["event_type"]
        self.event_counts[(tenant, day, event_type)] += 1
        self.events_by_version[(event_type, event["version"])] += 1
        if event_type == "system_alert":
            return
        if event["user_id"] is not None:
            self.user_ids.setdefault((tenant, day), set()).add(event["user_id"])
        else:
            self.anonymous_ids.setdefault((tenant, day), set()).add(event["anonymous_id"])
        if event_type == "signup" and event["anonymous_id"] is not None:
            self.stitched[(tenant, event["anonymous_id"])] = event["user_id"]
        if event_type == "order_completed":
            key = (tenant, day, event["properties"]["currency"])
            self.orders[key] += 1
            self.revenue_cents[key] += round(event["properties"]["amount"] * 100)

    def users(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        stitched, raw = {}, {}
        for key in set(self.user_ids) | set(self.anonymous_ids):
            users, anons = self.user_ids.get(key, set()), self.anonymous_ids.get(key, set())
            raw[key] = len(users) + len(anons)
            stitched[key] = len(users | {self.stitched.get((key[0], a), a) for a in anons})
        return stitched, raw

"""A sample CRM export (``conf/dimensions/users.csv``) for a generated stream, so silver's users dimension has
file-sourced users to merge with the ones derived from signup events (tests, benches, ``dimensions sample-users``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines.silver.dimensions import USERS_FILE_COLUMNS, country_of
from pipelines.synthetic.generator import GeneratedMessage


def sample_users(messages: Iterable[GeneratedMessage]) -> list[dict[str, Any]]:
    """A CRM export for a generated stream: users who were already signed in (no signup event in the stream).

    Values are derived from a hash of the user id, so the file is deterministic: signup 1-720 days before the
    user's first event, plan free/pro/enterprise ~ 80/15/5, country from the user's first locale.
    """
    first_seen: dict[tuple[str, str], tuple[str, str | None]] = {}
    signed_up: set[tuple[str, str]] = set()
    for message in messages:
        if message.kind != "valid":
            continue
        event = json.loads(message.value)
        if event["user_id"] is None or event["event_type"] == "system_alert":
            continue
        slot = (event["tenant_id"], event["user_id"])
        if event["event_type"] == "signup":
            signed_up.add(slot)
        locale = (event.get("context") or {}).get("locale")
        if slot not in first_seen or event["occurred_at"] < first_seen[slot][0]:
            first_seen[slot] = (event["occurred_at"], locale)
    rows = []
    for (tenant, user), (occurred, locale) in sorted(first_seen.items()):
        if (tenant, user) in signed_up:
            continue
        digest = int.from_bytes(hashlib.sha256(f"{tenant}:{user}".encode()).digest()[:8], "big")
        first_day = date.fromisoformat(occurred[:10])
        share = digest % 100
        rows.append(
            {
                "tenant_id": tenant,
                "user_id": user,
                "signup_date": (first_day - timedelta(days=1 + digest % 720)).isoformat(),
                "plan": "free" if share < 80 else "pro" if share < 95 else "enterprise",
                "country": country_of(locale) or "",
            }
        )
    return rows


def write_users_file(rows: Iterable[dict[str, Any]], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=USERS_FILE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    return count

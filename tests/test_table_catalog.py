"""`catalog show`: the table catalog generated from the registry, the configuration and the lake (no JVM)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from pipelines.platform.registry import TABLES


def test_catalog_lists_every_table_with_its_declaration_config_and_lake_schema(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    revenue = pa.table(
        {"tenant_id": ["acme"], "date": [date(2026, 11, 1)], "currency": ["EUR"], "orders": pa.array([3], pa.int64())}
    )
    write_deltalake(str(lake / "gold" / "revenue"), revenue, partition_by=["tenant_id", "date"])
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE__")}
    environ |= {
        "LAKEHOUSE_PROFILE": "local",
        "LAKEHOUSE__LAKE__ROOT": str(lake),
        "LAKEHOUSE__MAINTENANCE__RETENTION_DAYS": "{bronze.quarantine: 30, silver.events: 400}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "catalog", "show", "--out", str(tmp_path / "out")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "out" / "catalog.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    assert set(rows) == {spec.full_name for spec in TABLES}
    assert "| 30 days | raw | kafka | `bronze run` |" in rows["bronze.quarantine"]  # the configured retention
    assert "| 400 days | pseudonymized | bronze.events, silver.dim_users, silver.dim_devices |" in rows["silver.events"]
    assert (
        "| tenant_id, date | data-platform | kept until erased | aggregated | silver.events | `gold build` |"
        in (rows["gold.revenue"])
    )
    sections = {part.split("\n", 1)[0]: part for part in page.split("\n## ")[1:]}
    assert "Columns (lake, Delta version 0):" in sections["gold.revenue"]
    assert "- `currency` string" in sections["gold.revenue"] and "- `orders` int64" in sections["gold.revenue"]
    assert "Columns (declared):" in sections["bronze.events"] and "- `raw_value` binary" in sections["bronze.events"]
    assert "(the table has not been created yet)" in sections["gold.funnels"]
    html = (tmp_path / "out" / "catalog.html").read_text()
    assert html.count("<tr>") == len(TABLES) + 1 and "gold.revenue" in html and "<script" not in html

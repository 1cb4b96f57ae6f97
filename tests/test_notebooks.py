"""Every notebook in notebooks/ runs top to bottom (nbclient, a real kernel) on a lake the real chain filled:
generated events (malformed ones included) -> Kafka -> bronze -> silver -> gold through the gates, then a replay
of two days, so the quality and time-travel notebooks have quarantine rows, gate results and versions to show."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import nbformat
import pytest
from conftest import publish, write_config
from nbclient import NotebookClient

from pipelines import gold, silver
from pipelines.bronze import run_bronze
from pipelines.config import Settings
from pipelines.synthetic.generator import GeneratorSpec
from pipelines.synthetic.users import sample_users, write_users_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
SPEC = GeneratorSpec(
    seed=41, tenants=2, users_per_tenant=30, days=4, duplicate_rate=0.05, late_rate=0.05, malformed_rate=0.02
)


@pytest.fixture(scope="module")
def analyst_config(spark, settings: Settings, broker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config file of a lake as `./dev run` leaves it, plus one replay; the kernels load it."""
    import uuid

    from pipelines.kafka.topics import ensure_topics

    root = tmp_path_factory.mktemp("analyst")
    suffix = uuid.uuid4().hex[:8]
    kafka = settings.kafka.model_copy(
        update={
            "topics": {f"{name}.{suffix}": spec for name, spec in settings.kafka.topics.items()},
            "dead_letter_topic": f"{settings.kafka.dead_letter_topic}.{suffix}",
        }
    )
    lake_settings = settings.model_copy(
        update={
            "kafka": kafka,
            "lake": settings.lake.model_copy(update={"root": str(root / "lake")}),
            "catalog": settings.catalog.model_copy(update={"metastore": "none"}),
            "silver": settings.silver.model_copy(update={"dimensions_dir": str(root / "dims")}),
            "quality": settings.quality.model_copy(update={"docs_dir": str(root / "data_docs")}),
        }
    )
    ensure_topics(lake_settings, broker.bootstrap_servers)
    messages, truth = publish(lake_settings, broker.bootstrap_servers, SPEC)
    (root / "dims").mkdir()
    write_users_file(sample_users(messages), root / "dims" / "users.csv")
    query = run_bronze(spark, lake_settings, broker.bootstrap_servers, once=True)
    assert query.exception() is None and truth.malformed > 0
    last = SPEC.start_date + timedelta(days=SPEC.days - 1)
    silver.build(spark, lake_settings, SPEC.start_date, last)
    gold.build(spark, lake_settings, SPEC.start_date, last)
    silver.build(spark, lake_settings, last - timedelta(days=1), last)  # a replay of the last two days
    gold.build(spark, lake_settings, last - timedelta(days=1), last)
    return write_config(lake_settings, root / "lakehouse.yaml")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(analyst_config: Path, path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "outputs committed"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_") or k == "LAKEHOUSE_HOME"}
    environ |= {"LAKEHOUSE_CONFIG": str(analyst_config), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=environ)  # raises CellExecutionError, naming the cell, on any error
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    if path.stem.startswith("02_"):
        assert len(images) >= 4, "the product tour draws its charts"
    if path.stem.startswith("04_"):
        assert "compared version" in text and "only one version so far" not in text

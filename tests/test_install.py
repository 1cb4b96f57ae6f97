"""The package installs non-editable and finds its project from outside the checkout.

A wheel is built from the checkout and installed without dependencies into a fresh virtual environment that
borrows the project venv's site-packages for the dependencies (a path entry, so the checkout's editable hook
is not loaded). The commands then run from a directory outside the checkout: what they import must be the
installed copy, and the project's files (conf/, schemas) must come from ``LAKEHOUSE_HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv holding the package from a wheel built from the checkout."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    uv = Path(sys.executable).with_name("uv")  # ./dev install puts the pinned uv into the venv
    subprocess.run([uv, "build", "-q", "--wheel", "--out-dir", wheels, CHECKOUT], check=True, cwd=root)
    wheel = next(wheels.glob("lakehouse_pipelines-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "project_venv_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    return python


def _run(python: Path, args: list[str], cwd: Path, home: Path | None) -> subprocess.CompletedProcess[str]:
    # Neither the project's settings nor a PYTHONPATH pointing at a checkout may leak into the installed run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE") and k != "PYTHONPATH"}
    if home is not None:
        env["LAKEHOUSE_HOME"] = str(home)
    return subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_package_runs_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, ["-c", "import pipelines; print(pipelines.__file__)"], tmp_path, CHECKOUT)
    assert where.returncode == 0, where.stderr
    assert not Path(where.stdout.strip()).is_relative_to(CHECKOUT), "imported the checkout, not the install"

    shown = _run(installed, ["-m", "pipelines", "config", "show"], tmp_path, CHECKOUT)
    assert shown.returncode == 0, shown.stderr
    config = json.loads(shown.stdout)
    assert config["home"] == str(CHECKOUT)
    assert config["source"] == str(CHECKOUT / "conf" / "lakehouse.yaml")

    checked = _run(installed, ["-m", "pipelines", "schemas", "check"], tmp_path, CHECKOUT)
    assert checked.returncode == 0, checked.stderr


def test_without_a_project_the_command_says_how_to_name_one(installed: Path, tmp_path: Path) -> None:
    shown = _run(installed, ["-m", "pipelines", "config", "show"], tmp_path, None)
    assert shown.returncode != 0
    assert "no lakehouse project here" in shown.stderr and "LAKEHOUSE_HOME" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_the_wheel_declares_the_runtime_dependencies(installed: Path, tmp_path: Path) -> None:
    code = "import importlib.metadata as m, json; print(json.dumps(m.requires('lakehouse-pipelines')))"
    declared = json.loads(_run(installed, ["-c", code], tmp_path, CHECKOUT).stdout)
    names = {
        requirement.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0] for requirement in declared
    }
    assert {"pyspark", "delta-spark", "great-expectations", "pydantic", "confluent-kafka"} <= names

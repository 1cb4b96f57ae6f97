"""Pinned jars: resolved once from Maven, checked, no network when current, clear errors when missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.platform import jars


def test_installed_groups_are_complete_and_free_of_pyspark_duplicates() -> None:
    shipped = jars._pyspark_artifacts()
    for name in jars.GROUPS:
        paths = jars.jar_paths(name)
        assert paths, name
    spark_jars = jars.jar_paths("spark")
    assert not [p.name for p in spark_jars if jars._artifact(p.name) in shipped], "two copies of a class on one path"
    names = [p.name for p in spark_jars]
    assert "delta-spark_4.2_2.13-4.4.0.jar" in names and "spark-sql-kafka-0-10_2.13-4.2.0.jar" in names


def test_a_current_install_makes_no_maven_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_maven(*args, **kwargs):
        raise AssertionError(f"Maven was called: {args}")

    monkeypatch.setattr(jars.subprocess, "run", no_maven)
    for name in jars.GROUPS:
        folder, downloaded = jars.resolve(name)
        assert downloaded is False and folder == jars.group_dir(name)
    manifest = json.loads((jars.group_dir("kafka") / jars.MANIFEST).read_text())
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())


def test_missing_jars_name_the_artifact_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provided = tmp_path / "jars"
    shutil.copytree(jars.group_dir("metastore"), provided / "metastore")
    (provided / "kafka").mkdir()
    monkeypatch.setenv(jars.JARS_DIR_ENV, str(provided))
    assert jars.resolve("metastore") == (provided / "metastore", False)  # user-provided jars: checked, not fetched
    with pytest.raises(jars.JarsError) as error:
        jars.resolve("kafka")
    message = str(error.value)
    assert "kafka_2.13" in message and str(provided / "kafka") in message and jars.JARS_DIR_ENV in message
    assert jars.main(["kafka"]) == 1


def test_unknown_group_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        jars.main(["hive"])
    assert exit_info.value.code == 2

"""The operator every Spark task of the DAGs uses: a ``python -m pipelines`` command submitted with the Apache
Spark provider's ``SparkSubmitOperator`` on the configured Spark connection (``local[*]`` on a laptop, a
cluster's master in production), so Airflow's UI shows a Spark application per task and the command's own
output - counts, gate results, the Data Docs path - lands in the task log.

What the provider cannot know is added when the task runs, never at DAG parse time: the pinned jars, the
metastore's JDBC driver on the driver's class path, this venv's interpreter for driver and workers. Exit
status 2 is the CLI's "bad input or configuration": the task fails at once instead of retrying the same
mistake; any other failure (a killed JVM, a Delta write conflict) is retried with the DAG's backoff.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

ENTRY = str(Path(__file__).parents[1] / "cli" / "submit" / "lakehouse_job.py")  # the CLI as a Spark application
BAD_INPUT_EXIT = 2  # pipelines.cli: configuration or input error


class LakehouseJobOperator(SparkSubmitOperator):
    """``python -m pipelines <command>`` as a Spark application (``command`` is templated and mappable)."""

    def __init__(self, *, command: list[str], conn_id: str, java_options: str | None = None, **kwargs: Any) -> None:
        """``java_options``: the driver JVM's ``spark.driver.extraJavaOptions`` (a DAG default from the profile)."""
        if java_options:
            kwargs["conf"] = {**(kwargs.get("conf") or {}), "spark.driver.extraJavaOptions": java_options}
        super().__init__(application=ENTRY, application_args=command, conn_id=conn_id, **kwargs)

    def execute(self, context: Any) -> None:
        from pipelines.platform.jars import jar_paths

        jars = [str(path) for path in jar_paths("spark")]
        self.jars = ",".join(jars)
        # DataNucleus (the metastore client) loads its JDBC driver from the driver JVM's own class path.
        self.driver_class_path = os.pathsep.join(path for path in jars if Path(path).name.startswith("derbyclient-"))
        interpreter = sys.executable
        self.env_vars = {
            "PATH": f"{Path(interpreter).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # spark-submit of this venv
            "PYSPARK_PYTHON": interpreter,
            "PYSPARK_DRIVER_PYTHON": interpreter,
            "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
            "COLUMNS": "160",  # the command's tables (counts, gates) at full width in the task log
            **(self.env_vars or {}),
        }
        self.log.info("python -m pipelines %s", " ".join(str(arg) for arg in self.application_args or ()))
        try:
            super().execute(context)
        except AirflowException as exc:
            process = getattr(self._hook, "_submit_sp", None)
            if process is not None and process.returncode == BAD_INPUT_EXIT:
                raise AirflowFailException(f"the command refused its input (exit status 2; see above): {exc}") from exc
            raise

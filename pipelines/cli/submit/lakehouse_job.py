"""spark-submit's entry point: one ``python -m pipelines`` command, in the driver spark-submit started.

The session the command builds (``pipelines.platform.spark.build_spark``) joins that driver: the master and
resources are the ones spark-submit was given (the Airflow Spark connection), Delta and the catalog are ours.
"""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())

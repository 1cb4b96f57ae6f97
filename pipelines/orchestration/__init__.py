"""Airflow orchestration: what the DAGs in dags/ run, so the DAG files only wire tasks.

- ``requests``: replay and manual-run conf, validated before any table is touched; replay chunks;
- ``freshness``: whether bronze has caught up past a time (the medallion sensor), without a JVM;
- ``spark_submit``: the Spark-job operator (our CLI under spark-submit, on the configured Spark connection);
- ``tasks``: DAG defaults from the settings and the Python tasks' bodies (interval, sensor poke, replay plan).

Each DAG file reads the settings and wires these in plain Airflow; no DAG factory hides what runs.
"""

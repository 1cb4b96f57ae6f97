"""``python -m pipelines``: one command line in front of every job.

Each sub-command loads the profile first, so a bad configuration fails before any work starts.

- ``parser``: ``build_parser`` (global options, one sub-command per group) and ``main`` (error handling, exit codes).
- ``render``: the consoles and what several groups share (profile loading, batch Spark, date/gate options, gate table).
- ``run``: the main job end to end.
- ``broker``: ``broker start|stop|status`` and ``topics create``.
- ``metastore``: ``metastore start|stop|status`` and ``catalog sync``.
- ``generate``: ``generate`` (synthetic stream, published or written) and the generator options.
- ``bronze``: ``bronze run|status|compact|vacuum``.
- ``schemas``: ``schemas check|validate``.
- ``builds``: ``silver build``, ``gold build`` and ``replay``.
- ``quality``: ``quality validate``.
- ``dimensions``: ``dimensions load|sample-users``.
- ``erase``: ``erase`` (one person out of every table).
- ``maintenance``: ``maintenance run`` (retention, compaction, vacuum).
- ``stack``: ``stack up|down|status`` (broker, bronze stream and Airflow on this machine).
- ``config``: ``config show``.
- ``submit/``: the file spark-submit runs for Airflow's Spark tasks (the CLI as a Spark application).
"""

from pipelines.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]

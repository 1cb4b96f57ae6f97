"""The file spark-submit runs (``lakehouse_job.py``). It sits alone in this folder because spark-submit puts a
script's folder first on ``sys.path``: next to modules named like the standard library's or Kafka's (as in
``pipelines/``), they would shadow them."""

"""Spark connectors written on Spark's Python Data Source API (no JVM jars needed).

Short names registered on every session built by ``pipelines.spark.build_spark``:
``lakehouse_kafka`` (batch + streaming source) and ``lakehouse_delta`` (reader, batch writer,
streaming sink). This package imports neither module: the Python process Spark starts for a
query's Kafka source then loads Kafka's module only, not delta-rs.
"""

"""Spark connectors written on Spark's Python Data Source API (no JVM jars needed).

Short names registered on every session built by ``pipelines.spark.build_spark``:
``lakehouse_kafka`` (batch + streaming source) and ``lakehouse_delta`` (reader, batch writer,
streaming sink).
"""

from pipelines.connectors.delta import DeltaDataSource
from pipelines.connectors.kafka import KafkaDataSource

DATA_SOURCES: list[type] = [KafkaDataSource, DeltaDataSource]

"""Everything that talks to Kafka: publishing events, the local broker, topics and client security.

* ``producer`` - the producer library: validated, idempotent, acknowledged publishing, invalid events to the DLQ;
* ``broker``   - the embedded Apache Kafka broker (KRaft, one node) run from jars: start, stop, health;
* ``topics``   - works against any Kafka: the bootstrap servers to use and creating the configured topics;
* ``security`` - one set of client settings for librdkafka and for the Java client inside Spark.
"""

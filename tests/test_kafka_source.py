"""The ``lakehouse_kafka`` Spark source against the real embedded broker (Tansu) and the shared SparkSession.

Every test makes its own topics. Records are produced keyed, with headers, by an idempotent lz4
producer (the setup that makes Tansu's ListOffsets under-report), and some partitions carry a committed
transaction, so ranges end in control records that are never delivered.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from pipelines.connectors.kafka import (
    KAFKA_SCHEMA,
    KafkaDataLossError,
    KafkaDataSource,
    KafkaRange,
    KafkaSourceError,
    SourceOptions,
    _binary_array,
    limit_ends,
    offsets_from_json,
    offsets_to_json,
    range_consumer_settings,
    split_ranges,
)

SOURCE = "lakehouse_kafka"

# Spark's built-in Kafka source schema with includeHeaders=true, spelled out independently of the connector.
SPARK_KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType(), True),
        StructField("value", BinaryType(), True),
        StructField("topic", StringType(), True),
        StructField("partition", IntegerType(), True),
        StructField("offset", LongType(), True),
        StructField("timestamp", TimestampType(), True),
        StructField("timestampType", IntegerType(), True),
        StructField(
            "headers",
            ArrayType(
                StructType([StructField("key", StringType(), True), StructField("value", BinaryType(), True)]), True
            ),
            True,
        ),
    ]
)

Record = tuple[
    int, int, bytes | None, bytes, tuple[tuple[str, bytes], ...] | None
]  # partition, offset, key, value, headers


# ---------------------------------------------------------------------------------------------- helpers


def new_topic(bootstrap: str, partitions: int, name: str | None = None) -> str:
    name = name or f"kafka-source-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=10).topics.get(name)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:
            return name
        time.sleep(0.1)
    raise AssertionError(f"topic {name} did not appear with {partitions} partitions")


def delete_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([name])[name].result(30)
    deadline = time.monotonic() + 30
    while name in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"topic {name} still listed after deletion"
        time.sleep(0.1)


def produce(bootstrap: str, topic: str, count: int, first: int = 0) -> list[Record]:
    """Keyed records with headers (every 10th without key and headers), idempotent lz4, acks=all."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "compression.type": "lz4", "linger.ms": 5}
    )
    delivered: list[Record] = []

    def on_delivery(headers: tuple[tuple[str, bytes], ...] | None):
        # Delivery reports carry no headers: remember the ones this record was sent with.
        def record(error, message) -> None:
            assert error is None, error
            delivered.append((message.partition(), message.offset(), message.key(), message.value(), headers))

        return record

    for n in range(first, first + count):
        value = f'{{"n":{n}}}'.encode()
        if n % 10 == 0:
            producer.produce(topic, value=value, on_delivery=on_delivery(None))
        else:
            headers = (("trace_id", f"trace-{n}".encode()), ("n", str(n).encode()))
            key = f"user-{n % 37}".encode()
            producer.produce(topic, key=key, value=value, headers=list(headers), on_delivery=on_delivery(headers))
        producer.poll(0)
    assert producer.flush(30) == 0
    assert len(delivered) == count
    return delivered


def produce_transaction(bootstrap: str, topic: str, partition: int, count: int) -> list[Record]:
    """A committed transaction: its commit marker takes an offset that no consumer ever receives."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    delivered: list[Record] = []
    for n in range(count):
        producer.produce(
            topic,
            partition=partition,
            key=b"tx",
            value=f"tx-{n}".encode(),
            on_delivery=lambda error, m: delivered.append((m.partition(), m.offset(), m.key(), m.value(), None)),
        )
    producer.commit_transaction(30)
    assert len(delivered) == count
    return delivered


def kafka_options(bootstrap: str, **extra: str) -> dict[str, str]:
    return {"kafka.bootstrap.servers": bootstrap, **extra}


def row_record(row) -> Record:
    headers = tuple((h["key"], h["value"]) for h in row["headers"]) if row["headers"] is not None else None
    return (row["partition"], row["offset"], row["key"], row["value"], headers)


def run_available_now(spark, options: dict[str, str], checkpoint: Path) -> tuple[list[tuple[str, int, int]], list[int]]:
    """One Trigger.AvailableNow run; returns (topic, partition, offset) of every row and each batch's row count."""
    seen: list[tuple[str, int, int]] = []

    def collect(batch_df, batch_id: int) -> None:
        seen.extend(
            (r["topic"], r["partition"], r["offset"]) for r in batch_df.select("topic", "partition", "offset").collect()
        )

    query = (
        spark.readStream.format(SOURCE)
        .options(**options)
        .load()
        .writeStream.foreachBatch(collect)
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    try:
        assert query.awaitTermination(180), "availableNow query did not finish in 180 s"
    finally:
        query.stop()
    if query.exception() is not None:
        raise query.exception()
    return seen, [progress["numInputRows"] for progress in query.recentProgress]


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        answers = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in answers}
    finally:
        consumer.close()


def true_ends(records: list[Record], extra: dict[int, int] | None = None) -> dict[int, int]:
    """Per partition: last produced offset + 1, plus any control records after it."""
    ends: dict[int, int] = {}
    for partition, offset, *_ in records:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    for partition, markers in (extra or {}).items():
        ends[partition] += markers
    return ends


# ---------------------------------------------------------------------------------------------- pure planning


def test_limit_ends_shares_backlog_in_proportion_and_never_exceeds_the_limit() -> None:
    begin = {("t", 0): 0, ("t", 1): 100, ("t", 2): 50, ("u", 0): 7}
    ends = {("t", 0): 900, ("t", 1): 190, ("t", 2): 60, ("u", 0): 7}
    limited = limit_ends(begin, ends, 100)
    taken = {tp: limited[tp] - begin[tp] for tp in begin}
    assert sum(taken.values()) == 100
    assert taken == {("t", 0): 90, ("t", 1): 9, ("t", 2): 1, ("u", 0): 0}
    assert all(begin[tp] <= limited[tp] <= ends[tp] for tp in begin)
    assert limit_ends(begin, ends, 10_000) == ends  # enough room: everything
    tight = limit_ends({("t", 0): 0, ("t", 1): 0, ("t", 2): 0}, {("t", 0): 5, ("t", 1): 5, ("t", 2): 5}, 2)
    assert sum(tight.values()) == 2 and max(tight.values()) == 1


def test_split_ranges_and_offset_json_are_exact_and_deterministic() -> None:
    pieces = split_ranges(("t", 3), 10, 105, 40)
    assert [(p.start, p.end) for p in pieces] == [(10, 41), (41, 73), (73, 105)]
    assert all(p.end - p.start <= 40 for p in pieces)
    assert split_ranges(("t", 3), 5, 5, 40) == []
    assert [(p.start, p.end) for p in split_ranges(("t", 0), 0, 7, None)] == [(0, 7)]
    offsets = {("b", 10): 1, ("a", 2): 5, ("b", 9): 3}
    as_json = offsets_to_json(offsets)
    assert json.dumps(as_json) == '{"a": {"2": 5}, "b": {"9": 3, "10": 1}}'
    assert offsets_from_json(as_json) == offsets


def test_binary_payload_column_equals_arrows_own_conversion() -> None:
    cases = [
        [],
        [b""],
        [b"", b"", b""],
        [b"x" * 330, b"", b"\x00\xff" * 7],
        [b"a", None, b"c"],  # tombstones keep their nulls
        [None, None],
        [bytes([i % 256]) * (i % 97) for i in range(5000)],
    ]
    for values in cases:
        column = _binary_array(values)
        column.validate(full=True)
        assert column.equals(pa.array(values, pa.binary())), values[:3]


def test_reading_tasks_bound_prefetch_to_their_range_unless_the_user_tunes_it() -> None:
    options = SourceOptions.parse({"kafka.bootstrap.servers": "127.0.0.1:1", "subscribe": "t"}, streaming=True)
    small = range_consumer_settings(options, KafkaRange("t", 0, 100, 350))
    assert small["queued.min.messages"] == 250  # librdkafka's 100k would fetch far past the range end
    assert small["queued.max.messages.kbytes"] < 65536 and small["fetch.queue.backoff.ms"] < 1000
    assert small["enable.partition.eof"] is True and small["auto.offset.reset"] == "error"
    assert range_consumer_settings(options, KafkaRange("t", 0, 0, 10**7))["queued.min.messages"] == 100_000
    tuned = SourceOptions.parse(
        {"kafka.bootstrap.servers": "127.0.0.1:1", "subscribe": "t", "kafka.queued.max.messages.kbytes": "9000"},
        streaming=True,
    )
    config = tuned.consumer_config(**range_consumer_settings(tuned, KafkaRange("t", 0, 0, 10)))
    assert config["queued.max.messages.kbytes"] == "9000" and config["queued.min.messages"] == 10


def test_option_errors_name_the_option() -> None:
    stream = {"kafka.bootstrap.servers": "127.0.0.1:9", "subscribe": "t"}
    cases = [
        ({"subscribe": "t"}, "kafka.bootstrap.servers is required"),
        ({**stream, "subscribePattern": "t.*"}, "exactly one of subscribe .* or subscribePattern .*; got both"),
        ({"kafka.bootstrap.servers": "127.0.0.1:9"}, "got neither"),
        (
            {**stream, "startingOffsets": '{"t": {"0": 1'},
            "option startingOffsets: expected 'earliest', 'latest' or JSON",
        ),
        ({**stream, "startingOffsets": '{"t": {"x": 1}}'}, "'x' -> 1 is not a partition number"),
        ({**stream, "endingOffsets": "latest"}, "endingOffsets is for batch reads only"),
        ({**stream, "maxOffsetPerTrigger": "10"}, r"unknown option\(s\) \['maxoffsetpertrigger'\]"),
        ({**stream, "maxOffsetsPerTrigger": "ten"}, "maxOffsetsPerTrigger: expected a positive integer"),
        ({**stream, "failOnDataLoss": "yes"}, "failOnDataLoss: expected true or false"),
        ({**stream, "kafka.group.id": "g"}, "kafka.group.id is not supported"),
        ({**stream, "endOffsets": "magic"}, "endOffsets: expected auto, fetch or listOffsets"),
        ({**stream, "includeHeaders": "no"}, "includeHeaders: expected true or false"),
    ]
    for options, message in cases:
        with pytest.raises(KafkaSourceError, match=message):
            KafkaDataSource(options).streamReader(KAFKA_SCHEMA)
    with pytest.raises(KafkaSourceError, match=r"'latest' .* not allowed in batch"):
        KafkaDataSource({**stream, "startingOffsets": "latest"}).reader(KAFKA_SCHEMA)
    with pytest.raises(KafkaSourceError, match="fixed schema"):
        KafkaDataSource(stream).reader(StructType([StructField("value", BinaryType())]))
    parsed = SourceOptions.parse({**stream, "Kafka.Security.Protocol": "PLAINTEXT", "MAXOFFSETSPERTRIGGER": "5"}, True)
    assert parsed.client_settings["security.protocol"] == "PLAINTEXT"
    assert parsed.max_offsets_per_trigger == 5
    assert parsed.client_settings["isolation.level"] == "read_committed"


# ---------------------------------------------------------------------------------------------- batch


@pytest.mark.integration
def test_option_error_surfaces_through_spark(spark) -> None:
    with pytest.raises(Exception, match=r"kafka\.bootstrap\.servers is required"):
        spark.read.format(SOURCE).option("subscribe", "t").load().collect()
    with pytest.raises(Exception, match="option startingOffsets: expected 'earliest', 'latest' or JSON"):
        spark.read.format(SOURCE).options(
            **kafka_options("127.0.0.1:9", subscribe="t", startingOffsets="{not json")
        ).load().collect()


@pytest.mark.integration
@pytest.mark.slow
def test_batch_read_has_spark_kafka_schema_and_every_record(spark, broker) -> None:
    bootstrap = broker.bootstrap_servers
    topic = new_topic(bootstrap, 3)
    before = datetime.now(UTC) - timedelta(seconds=5)
    produced = produce(bootstrap, topic, 300)
    after = datetime.now(UTC) + timedelta(seconds=5)

    df = spark.read.format(SOURCE).options(**kafka_options(bootstrap, subscribe=topic)).load()
    assert df.schema == SPARK_KAFKA_SCHEMA
    rows = df.collect()
    assert sorted(row_record(r) for r in rows) == sorted(produced)
    assert {r["topic"] for r in rows} == {topic}
    assert {r["timestampType"] for r in rows} == {0}  # CreateTime, Kafka's id
    assert all(before <= r["timestamp"].astimezone(UTC) <= after for r in rows)
    assert any(r["key"] is None and r["headers"] is None for r in rows)

    not_yet = spark.read.format(SOURCE).options(**kafka_options(bootstrap, subscribe=f"{topic}-not-created")).load()
    assert not_yet.count() == 0

    split = (
        spark.read.format(SOURCE)
        .options(**kafka_options(bootstrap, subscribe=topic, maxRecordsPerPartition="40"))
        .load()
    )
    per_partition = Counter(p for p, *_ in produced)
    assert split.rdd.getNumPartitions() == sum(-(-n // 40) for n in per_partition.values())
    assert sorted(row_record(r) for r in split.collect()) == sorted(produced)

    bare = spark.read.format(SOURCE).options(**kafka_options(bootstrap, subscribe=topic, includeHeaders="false")).load()
    assert bare.schema == StructType(SPARK_KAFKA_SCHEMA.fields[:-1])  # Spark's schema without includeHeaders
    assert sorted((r.partition, r.offset, r.key, r.value) for r in bare.collect()) == sorted(
        (p, o, k, v) for p, o, k, v, _ in produced
    )


@pytest.mark.integration
def test_batch_starting_and_ending_offsets_json(spark, broker) -> None:
    bootstrap = broker.bootstrap_servers
    topic = new_topic(bootstrap, 2)
    produced = produce(bootstrap, topic, 120)
    ends = true_ends(produced)
    options = kafka_options(
        bootstrap,
        subscribe=topic,
        startingOffsets=json.dumps({topic: {"0": 10, "1": -2}}),
        endingOffsets=json.dumps({topic: {"0": 20, "1": -1}}),
    )
    got = sorted((r["partition"], r["offset"]) for r in spark.read.format(SOURCE).options(**options).load().collect())
    assert got == [(0, o) for o in range(10, 20)] + [(1, o) for o in range(ends[1])]

    missing = kafka_options(bootstrap, subscribe=topic, startingOffsets=json.dumps({topic: {"0": 1}}))
    with pytest.raises(
        Exception, match=rf"must give an offset for every subscribed partition .* missing: \['{topic}-1'\]"
    ):
        spark.read.format(SOURCE).options(**missing).load().collect()
    beyond = kafka_options(bootstrap, subscribe=topic, endingOffsets=json.dumps({topic: {"0": ends[0] + 5, "1": -1}}))
    with pytest.raises(Exception, match=rf"{topic}-0 offset {ends[0] + 5} is beyond the partition's end {ends[0]}"):
        spark.read.format(SOURCE).options(**beyond).load().collect()


@pytest.mark.integration
@pytest.mark.slow
def test_tansu_under_reported_end_offsets_do_not_lose_records(spark, broker, tmp_path) -> None:
    """Idempotent lz4 keyed records on 4 partitions plus a committed transaction on partition 0.

    Tansu's ListOffsets (and get_watermark_offsets(cached=False)) can report far too low an end here;
    the default endOffsets=auto, and fetch, must still read every record, stopping past the commit marker.
    """
    bootstrap = broker.bootstrap_servers
    topic = new_topic(bootstrap, 4)
    produced = produce(bootstrap, topic, 4000)
    produced += produce_transaction(bootstrap, topic, 0, 25)
    ends = true_ends(produced, extra={0: 1})  # the commit marker
    expected = sorted((p, o) for p, o, *_ in produced)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = [TopicPartition(topic, p) for p in range(4)]
    answers = admin.list_offsets(
        {tp: OffsetSpec.latest() for tp in partitions}, isolation_level=IsolationLevel.READ_COMMITTED
    )
    listed = {tp.partition: future.result().offset for tp, future in answers.items()}

    def read(**extra: str) -> list[tuple[int, int]]:
        df = spark.read.format(SOURCE).options(**kafka_options(bootstrap, subscribe=topic, **extra)).load()
        return sorted((r["partition"], r["offset"]) for r in df.select("partition", "offset").collect())

    assert read() == expected
    assert read(endOffsets="fetch") == expected
    assert read(endOffsets="fetch", **{"kafka.isolation.level": "read_uncommitted"}) == expected

    if listed != ends:
        assert all(listed[p] <= ends[p] for p in ends), f"ListOffsets over-reported: {listed} vs {ends}"
        under_read = read(endOffsets="listOffsets")
        assert under_read == [(p, o) for p, o in expected if o < listed[p]]
        assert len(under_read) < len(expected)
    else:
        warnings.warn(
            f"Tansu reported correct end offsets this time ({listed}); the under-report was not reproduced",
            stacklevel=1,
        )

    stream_options = kafka_options(bootstrap, subscribe=topic, startingOffsets="earliest")
    seen, _ = run_available_now(spark, stream_options, tmp_path / "checkpoint")
    assert sorted((p, o) for _, p, o in seen) == expected


# ---------------------------------------------------------------------------------------------- streaming


@pytest.mark.integration
@pytest.mark.slow
def test_stream_reads_every_offset_once_resumes_from_checkpoint_and_commits_group(spark, broker, tmp_path) -> None:
    bootstrap = broker.bootstrap_servers
    topic = new_topic(bootstrap, 3)
    group = f"lag-{topic}"
    produced = produce(bootstrap, topic, 600)
    checkpoint = tmp_path / "checkpoint"
    options = kafka_options(bootstrap, subscribe=topic, startingOffsets="earliest", groupIdForCommit=group)

    # First run: the ordinary micro-batch trigger until the backlog is processed.
    seen: list[tuple[int, int]] = []
    query = (
        spark.readStream.format(SOURCE)
        .options(**options)
        .load()
        .writeStream.foreachBatch(
            lambda df, _: seen.extend((r[0], r[1]) for r in df.select("partition", "offset").collect())
        )
        .option("checkpointLocation", str(checkpoint))
        .start()
    )
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    assert sorted(seen) == sorted((p, o) for p, o, *_ in produced)
    assert committed_offsets(bootstrap, group, topic, 3) == true_ends(produced)

    # Second run, same checkpoint: only what was produced since, nothing twice.
    more = produce(bootstrap, topic, 250, first=600)
    again, _ = run_available_now(spark, options, checkpoint)
    assert sorted((p, o) for _, p, o in again) == sorted((p, o) for p, o, *_ in more)
    everything = seen + [(p, o) for _, p, o in again]
    assert len(everything) == len(set(everything)) == 850
    for partition, end in true_ends(produced + more).items():  # no gaps
        assert sorted(o for p, o in everything if p == partition) == list(range(end))
    assert committed_offsets(bootstrap, group, topic, 3) == true_ends(produced + more)


@pytest.mark.integration
@pytest.mark.slow
def test_max_offsets_per_trigger_bounds_each_available_now_batch(spark, broker, tmp_path) -> None:
    bootstrap = broker.bootstrap_servers
    topic = new_topic(bootstrap, 4)
    produced = produce(bootstrap, topic, 1000)
    options = kafka_options(bootstrap, subscribe=topic, startingOffsets="earliest", maxOffsetsPerTrigger="150")
    seen, batch_rows = run_available_now(spark, options, tmp_path / "checkpoint")
    non_empty = [n for n in batch_rows if n > 0]
    assert len(non_empty) >= 7, batch_rows
    assert max(non_empty) <= 150
    assert sum(batch_rows) == 1000
    assert sorted((p, o) for _, p, o in seen) == sorted((p, o) for p, o, *_ in produced)


@pytest.mark.integration
@pytest.mark.slow
def test_subscribe_pattern_picks_up_a_topic_created_between_runs(spark, broker, tmp_path) -> None:
    bootstrap = broker.bootstrap_servers
    prefix = f"pattern-{uuid.uuid4().hex[:8]}"
    first_topic = new_topic(bootstrap, 2, f"{prefix}-a")
    first = produce(bootstrap, first_topic, 40)
    options = kafka_options(bootstrap, subscribePattern=rf"{prefix}-.*", startingOffsets="earliest")
    checkpoint = tmp_path / "checkpoint"

    seen, _ = run_available_now(spark, options, checkpoint)
    assert sorted(seen) == sorted((first_topic, p, o) for p, o, *_ in first)

    second_topic = new_topic(bootstrap, 2, f"{prefix}-b")
    second = produce(bootstrap, second_topic, 30)
    more_first = produce(bootstrap, first_topic, 10, first=40)
    again, _ = run_available_now(spark, options, checkpoint)
    expected = [(first_topic, p, o) for p, o, *_ in more_first] + [(second_topic, p, o) for p, o, *_ in second]
    assert sorted(again) == sorted(expected)  # the new topic from its earliest offset, nothing read twice


@pytest.mark.integration
@pytest.mark.slow
def test_fail_on_data_loss_when_a_topic_is_recreated(spark, broker, tmp_path) -> None:
    bootstrap = broker.bootstrap_servers
    topic = new_topic(bootstrap, 1)
    produce(bootstrap, topic, 50)
    checkpoint = tmp_path / "checkpoint"
    options = kafka_options(bootstrap, subscribe=topic, startingOffsets="earliest")
    seen, _ = run_available_now(spark, options, checkpoint)
    assert len(seen) == 50

    delete_topic(bootstrap, topic)
    new_topic(bootstrap, 1, topic)
    recreated = produce(bootstrap, topic, 5)
    with pytest.raises(Exception, match=rf"{topic}-0: the next offset to read is 50 but the partition now ends at 5"):
        run_available_now(spark, options, checkpoint)

    seen, _ = run_available_now(spark, {**options, "failOnDataLoss": "false"}, checkpoint)
    assert sorted(seen) == sorted((topic, p, o) for p, o, *_ in recreated)  # goes on from the new earliest


# ---------------------------------------------------------------------------------------------- offset planning


@pytest.mark.integration
def test_offset_planning_new_partitions_targets_and_lost_topics(broker) -> None:
    """Driver-level planning against the real broker (Tansu cannot add partitions to a topic).

    A checkpoint that does not know partition 2 stands for a partition added after it was written.
    """
    bootstrap = broker.bootstrap_servers
    topic = new_topic(bootstrap, 3)
    produced = produce(bootstrap, topic, 300)
    ends = true_ends(produced)
    reader = KafkaDataSource(kafka_options(bootstrap, subscribe=topic, startingOffsets="earliest")).streamReader(
        KAFKA_SCHEMA
    )
    try:
        assert reader.initialOffset() == {topic: {"0": 0, "1": 0, "2": 0}}
        start = {topic: {"0": 5, "1": ends[1]}}
        end = reader.latestOffset(start, ReadAllAvailable())
        assert end == {topic: {str(p): ends[p] for p in range(3)}}
        ranges = {(r.partition, r.start, r.end) for r in reader.partitions(start, end)}
        assert ranges == {(0, 5, ends[0]), (2, 0, ends[2])}  # the new partition from its earliest offset
        rows = [
            row for task in reader.partitions(start, end) for batch in reader.read(task) for row in batch.to_pylist()
        ]
        assert sorted((r["partition"], r["offset"]) for r in rows) == sorted(
            (p, o) for p, o, *_ in produced if p == 2 or (p == 0 and o >= 5)
        )
        # No new data: the same offsets, serialised identically (Spark compares the JSON strings).
        assert json.dumps(reader.latestOffset(end, ReadAllAvailable())) == json.dumps(end)

        limited = reader.latestOffset(start, ReadMaxRows(20))
        assert sum(limited[topic][p] - offsets_from_json(start).get((topic, int(p)), 0) for p in limited[topic]) == 20

        reader.prepareForTriggerAvailableNow()
        produce(bootstrap, topic, 30, first=300)
        # Spark's first call reuses the snapshot taken for the target; the next one looks again. Either way,
        # data after the target waits for the next run.
        assert reader.latestOffset(end, ReadAllAvailable()) == end
        assert reader.latestOffset(end, ReadAllAvailable()) == end
        assert reader.reportLatestOffset() != end  # progress still shows what is really there
    finally:
        reader.stop()

    other = new_topic(bootstrap, 1)
    produce(bootstrap, other, 3)
    lost = {topic: {str(p): 0 for p in range(3)}, other: {"0": 3}}
    both = kafka_options(bootstrap, subscribe=f"{topic},{other}")
    reader = KafkaDataSource(both).streamReader(KAFKA_SCHEMA)
    delete_topic(bootstrap, other)
    try:
        with pytest.raises(KafkaDataLossError, match=rf"{other}-0 no longer exists .* read up to offset 3"):
            reader.latestOffset(lost, ReadAllAvailable())
    finally:
        reader.stop()
    reader = KafkaDataSource({**both, "failOnDataLoss": "false"}).streamReader(KAFKA_SCHEMA)
    try:
        assert set(reader.latestOffset(lost, ReadAllAvailable())) == {topic}
    finally:
        reader.stop()

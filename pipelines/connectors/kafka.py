"""Kafka source for Spark (batch and streaming) on Spark's Python Data Source API, over confluent-kafka.

Why it exists: Spark's JVM Kafka connector (``spark-sql-kafka-0-10``) cannot be installed from the
registries this project may use. This source follows the built-in one closely so that jobs read the
same way on any Kafka cluster: same output schema, same offset JSON, same option names.

    spark.readStream.format("lakehouse_kafka")
        .option("kafka.bootstrap.servers", "host:9092")
        .option("subscribe", "events")
        .load()

Options (names are case-insensitive):

- ``kafka.bootstrap.servers`` (required) and any other ``kafka.<librdkafka setting>`` (security,
  SASL, fetch tuning ...) passed to every client with the prefix stripped. Not allowed because the
  source owns them: ``kafka.group.id``, ``kafka.enable.auto.commit``, ``kafka.auto.offset.reset``,
  ``kafka.enable.partition.eof``. ``kafka.isolation.level`` defaults to ``read_committed``
  (librdkafka's default; Spark's JVM source defaults to read_uncommitted). Reading tasks bound
  librdkafka's prefetch to their range (``queued.min.messages``, ``queued.max.messages.kbytes``,
  ``fetch.queue.backoff.ms``) unless those are passed.
- ``subscribe`` (comma-separated topics) or ``subscribePattern`` (regex, whole-name match, internal
  ``__*`` topics excluded): exactly one.
- ``startingOffsets``: ``earliest``, ``latest`` or JSON ``{"topic":{"0":23,"1":-2}}`` (-2 earliest,
  -1 latest) naming every subscribed partition. Default ``latest`` for streams, ``earliest`` for batch.
  Only used when a query starts without a checkpoint; partitions and topics that appear later are read
  from their earliest offset.
- ``endingOffsets`` (batch only): ``latest`` (default) or JSON as above.
- ``failOnDataLoss`` (default ``true``): fail with an error naming topic, partition and offsets when
  offsets the query needs are gone (below the log start, partition or topic deleted, topic recreated
  shorter). ``false`` logs a warning and goes on from the earliest offset still there.
- ``maxOffsetsPerTrigger`` (streams): at most this many offsets per micro-batch, shared across
  partitions in proportion to their backlog; also honoured by ``Trigger.AvailableNow``, which fixes
  its target offsets when the query starts.
- ``maxRecordsPerPartition``: split one Kafka partition's range into several Spark tasks of at most
  this many offsets.
- ``groupIdForCommit``: after each committed micro-batch, commit its end offsets to this consumer group
  so that standard lag tools see progress. Spark calls ``commit(end)`` for a batch only when it plans the
  next one, so the source also commits ``start`` in ``latestOffset(start)``: Spark asks for the next
  offsets only after the batch ending at ``start`` is in the checkpoint's commit log. Advisory only:
  the checkpoint stays the source of truth, and a failed group commit is logged, not raised.
- ``groupIdPrefix`` (default ``lakehouse-kafka-source``): prefix of the throwaway group ids of the
  consumers that read (they use assign + seek and never commit).
- ``endOffsets``: how the driver learns each partition's end, see below. Default ``auto``.
- ``fetchOffset.timeoutMs`` (default 30000): how long the driver waits for metadata and end offsets.
- ``kafkaConsumer.pollTimeoutMs`` (default 120000, as Spark): a reading task fails when it makes no
  progress for this long.
- ``arrowBatchSize`` (default 10000): rows per Arrow record batch handed to Spark.
- ``includeHeaders`` (default true): ``false`` drops the headers column, as in Spark, and skips
  decoding headers (about a fifth of the executor's per-record work).

Output schema: exactly Spark's Kafka source schema with ``includeHeaders=true``: key, value (binary),
topic, partition, offset, timestamp, timestampType (Kafka's ids: 0 create time, 1 log-append time),
headers (array<struct<key,value>>, null when a record has none). Offsets in the checkpoint are Spark's
JSON ``{"topic": {"partition": next_offset}}``.

End offsets (``endOffsets``):

- ``listOffsets``: ListOffsets requests (what Spark's JVM source does). Right on real Kafka; on Tansu
  (the embedded broker) it can under-report the latest offset badly, so reads stop short.
- ``fetch``: one short-lived consumer is assigned to every partition at the best known lower bound
  (last end seen, start offset or log start) and polled until each partition reports its end in a
  fetch response: the end-of-partition event's offset (exact under either isolation level: the last
  stable offset under read_committed), or, under read_uncommitted, the high watermark carried by the
  first fetch response. A log shorter than the guess (topic recreated) is noticed from that watermark.
- ``auto`` (default): ``fetch`` whose starting guess also takes the ListOffsets answer. On real Kafka
  that answer is exact, so the probe ends after one empty fetch; on Tansu the fetch corrects it. If the
  probe gets no answer in time, ``auto`` falls back to ListOffsets with a warning, ``fetch`` fails.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamReader, InputPartition
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow
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

logger = logging.getLogger(__name__)

SHORT_NAME = "lakehouse_kafka"

HEADERS_TYPE = ArrayType(StructType([StructField("key", StringType()), StructField("value", BinaryType())]))
KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
        StructField("headers", HEADERS_TYPE),
    ]
)
KAFKA_SCHEMA_WITHOUT_HEADERS = StructType(KAFKA_SCHEMA.fields[:-1])
ARROW_SCHEMA = to_arrow_schema(KAFKA_SCHEMA, timezone="UTC")
ARROW_SCHEMA_WITHOUT_HEADERS = to_arrow_schema(KAFKA_SCHEMA_WITHOUT_HEADERS, timezone="UTC")

EARLIEST = -2
LATEST = -1

TopicPartitionKey = tuple[str, int]
Offsets = dict[TopicPartitionKey, int]
OffsetSpec = str | Offsets  # "earliest", "latest" or specific offsets (may hold EARLIEST / LATEST)

_RESERVED_CLIENT_SETTINGS = {
    "group.id": "readers assign partitions and never join a group; use groupIdPrefix for their throwaway "
    "group ids, or groupIdForCommit to publish progress to a consumer group",
    "enable.auto.commit": "offsets live in Spark's checkpoint; use groupIdForCommit to publish progress",
    "auto.offset.reset": "use startingOffsets",
    "enable.partition.eof": "the source needs end-of-partition events to finish reading a range",
}
_SOURCE_OPTIONS = {
    "subscribe": "subscribe",
    "subscribepattern": "subscribePattern",
    "startingoffsets": "startingOffsets",
    "endingoffsets": "endingOffsets",
    "failondataloss": "failOnDataLoss",
    "maxoffsetspertrigger": "maxOffsetsPerTrigger",
    "maxrecordsperpartition": "maxRecordsPerPartition",
    "groupidforcommit": "groupIdForCommit",
    "groupidprefix": "groupIdPrefix",
    "endoffsets": "endOffsets",
    "fetchoffset.timeoutms": "fetchOffset.timeoutMs",
    "kafkaconsumer.polltimeoutms": "kafkaConsumer.pollTimeoutMs",
    "arrowbatchsize": "arrowBatchSize",
    "includeheaders": "includeHeaders",
}
END_OFFSET_STRATEGIES = ("auto", "fetch", "listoffsets")
# How long one consume() call may block: short, so that a range ending in a gap (transaction markers,
# compaction) is noticed quickly through the end-of-partition event or the consumer position.
_POLL_SLICE_S = 0.1
_PARTITION_GONE = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC)


class KafkaSourceError(ValueError):
    """Bad options or a read that cannot be done; the message names the option or topic/partition/offsets."""


class KafkaDataLossError(KafkaSourceError):
    """Offsets the query needs no longer exist and failOnDataLoss is true."""


def _describe(tp: TopicPartitionKey) -> str:
    return f"{tp[0]}-{tp[1]}"


def offsets_to_json(offsets: Offsets) -> dict[str, dict[str, int]]:
    """Spark's Kafka offset JSON, always in (topic, partition) order.

    Spark compares offsets as JSON strings to decide whether a batch has new data, so equal offsets
    must always serialise to the same string.
    """
    result: dict[str, dict[str, int]] = {}
    for topic, partition in sorted(offsets):
        result.setdefault(topic, {})[str(partition)] = offsets[(topic, partition)]
    return result


def offsets_from_json(data: Mapping[str, Mapping[str, Any]]) -> Offsets:
    return {(topic, int(part)): int(offset) for topic, parts in data.items() for part, offset in parts.items()}


def _parse_offset_spec(name: str, value: str) -> OffsetSpec:
    text = value.strip()
    if text.lower() in ("earliest", "latest"):
        return text.lower()
    example = '\'{"topic":{"0":23,"1":-2}}\''
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KafkaSourceError(
            f"option {name}: expected 'earliest', 'latest' or JSON like {example}; cannot parse {text!r}: {exc}"
        ) from None
    if not isinstance(data, dict) or not data:
        raise KafkaSourceError(f"option {name}: expected a JSON object like {example}, got {text!r}")
    offsets: Offsets = {}
    for topic, parts in data.items():
        if not isinstance(parts, dict) or not parts:
            raise KafkaSourceError(
                f"option {name}: topic {topic!r} must map partition numbers to offsets, got {parts!r}"
            )
        for partition, offset in parts.items():
            if not str(partition).isdigit() or isinstance(offset, bool) or not isinstance(offset, int) or offset < -2:
                raise KafkaSourceError(
                    f"option {name}: {topic!r} partition {partition!r} -> {offset!r} is not a partition number "
                    "mapped to an offset >= 0, -2 (earliest) or -1 (latest)"
                )
            offsets[(topic, int(partition))] = offset
    return offsets


def _parse_positive_int(opts: Mapping[str, str], key: str) -> int | None:
    if key not in opts:
        return None
    try:
        value = int(opts[key])
    except ValueError:
        value = 0
    if value <= 0:
        raise KafkaSourceError(f"option {_SOURCE_OPTIONS[key]}: expected a positive integer, got {opts[key]!r}")
    return value


def _parse_bool(opts: Mapping[str, str], key: str, default: bool) -> bool:
    value = opts.get(key, str(default)).strip().lower()
    if value not in ("true", "false"):
        raise KafkaSourceError(f"option {_SOURCE_OPTIONS[key]}: expected true or false, got {opts[key]!r}")
    return value == "true"


@dataclass(frozen=True)
class SourceOptions:
    """Validated options; plain values only, because executors receive them pickled."""

    client_settings: dict[str, str]
    topics: tuple[str, ...] | None
    pattern: str | None
    starting: OffsetSpec
    ending: OffsetSpec
    fail_on_data_loss: bool
    max_offsets_per_trigger: int | None
    max_records_per_partition: int | None
    group_id_for_commit: str | None
    group_id_prefix: str
    end_offsets: str
    request_timeout_s: float
    poll_timeout_s: float
    arrow_batch_size: int
    include_headers: bool

    @classmethod
    def parse(cls, options: Mapping[str, str], streaming: bool) -> SourceOptions:
        opts = {str(key).lower(): str(value) for key, value in options.items()}
        unknown = sorted(key for key in opts if not key.startswith("kafka.") and key not in _SOURCE_OPTIONS)
        if unknown:
            raise KafkaSourceError(
                f"unknown option(s) {unknown} for {SHORT_NAME}; known: {sorted(_SOURCE_OPTIONS.values())} "
                "and kafka.<librdkafka setting>"
            )
        client = {key.removeprefix("kafka."): value for key, value in opts.items() if key.startswith("kafka.")}
        if not client.get("bootstrap.servers", "").strip():
            raise KafkaSourceError("option kafka.bootstrap.servers is required (e.g. 'broker1:9092,broker2:9092')")
        for key, why in _RESERVED_CLIENT_SETTINGS.items():
            if key in client:
                raise KafkaSourceError(f"option kafka.{key} is not supported: {why}")
        client.setdefault("isolation.level", "read_committed")

        if ("subscribe" in opts) == ("subscribepattern" in opts):
            got = "both" if "subscribe" in opts else "neither"
            raise KafkaSourceError(
                f"exactly one of subscribe (comma-separated topics) or subscribePattern (regex) is required; got {got}"
            )
        topics, pattern = None, None
        if "subscribe" in opts:
            topics = tuple(dict.fromkeys(name.strip() for name in opts["subscribe"].split(",") if name.strip()))
            if not topics:
                raise KafkaSourceError(f"option subscribe: no topic names in {opts['subscribe']!r}")
        else:
            pattern = opts["subscribepattern"]
            try:
                re.compile(pattern)
            except re.error as exc:
                raise KafkaSourceError(f"option subscribePattern: invalid regex {pattern!r}: {exc}") from None

        default_start = "latest" if streaming else "earliest"
        starting = _parse_offset_spec("startingOffsets", opts.get("startingoffsets", default_start))
        if streaming:
            if "endingoffsets" in opts:
                raise KafkaSourceError("option endingOffsets is for batch reads only (spark.read), not streams")
            ending: OffsetSpec = "latest"
        else:
            ending = _parse_offset_spec("endingOffsets", opts.get("endingoffsets", "latest"))
            if starting == "latest" or (isinstance(starting, dict) and LATEST in starting.values()):
                raise KafkaSourceError("option startingOffsets: 'latest' (-1) is not allowed in batch reads")
            if ending == "earliest" or (isinstance(ending, dict) and EARLIEST in ending.values()):
                raise KafkaSourceError("option endingOffsets: 'earliest' (-2) is not allowed in batch reads")

        end_offsets = opts.get("endoffsets", "auto").strip().lower()
        if end_offsets not in END_OFFSET_STRATEGIES:
            raise KafkaSourceError(
                f"option endOffsets: expected auto, fetch or listOffsets, got {opts['endoffsets']!r}"
            )
        return cls(
            client_settings=client,
            topics=topics,
            pattern=pattern,
            starting=starting,
            ending=ending,
            fail_on_data_loss=_parse_bool(opts, "failondataloss", True),
            max_offsets_per_trigger=_parse_positive_int(opts, "maxoffsetspertrigger"),
            max_records_per_partition=_parse_positive_int(opts, "maxrecordsperpartition"),
            group_id_for_commit=opts.get("groupidforcommit") or None,
            group_id_prefix=opts.get("groupidprefix", "lakehouse-kafka-source"),
            end_offsets=end_offsets,
            request_timeout_s=(_parse_positive_int(opts, "fetchoffset.timeoutms") or 30_000) / 1000,
            poll_timeout_s=(_parse_positive_int(opts, "kafkaconsumer.polltimeoutms") or 120_000) / 1000,
            arrow_batch_size=_parse_positive_int(opts, "arrowbatchsize") or 10_000,
            include_headers=_parse_bool(opts, "includeheaders", True),
        )

    @property
    def read_committed(self) -> bool:
        return self.client_settings["isolation.level"].strip().lower() == "read_committed"

    def consumer_config(self, group_id: str | None = None, **settings: Any) -> dict[str, Any]:
        """Client settings for one consumer; without a group id it gets a throwaway one (never committed to)."""
        return {
            **self.client_settings,
            "group.id": group_id or f"{self.group_id_prefix}-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            **settings,
        }

    def subscribes_to(self, topic: str) -> bool:
        if self.topics is not None:
            return topic in self.topics
        return not topic.startswith("__") and re.fullmatch(self.pattern or "", topic) is not None


@dataclass(frozen=True)
class PartitionSnapshot:
    """What the broker holds right now: each subscribed partition's log start and end offsets."""

    lows: Offsets
    ends: Offsets


class OffsetPlanner:
    """Driver-side Kafka clients: which partitions exist, where they start and where they end."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self._metadata_consumer: Consumer | None = None
        self._commit_consumer: Consumer | None = None
        self._known_ends: Offsets = {}
        self._group_offsets: Offsets = {}

    @property
    def _metadata(self) -> Consumer:
        if self._metadata_consumer is None:
            self._metadata_consumer = Consumer(self.options.consumer_config())
        return self._metadata_consumer

    def close(self) -> None:
        for consumer in (self._metadata_consumer, self._commit_consumer):
            if consumer is not None:
                consumer.close()
        self._metadata_consumer = self._commit_consumer = None

    def subscribed_partitions(self) -> list[TopicPartitionKey]:
        try:
            topics = self._metadata.list_topics(timeout=self.options.request_timeout_s).topics
        except KafkaException as exc:
            servers = self.options.client_settings["bootstrap.servers"]
            raise KafkaSourceError(f"cannot list topics at {servers}: {exc}") from None
        return sorted(
            (name, partition)
            for name, meta in topics.items()
            if meta.error is None and self.options.subscribes_to(name)
            for partition in meta.partitions
        )

    def list_offsets(self, partitions: list[TopicPartitionKey], which: int) -> Offsets:
        """ListOffsets (earliest or latest) for many partitions in one request, at the consumer's isolation level."""
        if not partitions:
            return {}
        label = "earliest" if which == EARLIEST else "latest"
        try:
            answers = self._metadata.offsets_for_times(
                [TopicPartition(topic, partition, which) for topic, partition in partitions],
                timeout=self.options.request_timeout_s,
            )
        except KafkaException as exc:
            raise KafkaSourceError(f"listing {label} offsets of {len(partitions)} partition(s) failed: {exc}") from None
        result: Offsets = {}
        for answer in answers:
            if answer.error is not None or answer.offset < 0:
                raise KafkaSourceError(
                    f"listing the {label} offset of {answer.topic}-{answer.partition} failed: "
                    f"{answer.error or answer.offset}"
                )
            result[(answer.topic, answer.partition)] = answer.offset
        return result

    def probe_ends(self, guesses: Offsets, lows: Offsets) -> tuple[Offsets, dict[TopicPartitionKey, str]]:
        """End offsets learned from fetch responses (see the module docstring), and why any are missing.

        ``guesses`` must be lower bounds where possible: the probe reads (and drops) whatever lies between
        a guess and the end, which costs nothing when the guess is exact.
        """
        consumer = Consumer(
            self.options.consumer_config(
                **{"enable.partition.eof": True, "auto.offset.reset": "latest", "fetch.wait.max.ms": 10}
            )
        )
        positions = dict(guesses)
        ends: Offsets = {}
        problems: dict[TopicPartitionKey, str] = {}
        try:
            consumer.assign([TopicPartition(topic, part, offset) for (topic, part), offset in guesses.items()])
            deadline = time.monotonic() + self.options.request_timeout_s
            while len(ends) < len(positions) and time.monotonic() < deadline:
                finished: list[TopicPartitionKey] = []
                for message in consumer.consume(num_messages=10_000, timeout=0.05):
                    error = message.error()
                    key = (message.topic(), message.partition())
                    if error is None or key in ends:
                        continue  # a record below the end: only the watermark of its fetch matters
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends[key] = message.offset()
                        finished.append(key)
                    else:
                        problems[key] = error.str()
                for key in positions.keys() - ends.keys():
                    _, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
                    if high < 0:
                        continue  # no fetch response for this partition yet (this consumer is new)
                    if not self.options.read_committed:
                        ends[key] = high
                        finished.append(key)
                    elif high < positions[key]:
                        # The log is shorter than the guess (recreated or truncated): find its last stable
                        # offset by reading it from its start.
                        positions[key] = lows[key]
                        consumer.seek(TopicPartition(key[0], key[1], lows[key]))
                if finished:
                    consumer.pause([TopicPartition(*key) for key in finished])
        finally:
            consumer.close()
        return ends, problems

    def snapshot(self, start: Offsets) -> PartitionSnapshot:
        """Current partitions with their log start and end offsets, by the ``endOffsets`` strategy."""
        partitions = self.subscribed_partitions()
        if not set(start) <= set(partitions):
            time.sleep(1.0)  # metadata can lag right after topic changes: look twice before calling data lost
            partitions = self.subscribed_partitions()
        lows = self.list_offsets(partitions, EARLIEST)
        strategy = self.options.end_offsets
        listed = self.list_offsets(partitions, LATEST) if strategy in ("listoffsets", "auto") else {}
        if strategy == "listoffsets":
            ends = listed
        else:
            known = {**start, **self._known_ends}
            guesses = {tp: max(lows[tp], listed.get(tp, 0), known.get(tp, 0)) for tp in partitions}
            ends, problems = self.probe_ends(guesses, lows)
            missing = [tp for tp in partitions if tp not in ends]
            if missing:
                detail = ", ".join(f"{_describe(tp)} ({problems.get(tp, 'no answer')})" for tp in missing)
                if strategy == "fetch":
                    raise KafkaSourceError(
                        f"endOffsets=fetch: no end offset within {self.options.request_timeout_s:.0f}s for {detail}"
                    )
                logger.warning("endOffsets=auto: fetch gave no end offset for %s; using ListOffsets", detail)
                for tp in missing:
                    ends[tp] = max(listed[tp], self._known_ends.get(tp, 0))
        self._known_ends = dict(ends)
        return PartitionSnapshot(lows=lows, ends=ends)

    def commit_to_group(self, offsets: Offsets) -> None:
        """Publish progress to ``groupIdForCommit`` (advisory: failures are logged, never raised)."""
        group = self.options.group_id_for_commit
        if group is None or not offsets or offsets == self._group_offsets:
            return
        if self._commit_consumer is None:
            self._commit_consumer = Consumer(self.options.consumer_config(group_id=group))
        try:
            results = self._commit_consumer.commit(
                offsets=[TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            logger.warning("committing offsets to consumer group %s failed: %s", group, exc)
            return
        failed = [f"{tp.topic}-{tp.partition}: {tp.error}" for tp in results or [] if tp.error is not None]
        if failed:
            logger.warning("committing offsets to consumer group %s failed for %s", group, failed)
        else:
            self._group_offsets = dict(offsets)


def _data_loss(message: str, fail: bool) -> None:
    if fail:
        raise KafkaDataLossError(f"{message}. Set failOnDataLoss=false to skip the missing offsets and go on.")
    logger.warning("%s; going on from the earliest available offset (failOnDataLoss=false)", message)


def resolve_offsets(spec: OffsetSpec, snapshot: PartitionSnapshot, option: str) -> Offsets:
    """Turn startingOffsets / endingOffsets into concrete offsets; JSON must name every subscribed partition."""
    if spec == "earliest":
        return dict(snapshot.lows)
    if spec == "latest":
        return dict(snapshot.ends)
    assert isinstance(spec, dict)
    unknown = sorted(set(spec) - set(snapshot.ends))
    if unknown:
        raise KafkaSourceError(
            f"option {option} names partitions that do not exist or are not subscribed: "
            f"{[_describe(tp) for tp in unknown]}"
        )
    missing = sorted(set(snapshot.ends) - set(spec))
    if missing:
        raise KafkaSourceError(
            f"option {option} must give an offset for every subscribed partition (-2 earliest, -1 latest); "
            f"missing: {[_describe(tp) for tp in missing]}"
        )
    return {
        tp: snapshot.lows[tp] if offset == EARLIEST else snapshot.ends[tp] if offset == LATEST else offset
        for tp, offset in spec.items()
    }


def reconcile_start(start: Offsets, snapshot: PartitionSnapshot, fail_on_data_loss: bool) -> Offsets:
    """Where each partition's next batch begins, after checking that the start offsets still exist.

    Partitions new since ``start`` begin at their earliest offset. Lost offsets raise
    KafkaDataLossError, or with failOnDataLoss=false continue from the earliest offset still there.
    """
    begin: Offsets = {}
    for tp, offset in start.items():
        if tp not in snapshot.ends:
            _data_loss(
                f"{_describe(tp)} no longer exists (topic deleted?); the query had read up to offset {offset}",
                fail_on_data_loss,
            )
        elif snapshot.ends[tp] < offset:
            _data_loss(
                f"{_describe(tp)}: the next offset to read is {offset} but the partition now ends at "
                f"{snapshot.ends[tp]} (topic recreated or truncated?)",
                fail_on_data_loss,
            )
            begin[tp] = snapshot.lows[tp]
        elif offset < snapshot.lows[tp]:
            _data_loss(
                f"{_describe(tp)}: offsets {offset}..{snapshot.lows[tp] - 1} were deleted before they were read "
                f"(log now starts at {snapshot.lows[tp]})",
                fail_on_data_loss,
            )
            begin[tp] = snapshot.lows[tp]
        else:
            begin[tp] = offset
    for tp in snapshot.ends.keys() - start.keys():
        begin[tp] = snapshot.lows[tp]
    return begin


def limit_ends(begin: Offsets, ends: Offsets, max_offsets: int) -> Offsets:
    """Cap a batch at ``max_offsets`` offsets in total, shared in proportion to each partition's backlog.

    Integer shares with the remainder going to the largest fractions: the total is exactly
    min(max_offsets, backlog) and no partition gets more than its backlog.
    """
    backlog = {tp: ends[tp] - begin[tp] for tp in ends if ends[tp] > begin[tp]}
    total = sum(backlog.values())
    if total <= max_offsets:
        return dict(ends)
    shares = {tp: max_offsets * size // total for tp, size in backlog.items()}
    by_fraction = sorted(backlog, key=lambda tp: (-(max_offsets * backlog[tp] % total), tp))
    for tp in by_fraction[: max_offsets - sum(shares.values())]:
        shares[tp] += 1
    return {tp: begin[tp] + shares[tp] if tp in backlog else end for tp, end in ends.items()}


class KafkaRange(InputPartition):
    """One Spark task: offsets [start, end) of one Kafka partition."""

    def __init__(self, topic: str, partition: int, start: int, end: int) -> None:
        super().__init__((topic, partition, start, end))
        self.topic = topic
        self.partition = partition
        self.start = start
        self.end = end


def split_ranges(tp: TopicPartitionKey, start: int, end: int, max_records: int | None) -> list[KafkaRange]:
    """[start, end) as one task, or as near-equal tasks of at most ``max_records`` offsets."""
    if end <= start:
        return []
    pieces = 1 if max_records is None else -(-(end - start) // max_records)
    bounds = [start + (end - start) * i // pieces for i in range(pieces + 1)]
    return [KafkaRange(tp[0], tp[1], low, high) for low, high in itertools.pairwise(bounds)]


def plan_ranges(start: Offsets, end: Offsets, planner: OffsetPlanner, options: SourceOptions) -> list[KafkaRange]:
    """Tasks for one micro-batch. Partitions new in ``end``, or reset by data loss, read from their earliest offset."""
    from_earliest = sorted(tp for tp in end if tp not in start or end[tp] < start[tp])
    for tp in from_earliest:
        if tp in start:  # only reached when a batch planned with failOnDataLoss=false is replayed
            _data_loss(f"{_describe(tp)}: offsets went back from {start[tp]} to {end[tp]}", options.fail_on_data_loss)
    earliest = planner.list_offsets(from_earliest, EARLIEST)
    ranges: list[KafkaRange] = []
    for tp in sorted(end):
        ranges += split_ranges(tp, earliest.get(tp, start.get(tp, 0)), end[tp], options.max_records_per_partition)
    return ranges


_MAX_BINARY_BYTES = 2**31 - 1  # int32 offsets of Arrow's binary type


def _binary_array(values: list[bytes | None]) -> pa.Array:
    """Arrow binary column from Kafka keys or payloads: one join and a cumulative sum instead of Arrow's builder.

    pa.array grows its data buffer value by value, which made it the costliest step of a read (about 6x the
    join for 330-byte events). Null values (tombstones) and batches beyond 2 GiB take pa.array's path.
    """
    if None in values:
        return pa.array(values, pa.binary())
    data = b"".join(values)  # type: ignore[arg-type]
    if len(data) > _MAX_BINARY_BYTES:
        return pa.array(values, pa.binary())
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int32, count=len(values)), out=offsets[1:])  # type: ignore[arg-type]
    return pa.Array.from_buffers(pa.binary(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


# librdkafka prefetches up to 100k messages / 64 MiB per partition by default, built for a consumer that
# reads on forever. A task reads a bounded range and then closes its consumer, so everything fetched past
# the range end was fetched, decompressed and parsed for nothing: with 50k-offset ranges that was about a
# third of the reader's CPU and half of the broker's (bench_connectors' data, read in-process). A short
# queue, refilled after a 5 ms pause instead of librdkafka's 1 s, keeps the fetcher ahead of the task
# without overshooting. Any kafka.<setting> the user passes wins.
_RANGE_PREFETCH = {"queued.max.messages.kbytes": 4096, "fetch.queue.backoff.ms": 5}


def range_consumer_settings(options: SourceOptions, task: KafkaRange) -> dict[str, Any]:
    """Consumer settings of one reading task: the range's prefetch bounds under the user's client settings."""
    prefetch = {**_RANGE_PREFETCH, "queued.min.messages": max(1, min(100_000, task.end - task.start))}
    return {
        **{key: value for key, value in prefetch.items() if key not in options.client_settings},
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
    }


def read_range(options: SourceOptions, task: KafkaRange) -> Iterator[pa.RecordBatch]:
    """Read exactly offsets [start, end) of one partition with assign + seek, as Arrow record batches.

    Offsets can be missing (transaction markers, aborted records, compaction), so the last wanted offset
    may never arrive: the read also ends at an end-of-partition event or consumer position >= end.
    """
    consumer = Consumer(options.consumer_config(**range_consumer_settings(options, task)))
    try:
        yield from _read_assigned(consumer, options, task)
    finally:
        consumer.close()


def _read_assigned(consumer: Consumer, options: SourceOptions, task: KafkaRange) -> Iterator[pa.RecordBatch]:
    topic, partition, end = task.topic, task.partition, task.end
    where = f"{topic}-{partition} range [{task.start}, {end})"
    fail = options.fail_on_data_loss
    consumer.assign([TopicPartition(topic, partition, task.start)])
    next_offset = task.start
    eof_below_end: int | None = None
    last_progress = time.monotonic()
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    offsets: list[int] = []
    timestamps: list[int] = []
    timestamp_types: list[int] = []
    headers: list[list[tuple[str, bytes | None]] | None] = []

    with_headers = options.include_headers
    schema = ARROW_SCHEMA if with_headers else ARROW_SCHEMA_WITHOUT_HEADERS
    topic_column = pa.array([topic], pa.string())

    def take_batch() -> pa.RecordBatch:
        count = len(offsets)
        columns = [
            _binary_array(keys),
            _binary_array(values),
            topic_column.take(np.zeros(count, dtype=np.int32)),  # one value repeated, without a builder
            pa.array(np.full(count, partition, dtype=np.int32)),
            pa.array(offsets, pa.int64()),
            pa.array(timestamps, ARROW_SCHEMA.field("timestamp").type),
            pa.array(timestamp_types, pa.int32()),
        ]
        if with_headers:
            columns.append(pa.array(headers, ARROW_SCHEMA.field("headers").type))
        batch = pa.RecordBatch.from_arrays(columns, schema=schema)
        for column in (keys, values, offsets, timestamps, timestamp_types, headers):
            column.clear()
        return batch

    while next_offset < end:
        wanted = max(1, min(options.arrow_batch_size - len(offsets), end - next_offset))
        messages = consumer.consume(num_messages=wanted, timeout=_POLL_SLICE_S)
        # Records first, in bulk (comprehensions, not per-record appends: this loop is the hot path), then
        # the rare events (end of partition, errors). Records of one partition arrive in offset order.
        events = [message for message in messages if message.error() is not None]
        records = [message for message in messages if message.error() is None] if events else messages
        progressed = bool(records)
        if records:
            record_offsets = [record.offset() for record in records]
            if record_offsets[-1] >= end:
                cut = bisect.bisect_left(record_offsets, end)
                records, record_offsets = records[:cut], record_offsets[:cut]
                next_offset = end
            if records:
                stamps = [record.timestamp() for record in records]
                offsets.extend(record_offsets)
                keys.extend([record.key() for record in records])
                values.extend([record.value() for record in records])
                timestamp_types.extend([kind - 1 for kind, _ in stamps])  # librdkafka 0/1/2 -> Kafka's -1/0/1
                timestamps.extend([millis * 1000 for _, millis in stamps])  # ms -> Spark's microseconds
                if with_headers:
                    headers.extend([record.headers() for record in records])
                next_offset = max(next_offset, record_offsets[-1] + 1)
        for event in events:
            error = event.error()
            code = error.code()
            if code == KafkaError._PARTITION_EOF:
                if event.offset() >= end:
                    next_offset, progressed = end, True
                else:
                    eof_below_end = event.offset()
            elif code in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                next_offset, progressed = _skip_lost_offsets(consumer, options, task, next_offset), True
                break
            elif code in _PARTITION_GONE:
                _data_loss(f"{where}: the partition is gone at offset {next_offset} ({error.str()})", fail)
                next_offset, progressed = end, True
                break
            elif code < 0 and not error.fatal():
                # librdkafka's own events (connection lost, broker down ...): it reconnects by itself, and
                # kafkaConsumer.pollTimeoutMs bounds how long the task waits for it.
                logger.warning("%s: %s (retrying)", where, error.str())
            else:
                raise KafkaSourceError(f"reading {where} failed at offset {next_offset}: {error.str()}")
        if not progressed and next_offset < end:
            position = consumer.position([TopicPartition(topic, partition)])[0].offset
            if position > next_offset:  # skipped offsets without records (markers, aborted transactions)
                next_offset, progressed = min(position, end), True
        now = time.monotonic()
        if progressed:
            last_progress = now
        elif now - last_progress > options.poll_timeout_s:
            if eof_below_end is not None:
                _data_loss(f"{where}: the partition ends at {eof_below_end}, before {end}", fail)
                break
            raise KafkaSourceError(
                f"{where}: no progress for {options.poll_timeout_s:.0f}s at offset {next_offset} "
                "(kafkaConsumer.pollTimeoutMs); is the broker reachable?"
            )
        if len(offsets) >= options.arrow_batch_size:
            yield take_batch()
    if offsets:
        yield take_batch()


def _skip_lost_offsets(consumer: Consumer, options: SourceOptions, task: KafkaRange, next_offset: int) -> int:
    """Offset out of range: fail (failOnDataLoss) or re-assign at the log start; returns the new next offset."""
    tp = TopicPartition(task.topic, task.partition)
    low, high = consumer.get_watermark_offsets(tp, timeout=options.request_timeout_s, cached=False)
    where = f"{task.topic}-{task.partition} range [{task.start}, {task.end})"
    fail = options.fail_on_data_loss
    if low <= next_offset:
        _data_loss(f"{where}: offset {next_offset} is beyond the log, which now ends near {high}", fail)
        return task.end
    _data_loss(f"{where}: offsets {next_offset}..{low - 1} were deleted before they were read", fail)
    if low >= task.end:
        return task.end
    consumer.assign([TopicPartition(task.topic, task.partition, low)])
    return low


def _read_task(options: SourceOptions, task: InputPartition) -> Iterator[pa.RecordBatch]:
    if not isinstance(task, KafkaRange):  # Spark plans one empty task when a batch read has no ranges
        return iter(())
    return read_range(options, task)


class KafkaBatchReader(DataSourceReader):
    """``spark.read``: the offset ranges are fixed on the driver when the query is planned."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options

    def partitions(self) -> list[KafkaRange]:
        planner = OffsetPlanner(self.options)
        try:
            snapshot = planner.snapshot(start={})
            first = resolve_offsets(self.options.starting, snapshot, "startingOffsets")
            last = resolve_offsets(self.options.ending, snapshot, "endingOffsets")
        finally:
            planner.close()
        ranges: list[KafkaRange] = []
        for tp in sorted(last):
            begin, until = first[tp], last[tp]
            if until > snapshot.ends[tp]:
                raise KafkaSourceError(
                    f"option endingOffsets: {_describe(tp)} offset {until} is beyond the partition's end "
                    f"{snapshot.ends[tp]}"
                )
            if begin > until:
                raise KafkaSourceError(f"{_describe(tp)}: startingOffsets {begin} is after endingOffsets {until}")
            if begin < snapshot.lows[tp]:
                _data_loss(
                    f"{_describe(tp)}: offsets {begin}..{snapshot.lows[tp] - 1} no longer exist "
                    f"(log starts at {snapshot.lows[tp]})",
                    self.options.fail_on_data_loss,
                )
                begin = snapshot.lows[tp]
            ranges += split_ranges(tp, begin, until, self.options.max_records_per_partition)
        return ranges

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return _read_task(self.options, partition)


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """``spark.readStream``: one instance lives on the driver for the whole query; executors get a fresh copy.

    Driver clients are created lazily, so that the copy pickled for executors holds options only.
    """

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self._planner: OffsetPlanner | None = None
        self._latest: Offsets | None = None
        self._available_now_target: Offsets | None = None
        self._initial: dict | None = None
        # Spark asks for the availableNow target, the initial offsets (twice) and the first batch's end in
        # quick succession when a query starts; one snapshot answers them all (each costs broker round trips).
        self._start_snapshot: PartitionSnapshot | None = None

    @property
    def planner(self) -> OffsetPlanner:
        if self._planner is None:
            self._planner = OffsetPlanner(self.options)
        return self._planner

    def initialOffset(self) -> dict:
        """Where a query without a checkpoint starts: resolved once, so Spark's repeated calls agree."""
        if self._initial is None:
            snapshot = self._start_snapshot or self.planner.snapshot(start={})
            self._initial = offsets_to_json(resolve_offsets(self.options.starting, snapshot, "startingOffsets"))
        return self._initial

    def prepareForTriggerAvailableNow(self) -> None:
        """Fix the end of an availableNow run: data (and partitions) arriving later wait for the next run."""
        self._start_snapshot = self.planner.snapshot(start={})
        self._available_now_target = self._start_snapshot.ends

    def getDefaultReadLimit(self) -> ReadLimit:
        if self.options.max_offsets_per_trigger is None:
            return ReadAllAvailable()
        return ReadMaxRows(self.options.max_offsets_per_trigger)

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        start_offsets = offsets_from_json(start)
        snapshot, self._start_snapshot = self._start_snapshot, None
        if snapshot is None or not set(start_offsets) <= set(snapshot.ends):
            snapshot = self.planner.snapshot(start=start_offsets)  # (partitions gone: it looks twice)
        self._latest = snapshot.ends
        begin = reconcile_start(start_offsets, snapshot, self.options.fail_on_data_loss)
        target = self._available_now_target
        ends: Offsets = {}
        for tp, first in begin.items():
            available = snapshot.ends[tp]
            if target is not None:
                if tp not in target and tp not in start_offsets:
                    continue  # appeared after the availableNow target was fixed
                available = min(available, target.get(tp, first))
            ends[tp] = max(first, available)
        if isinstance(limit, ReadMaxRows):
            ends = limit_ends(begin, ends, limit.max_rows)
        self.planner.commit_to_group(start_offsets)  # the batch ending at start is in the commit log
        return offsets_to_json(ends)

    def reportLatestOffset(self) -> dict | None:
        return None if self._latest is None else offsets_to_json(self._latest)

    def partitions(self, start: dict, end: dict) -> list[KafkaRange]:
        return plan_ranges(offsets_from_json(start), offsets_from_json(end), self.planner, self.options)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return _read_task(self.options, partition)

    def commit(self, end: dict) -> None:
        self.planner.commit_to_group(offsets_from_json(end))

    def stop(self) -> None:
        if self._planner is not None:
            self._planner.close()
            self._planner = None


def _source_schema(options: Mapping[str, str]) -> StructType:
    opts = {str(key).lower(): str(value) for key, value in options.items()}
    return KAFKA_SCHEMA if _parse_bool(opts, "includeheaders", True) else KAFKA_SCHEMA_WITHOUT_HEADERS


def _check_schema(schema: StructType, options: Mapping[str, str]) -> None:
    expected = _source_schema(options)
    if schema != expected:
        raise KafkaSourceError(
            f"{SHORT_NAME} has a fixed schema and cannot take a user-specified one: {expected.simpleString()} "
            "(includeHeaders=false drops headers)"
        )


class KafkaDataSource(DataSource):
    """Spark data source ``lakehouse_kafka``: batch and streaming reads of Kafka topics."""

    @classmethod
    def name(cls) -> str:
        return SHORT_NAME

    def schema(self) -> StructType:
        return _source_schema(self.options)

    def reader(self, schema: StructType) -> KafkaBatchReader:
        _check_schema(schema, self.options)
        return KafkaBatchReader(SourceOptions.parse(self.options, streaming=False))

    def streamReader(self, schema: StructType) -> KafkaStreamReader:
        _check_schema(schema, self.options)
        return KafkaStreamReader(SourceOptions.parse(self.options, streaming=True))

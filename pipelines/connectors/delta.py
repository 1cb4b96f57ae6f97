"""Spark <-> Delta Lake connector (short name ``lakehouse_delta``) on Spark's Python Data Source API.

No Delta jars exist for this Spark build, so tables are read and written through delta-rs (``deltalake``)
and pyarrow. delta-rs panics in forked processes and Spark's executor Python workers are forked, so the
split is strict:

* driver side (Spark's planning and commit Python workers): every delta-rs call - resolving the
  snapshot, checking the protocol, planning files, the one atomic commit per write/micro-batch;
* executors: pyarrow only - read the planned parquet files, or write parquet files and return their
  add-action metadata (path, size, partition values, Delta stats JSON) in the commit message.

Read options: ``versionAsOf``, ``timestampAsOf`` (naive = UTC), ``filter`` (pruning predicate, see
below), ``sparkFilterPushdown`` (false), ``maxBytesPerPartition`` (128 MiB), ``openCostInBytes`` (4 MiB),
``minPartitions`` (planning machine's cores), ``readBatchRows`` (65536), ``storage.<KEY>`` (delta-rs /
object-store options such as ``storage.AWS_ENDPOINT_URL``; executors build a pyarrow filesystem from them).

Pruning: ``.option("filter", "event_date >= '2026-11-01' AND tenant_id IN ('t1','t2')")`` drops files by
partition values (exact) and min/max stats (conservative) and filters rows exactly. Spark's own
``.filter()`` is NOT pushed by default: pyspark 4.3.0 keeps the pushdown-planned read on the relation and
replays it for later queries of the same DataFrame that push nothing (they silently read only the files
an earlier filter kept). ``sparkFilterPushdown=true`` enables pushFilters() for callers that build a
fresh DataFrame per query. Column pruning: pyspark 4.3.0 has no hook for it; every column is read.

Write options: Spark modes ``append`` / ``overwrite``; ``replaceWhere`` (partition predicate, overwrite
mode), ``partitionBy`` ("a,b"; Spark's ``.partitionBy()`` is rejected by Spark for Python sources),
``mergeSchema``, ``overwriteSchema``, ``targetFileSizeBytes`` (128 MiB), ``maxRowsPerFile``,
``compression`` (snappy), ``userMetadata``, ``txnAppId`` + ``txnVersion`` (idempotent batch writes),
``delta.<property>`` (table properties on creation), ``storage.<KEY>``.

Streaming sink: append/complete output modes, exactly-once through Delta transaction identifiers
(app id = Spark's query id read from ``<checkpointLocation>/metadata``, or option ``txnAppId``;
version = batch id), like Spark's own Delta sink.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import pickle
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql.datasource import (
    CaseInsensitiveDict,
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    DataSourceStreamArrowWriter,
    EqualNullSafe,
    EqualTo,
    Filter,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    InputPartition,
    IsNotNull,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Not,
    StringContains,
    StringEndsWith,
    StringStartsWith,
    WriterCommitMessage,
)
from pyspark.sql.types import (
    BooleanType,
    ByteType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructType,
    TimestampNTZType,
    TimestampType,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from pyspark.sql import DataFrame

SHORT_NAME = "lakehouse_delta"
PAUSE_BEFORE_COMMIT_ENV = "LAKEHOUSE_DELTA_PAUSE_BEFORE_COMMIT"
"""Fault-injection hook for crash tests: when set to a file path, commit() writes that file and then
sleeps, so a test can SIGKILL the driver after the data files exist but before the Delta commit."""

MiB = 1024 * 1024
_STORAGE_PREFIX = "storage."
_MAX_STRING_STAT = 32
_MAX_TASK_BUFFER_BYTES = 256 * 1024 * 1024
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# Reader features whose semantics this reader honours; everything else is refused by name.
_SUPPORTED_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "typeWidening"})
# Writer features that impose nothing on an append/overwrite of whole files written by pyarrow.
_SUPPORTED_WRITER_FEATURES = frozenset(
    {
        "appendOnly",
        "invariants",
        "checkConstraints",
        "changeDataFeed",
        "timestampNtz",
        "domainMetadata",
        "v2Checkpoint",
        "vacuumProtocolCheck",
    }
)
_TABLE_PROPERTIES = {
    name.lower(): name
    for name in (
        "delta.appendOnly",
        "delta.checkpointInterval",
        "delta.logRetentionDuration",
        "delta.deletedFileRetentionDuration",
        "delta.enableChangeDataFeed",
        "delta.enableExpiredLogCleanup",
        "delta.dataSkippingNumIndexedCols",
        "delta.dataSkippingStatsColumns",
        "delta.setTransactionRetentionDuration",
        "delta.targetFileSize",
        "delta.checkpoint.writeStatsAsJson",
        "delta.checkpoint.writeStatsAsStruct",
        "delta.randomizeFilePrefixes",
        "delta.isolationLevel",
    )
}

log = logging.getLogger(__name__)


class DeltaConnectorError(ValueError):
    """A lakehouse_delta read or write that cannot be done as asked; the message says which table and why."""


class UnsupportedTableFeatureError(DeltaConnectorError):
    """The table uses a protocol feature this connector cannot honour (reading would return wrong rows)."""


class DeltaSchemaMismatchError(DeltaConnectorError):
    """The DataFrame does not fit the table schema; the message lists every offending column."""


class ReplaceWhereViolationError(DeltaConnectorError):
    """A replaceWhere write produced rows outside its predicate; nothing was committed."""


# --------------------------------------------------------------------------------------------------
# Options and storage
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableLocation:
    """Where a table lives and how to reach it; picklable, shared by planners and executors."""

    uri: str
    storage_options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, path: str, storage_options: Mapping[str, str] | None = None) -> TableLocation:
        return cls(_normalize_uri(path), tuple(sorted((storage_options or {}).items())))

    @property
    def options(self) -> dict[str, str]:
        return dict(self.storage_options)

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri


def _normalize_uri(path: str) -> str:
    """Absolute local paths (planner workers may not share the caller's cwd) or untouched URIs."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    if "://" in path:
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def storage_options_from(options: Mapping[str, str]) -> dict[str, str]:
    """``storage.<KEY>`` options -> delta-rs storage options (keys upper-cased: Spark lower-cases them)."""
    return {
        key[len(_STORAGE_PREFIX) :].upper(): str(value)
        for key, value in options.items()
        if key.lower().startswith(_STORAGE_PREFIX)
    }


def spark_options(storage_options: Mapping[str, str] | None) -> dict[str, str]:
    """Storage options (e.g. ``settings.lake_storage_options()``) as ``.options(**...)`` for this connector."""
    return {f"{_STORAGE_PREFIX}{key}": value for key, value in (storage_options or {}).items()}


def _location(options: Mapping[str, str]) -> TableLocation:
    path = options.get("path")
    if not path:
        raise DeltaConnectorError(f"{SHORT_NAME}: no table path given; use .load(path) / .save(path) / .start(path)")
    return TableLocation.of(str(path), storage_options_from(options))


def _opt_int(options: Mapping[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = options.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise DeltaConnectorError(f"{SHORT_NAME}: option {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise DeltaConnectorError(f"{SHORT_NAME}: option {name}={value} must be >= {minimum}")
    return value


def _opt_bool(options: Mapping[str, str], name: str) -> bool:
    raw = str(options.get(name, "false")).strip().lower()
    if raw not in {"true", "false"}:
        raise DeltaConnectorError(f"{SHORT_NAME}: option {name}={raw!r} must be true or false")
    return raw == "true"


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() == "true"


@lru_cache(maxsize=16)
def arrow_filesystem(location: TableLocation) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the table root inside it (executors: no delta-rs here)."""
    if location.is_local:
        return pafs.LocalFileSystem(), location.uri
    scheme, _, rest = location.uri.partition("://")
    if scheme in {"s3", "s3a"}:
        return _s3_filesystem(location.options), rest
    filesystem, root = pafs.FileSystem.from_uri(location.uri)
    return filesystem, root


def _s3_filesystem(options: Mapping[str, str]) -> pafs.S3FileSystem:
    """Map delta-rs S3 storage options onto pyarrow's S3FileSystem so both see the same store."""

    def pick(*names: str) -> str | None:
        for name in names:
            if options.get(name):
                return options[name]
        return None

    kwargs: dict[str, Any] = {}
    access_key = pick("AWS_ACCESS_KEY_ID", "ACCESS_KEY_ID")
    if access_key:
        kwargs["access_key"] = access_key
        kwargs["secret_key"] = pick("AWS_SECRET_ACCESS_KEY", "SECRET_ACCESS_KEY")
        token = pick("AWS_SESSION_TOKEN", "AWS_TOKEN", "SESSION_TOKEN")
        if token:
            kwargs["session_token"] = token
    region = pick("AWS_REGION", "AWS_DEFAULT_REGION", "REGION")
    if region:
        kwargs["region"] = region
    endpoint = pick("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "ENDPOINT_URL", "ENDPOINT")
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if sep:
            kwargs["endpoint_override"] = host.rstrip("/")
            kwargs["scheme"] = scheme
        else:
            kwargs["endpoint_override"] = endpoint
            kwargs["scheme"] = "http" if _truthy(pick("AWS_ALLOW_HTTP", "ALLOW_HTTP")) else "https"
    if _truthy(pick("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "VIRTUAL_HOSTED_STYLE_REQUEST")):
        kwargs["force_virtual_addressing"] = True
    return pafs.S3FileSystem(**kwargs)


def _delete_files(location: TableLocation, relative_paths: Iterable[str]) -> int:
    """Best-effort removal of data files that never made it into a commit (pyarrow only)."""
    filesystem, root = arrow_filesystem(location)
    deleted = 0
    for rel in relative_paths:
        try:
            filesystem.delete_file(f"{root}/{rel}")
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:  # an orphan left behind is harmless (vacuum removes it); never mask the cause
            log.warning("%s: could not delete uncommitted file %s/%s: %s", SHORT_NAME, root, rel, exc)
    return deleted


# --------------------------------------------------------------------------------------------------
# Snapshot resolution and protocol checks (driver only: delta-rs)
# --------------------------------------------------------------------------------------------------


def _open_table(location: TableLocation, version: int | None = None) -> DeltaTable:
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(location.uri, location.options or None):
        raise DeltaConnectorError(f"{SHORT_NAME}: no Delta table at {location.uri!r}")
    try:
        return DeltaTable(location.uri, version=version, storage_options=location.options or None)
    except Exception as exc:
        where = f" at version {version}" if version is not None else ""
        raise DeltaConnectorError(f"{SHORT_NAME}: cannot load Delta table {location.uri!r}{where}: {exc}") from exc


def _resolve_read_table(location: TableLocation, options: Mapping[str, str]) -> DeltaTable:
    """The snapshot a query reads: versionAsOf, timestampAsOf (naive = UTC) or the latest version."""
    version = _opt_int(options, "versionAsOf", None)
    timestamp = options.get("timestampAsOf")
    if version is not None and timestamp:
        raise DeltaConnectorError(f"{SHORT_NAME}: set only one of versionAsOf and timestampAsOf ({location.uri!r})")
    table = _open_table(location, version)
    if timestamp:
        when = _parse_timestamp(str(timestamp), aware=True)
        try:
            table.load_as_version(when)
        except Exception as exc:
            raise DeltaConnectorError(
                f"{SHORT_NAME}: no version of {location.uri!r} at or before timestampAsOf={timestamp!r}: {exc}"
            ) from exc
    _check_reader_protocol(table, location)
    return table


def _check_reader_protocol(table: DeltaTable, location: TableLocation) -> None:
    protocol = table.protocol()
    configuration = table.metadata().configuration
    problems: list[str] = []
    if protocol.min_reader_version > 3:
        problems.append(f"minReaderVersion {protocol.min_reader_version}")
    unsupported = sorted(set(protocol.reader_features or ()) - _SUPPORTED_READER_FEATURES)
    problems.extend(f"reader feature {feature!r}" for feature in unsupported)
    mapping_mode = configuration.get("delta.columnMapping.mode", "none")
    if mapping_mode != "none" and "reader feature 'columnMapping'" not in problems:
        problems.append(f"columnMapping (mode {mapping_mode!r})")
    if problems:
        raise UnsupportedTableFeatureError(
            f"{SHORT_NAME}: cannot read Delta table {location.uri!r} (version {table.version()}): "
            f"unsupported {', '.join(problems)}; reading it would return wrong rows"
        )


def _check_writer_protocol(table: DeltaTable, location: TableLocation, removes_files: bool) -> None:
    protocol = table.protocol()
    configuration = table.metadata().configuration
    problems: list[str] = []
    if protocol.min_writer_version > 7:
        problems.append(f"minWriterVersion {protocol.min_writer_version}")
    if protocol.min_writer_version >= 7:
        problems.extend(
            f"writer feature {f!r}" for f in sorted(set(protocol.writer_features or ()) - _SUPPORTED_WRITER_FEATURES)
        )
    elif protocol.min_writer_version >= 4:
        # Legacy protocol versions imply features we cannot enforce (generated columns, CDF, mapping...).
        if configuration.get("delta.columnMapping.mode", "none") != "none":
            problems.append("columnMapping")
        if protocol.min_writer_version >= 6:
            problems.append("identityColumns (writer version 6)")
    constraints = sorted(key for key in configuration if key.startswith("delta.constraints."))
    if constraints:
        problems.append(f"CHECK constraints {constraints}")
    problems.extend(_enforced_column_metadata(_table_arrow_schema(table)))
    if problems:
        raise UnsupportedTableFeatureError(
            f"{SHORT_NAME}: cannot write Delta table {location.uri!r}: unsupported {', '.join(problems)}"
        )
    if removes_files and _truthy(configuration.get("delta.appendOnly")):
        raise DeltaConnectorError(
            f"{SHORT_NAME}: Delta table {location.uri!r} is append-only (delta.appendOnly=true): "
            "overwrite and replaceWhere are not allowed"
        )


def _enforced_column_metadata(schema: pa.Schema) -> list[str]:
    """Column rules (invariants, generated / identity columns) the pyarrow writers cannot enforce."""
    problems = []
    for arrow_field in schema:
        for key in arrow_field.metadata or {}:
            name = key.decode() if isinstance(key, bytes) else str(key)
            if name.startswith(("delta.invariants", "delta.generationExpression", "delta.identity")):
                problems.append(f"column {arrow_field.name!r} with {name}")
    return problems


def _table_arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def spark_schema_from_arrow(schema: pa.Schema) -> StructType:
    """Delta's arrow schema -> Spark schema (tz-aware timestamps -> TIMESTAMP, naive -> TIMESTAMP_NTZ)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema, prefer_timestamp_ntz=True)


def _output_arrow_schema(schema: StructType) -> pa.Schema:
    """The exact arrow schema Spark validates reader batches against."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


# --------------------------------------------------------------------------------------------------
# Values: parsing literals and (de)serializing partition values
# --------------------------------------------------------------------------------------------------


def _parse_timestamp(text: str, aware: bool) -> dt.datetime:
    raw = text.strip().replace(" UTC", "+00:00")
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise DeltaConnectorError(f"{SHORT_NAME}: {text!r} is not a timestamp (expected ISO-8601)") from None
    if aware:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _serialize_partition_value(value: Any) -> str | None:
    """Delta's string form of a partition value (TIMESTAMP as ISO-8601 UTC, TIMESTAMP_NTZ without zone)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:  # ISO-8601 in UTC: the protocol's unambiguous form
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        raise DeltaConnectorError(f"{SHORT_NAME}: binary partition values are not supported")
    return str(value)


_HIVE_ESCAPE = set("\"#%'*/:=?\\{[]^<>| ") | {chr(c) for c in range(32)} | {chr(127)}


def _escape_path_segment(value: str) -> str:
    return "".join(f"%{ord(ch):02X}" if ch in _HIVE_ESCAPE else ch for ch in value)


def _partition_dir(columns: Sequence[str], serialized: Mapping[str, str | None]) -> str:
    parts = []
    for column in columns:
        value = serialized[column]
        parts.append(f"{_escape_path_segment(column)}={_HIVE_NULL if value is None else _escape_path_segment(value)}")
    return "/".join(parts)


def _coerce_literal(value: Any, data_type: DataType, column: str) -> Any:
    """A replaceWhere literal as a Python value of the column's type (the way Spark would cast it)."""
    if value is None:
        return None
    try:
        if isinstance(data_type, StringType):
            if isinstance(value, str):
                return value
        elif isinstance(data_type, ByteType | ShortType | IntegerType | LongType):
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
                return int(value)
        elif isinstance(data_type, DateType):
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
            if isinstance(value, str):
                return dt.date.fromisoformat(value.strip())
        elif isinstance(data_type, TimestampType | TimestampNTZType):
            aware = isinstance(data_type, TimestampType)
            if isinstance(value, dt.datetime):
                return _parse_timestamp(value.isoformat(), aware)
            if isinstance(value, dt.date | str):
                return _parse_timestamp(str(value), aware)
        elif isinstance(data_type, BooleanType):
            if isinstance(value, bool):
                return value
        elif isinstance(data_type, DecimalType):
            if isinstance(value, int | Decimal | str) and not isinstance(value, bool):
                return Decimal(str(value))
    except (ValueError, ArithmeticError):
        pass
    raise DeltaConnectorError(
        f"{SHORT_NAME}: literal {value!r} does not fit column {column!r} of type {data_type.simpleString()}"
    )


# --------------------------------------------------------------------------------------------------
# Filter evaluation: exact on partition constants, conservative on min/max statistics
# --------------------------------------------------------------------------------------------------


class _CannotEvaluate(Exception):
    """The filter cannot be decided from what is known: keep the file, let Spark decide per row."""


_EXACT_PARTITION_TYPES: dict[type[DataType], tuple[type, ...]] = {
    StringType: (str,),
    ByteType: (int,),
    ShortType: (int,),
    IntegerType: (int,),
    LongType: (int,),
    DateType: (dt.date,),
    BooleanType: (bool,),
    DecimalType: (Decimal,),
    TimestampType: (dt.datetime,),
    TimestampNTZType: (dt.datetime,),
}


def _literal_fits(value: Any, data_type: DataType) -> bool:
    """True when comparing ``value`` with a column of ``data_type`` in Python matches Spark's semantics."""
    if value is None:
        return True
    allowed = _EXACT_PARTITION_TYPES.get(type(data_type))
    if allowed is None or not isinstance(value, allowed):
        return False
    if isinstance(value, bool) != isinstance(data_type, BooleanType):
        return False
    if isinstance(data_type, DateType):
        return not isinstance(value, dt.datetime)
    if isinstance(data_type, TimestampType):
        return value.tzinfo is not None
    if isinstance(data_type, TimestampNTZType):
        return value.tzinfo is None
    return True


def _filter_columns(f: Filter) -> list[tuple[str, ...]]:
    if isinstance(f, Not):
        return _filter_columns(f.child)
    return [f.attribute]  # type: ignore[attr-defined]


def _filter_values(f: Filter) -> list[Any]:
    if isinstance(f, Not):
        return _filter_values(f.child)
    if isinstance(f, IsNull | IsNotNull):
        return []
    if isinstance(f, In):
        return list(f.value)
    return [f.value]  # type: ignore[attr-defined]


def _compare(op: type[Filter], left: Any, right: Any) -> bool:
    try:
        if op is EqualTo:
            return bool(left == right)
        if op is GreaterThan:
            return bool(left > right)
        if op is GreaterThanOrEqual:
            return bool(left >= right)
        if op is LessThan:
            return bool(left < right)
        if op is LessThanOrEqual:
            return bool(left <= right)
    except TypeError:
        raise _CannotEvaluate from None
    raise _CannotEvaluate


def _evaluate(f: Filter, row: Mapping[str, Any]) -> bool | None:
    """SQL three-valued evaluation of a pushed filter on constant column values (None = SQL NULL)."""
    if isinstance(f, Not):
        inner = _evaluate(f.child, row)
        return None if inner is None else not inner
    name = f.attribute  # type: ignore[attr-defined]
    if len(name) != 1 or name[0] not in row:
        raise _CannotEvaluate
    value = row[name[0]]
    if isinstance(f, IsNull):
        return value is None
    if isinstance(f, IsNotNull):
        return value is not None
    if isinstance(f, EqualNullSafe):
        if value is None or f.value is None:
            return value is None and f.value is None
        return _compare(EqualTo, value, f.value)
    if isinstance(f, In):
        if value is None:
            return None
        candidates = [v for v in f.value if v is not None]
        if any(_compare(EqualTo, value, v) for v in candidates):
            return True
        return None if len(candidates) < len(f.value) else False
    if value is None or f.value is None:  # type: ignore[attr-defined]
        return None
    if isinstance(f, StringStartsWith | StringEndsWith | StringContains):
        if not isinstance(value, str):
            raise _CannotEvaluate
        if isinstance(f, StringStartsWith):
            return value.startswith(f.value)
        if isinstance(f, StringEndsWith):
            return value.endswith(f.value)
        return f.value in value
    return _compare(type(f), value, f.value)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _ColumnStats:
    """What the add action's stats say about one column of one file (None = unknown)."""

    min: Any
    max: Any
    null_count: int | None
    num_records: int | None


def _stats_allow_skip_type(data_type: DataType) -> bool:
    # Floats: NaN sorts above everything in Spark but is missing from min/max. Wide decimals: delta-rs
    # writes decimal stats as JSON doubles, which can round past the true bound.
    if isinstance(data_type, DecimalType):
        return data_type.precision <= 15
    return isinstance(data_type, ByteType | ShortType | IntegerType | LongType | DateType | StringType) or isinstance(
        data_type, TimestampType | TimestampNTZType
    )


def _may_match(f: Filter, stats: _ColumnStats, data_type: DataType) -> bool:
    """False only when the statistics prove no row of the file satisfies ``f``."""
    all_null = stats.null_count is not None and stats.num_records is not None and stats.null_count >= stats.num_records
    if isinstance(f, IsNull) or (isinstance(f, EqualNullSafe) and f.value is None):
        return stats.null_count is None or stats.null_count > 0
    if isinstance(f, IsNotNull):
        return not all_null
    if isinstance(f, Not):
        return True
    if all_null:
        return False  # every comparison with NULL is NULL -> no row passes
    if not _stats_allow_skip_type(data_type):
        return True
    low, high = stats.min, stats.max
    if isinstance(data_type, TimestampType | TimestampNTZType) and high is not None:
        high = high + dt.timedelta(milliseconds=1)  # Delta stores timestamp stats truncated to milliseconds
    values = _filter_values(f)
    if any(not _literal_fits(v, data_type) for v in values if v is not None):
        return True
    try:
        if isinstance(f, EqualTo | EqualNullSafe):
            return not ((high is not None and f.value > high) or (low is not None and f.value < low))
        if isinstance(f, GreaterThan):
            return high is None or high > f.value
        if isinstance(f, GreaterThanOrEqual):
            return high is None or high >= f.value
        if isinstance(f, LessThan):
            return low is None or low < f.value
        if isinstance(f, LessThanOrEqual):
            return low is None or low <= f.value
        if isinstance(f, In):
            inside = [
                v
                for v in f.value
                if v is not None and not ((high is not None and v > high) or (low is not None and v < low))
            ]
            return bool(inside)
        if isinstance(f, StringStartsWith) and isinstance(data_type, StringType):
            prefix = f.value
            if high is not None and high < prefix and not high.startswith(prefix):
                return False
            return not (low is not None and low > prefix and not low.startswith(prefix))
    except TypeError:
        return True
    return True


def _pushable_filter(f: Filter, fields: Mapping[str, DataType], partition_columns: set[str]) -> bool:
    """A filter on partition columns whose literals fit their types: pruning decides it exactly per file."""
    columns = _filter_columns(f)
    if not all(len(c) == 1 and c[0] in partition_columns for c in columns):
        return False
    if isinstance(f, StringContains | StringEndsWith | StringStartsWith) and not isinstance(
        fields[columns[0][0]], StringType
    ):
        return False
    return all(_literal_fits(v, fields[columns[0][0]]) for v in _filter_values(f))


# ---- SQL-like predicates: replaceWhere (writes) and the filter option (reads) ------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>[+-]?\d+(?:\.\d+)?)|(?P<op><=|>=|<>|!=|==|=|<|>)"
    r"|(?P<punct>[(),])|(?P<quoted>`[^`]+`)|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)
_OPS: dict[str, type[Filter]] = {
    "=": EqualTo,
    "==": EqualTo,
    "<": LessThan,
    "<=": LessThanOrEqual,
    ">": GreaterThan,
    ">=": GreaterThanOrEqual,
}


@dataclass(frozen=True)
class Predicate:
    """An AND of simple conditions, as the pushed-filter objects Spark itself uses."""

    text: str
    conditions: tuple[Filter, ...]

    def matches(self, values: Mapping[str, Any]) -> bool:
        """True only when every condition is TRUE (not NULL) for these constant column values."""
        return all(_evaluate(f, values) is True for f in self.conditions)


def parse_predicate(
    text: str, schema: pa.Schema, columns: Sequence[str], option: str, location: TableLocation, why: str
) -> Predicate:
    """Parse ``a >= 'x' AND b IN ('p','q') AND c IS NOT NULL AND d BETWEEN 1 AND 2`` over ``columns``.

    Literals are cast to the column types the way Spark would; anything else (OR, functions, other
    columns) is refused with the reason ``why``, never approximated.
    """
    spark_fields = {f.name.lower(): f for f in spark_schema_from_arrow(schema).fields}
    partition_by = list(columns)
    partition_lower = {c.lower(): c for c in columns}
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise DeltaConnectorError(f"{SHORT_NAME}: cannot parse {option} {text!r} near {text[position:]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()

    def error(reason: str) -> DeltaConnectorError:
        return DeltaConnectorError(f"{SHORT_NAME}: {option} {text!r} on {location.uri!r}: {reason}")

    index = 0

    def peek(offset: int = 0) -> tuple[str, str] | None:
        return tokens[index + offset] if index + offset < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal index
        if index >= len(tokens):
            raise error("unexpected end")
        index += 1
        return tokens[index - 1]

    def keyword(word: str) -> bool:
        token = peek()
        if token and token[0] == "word" and token[1].upper() == word:
            take()
            return True
        return False

    def literal(column: str) -> Any:
        kind, value = take()
        if kind == "string":
            raw: Any = value[1:-1].replace("''", "'")
        elif kind == "number":
            raw = Decimal(value) if "." in value else int(value)
        elif kind == "word" and value.upper() in {"TRUE", "FALSE"}:
            raw = value.upper() == "TRUE"
        elif kind == "word" and value.upper() == "NULL":
            raise error("compare with NULL using IS NULL / IS NOT NULL")
        elif kind == "word" and value.upper() in {"DATE", "TIMESTAMP"}:
            kind, value = take()
            if kind != "string":
                raise error(f"expected a quoted literal after {value}")
            raw = value[1:-1]
        else:
            raise error(f"expected a literal, got {value!r}")
        return _coerce_literal(raw, spark_fields[column.lower()].dataType, column)

    def column_name() -> str:
        kind, value = take()
        if kind not in {"word", "quoted"}:
            raise error(f"expected a column name, got {value!r}")
        name = value.strip("`")
        if name.lower() not in partition_lower:
            raise error(f"column {name!r} {why} {partition_by}")
        return partition_lower[name.lower()]

    conditions: list[Filter] = []

    def condition() -> None:
        if peek() == ("punct", "("):
            take()
            conjunction()
            if take() != ("punct", ")"):
                raise error("missing ')'")
            return
        name = column_name()
        attribute = (name,)
        if keyword("IS"):
            negated = keyword("NOT")
            if not keyword("NULL"):
                raise error("expected NULL after IS")
            conditions.append(IsNotNull(attribute) if negated else IsNull(attribute))
            return
        negated = keyword("NOT")
        if keyword("IN"):
            if take() != ("punct", "("):
                raise error("expected '(' after IN")
            values = [literal(name)]
            while peek() == ("punct", ","):
                take()
                values.append(literal(name))
            if take() != ("punct", ")"):
                raise error("missing ')' after IN list")
            condition_filter: Filter = In(attribute, tuple(values))
            conditions.append(Not(condition_filter) if negated else condition_filter)
            return
        if keyword("BETWEEN"):
            low = literal(name)
            if not keyword("AND"):
                raise error("expected AND in BETWEEN")
            high = literal(name)
            if negated:
                raise error("NOT BETWEEN is not supported; use < and > with OR-free conditions")
            conditions.extend([GreaterThanOrEqual(attribute, low), LessThanOrEqual(attribute, high)])
            return
        if negated:
            raise error("NOT is only supported as NOT IN")
        kind, op = take()
        if kind != "op":
            raise error(f"expected a comparison after {name!r}, got {op!r}")
        value = literal(name)
        conditions.append(Not(EqualTo(attribute, value)) if op in {"<>", "!="} else _OPS[op](attribute, value))

    def conjunction() -> None:
        condition()
        while keyword("AND"):
            condition()
        token = peek()
        if token and token[0] == "word" and token[1].upper() == "OR":
            raise error("OR is not supported, only AND of conditions")

    conjunction()
    if index != len(tokens):
        raise error(f"unexpected {tokens[index][1]!r}")
    return Predicate(text, tuple(conditions))


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFile:
    """One data file of the pinned snapshot: path relative to the table root (decoded), typed partitions."""

    path: str
    size: int
    partition_values: tuple[tuple[str, Any], ...]


class DeltaScanPartition(InputPartition):
    """The files one Spark task reads (bin-packed by size)."""

    def __init__(self, files: list[PlannedFile]) -> None:
        self.files = files


def _pack_files(
    files: list[PlannedFile], max_bytes: int, open_cost: int, min_partitions: int
) -> list[list[PlannedFile]]:
    """Spark's file packing: biggest first, next-fit bins of ~min(max_bytes, total/min_partitions)."""
    if not files:
        return []
    total = sum(f.size + open_cost for f in files)
    target = min(max_bytes, max(16 * MiB, total // max(min_partitions, 1)))
    bins: list[list[PlannedFile]] = []
    current: list[PlannedFile] = []
    current_size = 0
    for planned in sorted(files, key=lambda f: (-f.size, f.path)):
        cost = planned.size + open_cost
        if current and current_size + cost > target:
            bins.append(current)
            current, current_size = [], 0
        current.append(planned)
        current_size += cost
    if current:
        bins.append(current)
    return bins


@dataclass
class _ScanPlan:
    files: list[PlannedFile]
    total_files: int


def _plan_files(
    table: DeltaTable,
    schema_fields: Mapping[str, DataType],
    partition_columns: Sequence[str],
    filters: Sequence[Filter],
    exact_filters: Sequence[Filter],
) -> _ScanPlan:
    """Prune the snapshot's add actions with partition values (exact) and min/max stats (conservative)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    names = set(actions.column_names)
    count = actions.num_rows
    paths = actions.column("path").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    missing = [c for c in partition_columns if f"partition.{c}" not in names]
    if missing and count:
        raise DeltaConnectorError(f"{SHORT_NAME}: delta-rs returned no partition values for {missing}")
    partition_values = {column: actions.column(f"partition.{column}").to_pylist() for column in partition_columns}
    num_records = actions.column("num_records").to_pylist() if "num_records" in names else [None] * count

    stat_filters: list[tuple[Filter, str, DataType]] = []
    dotted_top_level = any("." in name for name in schema_fields)
    for f in filters:
        if any(f is e for e in exact_filters):
            continue
        (column,) = _filter_columns(f)[:1]
        if column[0] in partition_columns or dotted_top_level or any("." in part for part in column):
            continue
        data_type = _nested_type(schema_fields, column)
        if data_type is not None:
            stat_filters.append((f, ".".join(column), data_type))
    stat_columns: dict[str, list[Any]] = {}
    for _, key, _ in stat_filters:
        for prefix in ("min", "max", "null_count"):
            name = f"{prefix}.{key}"
            if name not in stat_columns:
                stat_columns[name] = actions.column(name).to_pylist() if name in names else [None] * count

    kept: list[PlannedFile] = []
    for i in range(count):
        row = {column: values[i] for column, values in partition_values.items()}
        if not _keep_by_partition(exact_filters, row):
            continue
        if not all(
            _may_match(
                f,
                _ColumnStats(
                    stat_columns[f"min.{key}"][i],
                    stat_columns[f"max.{key}"][i],
                    stat_columns[f"null_count.{key}"][i],
                    num_records[i],
                ),
                data_type,
            )
            for f, key, data_type in stat_filters
        ):
            continue
        kept.append(PlannedFile(_decode_path(paths[i]), int(sizes[i]), tuple(row.items())))
    return _ScanPlan(kept, count)


def _keep_by_partition(exact_filters: Sequence[Filter], row: Mapping[str, Any]) -> bool:
    for f in exact_filters:
        try:
            if _evaluate(f, row) is not True:
                return False
        except _CannotEvaluate:  # Spark will not re-check this filter: refusing is the only safe answer
            raise DeltaConnectorError(f"{SHORT_NAME}: cannot evaluate pushed filter {f!r} on {dict(row)}") from None
    return True


def _nested_type(fields: Mapping[str, DataType], column: tuple[str, ...]) -> DataType | None:
    data_type: DataType | None = fields.get(column[0])
    for part in column[1:]:
        if not isinstance(data_type, StructType):
            return None
        data_type = next((f.dataType for f in data_type.fields if f.name == part), None)
    return data_type


def _decode_path(path: str) -> str:
    from urllib.parse import unquote

    return unquote(path)


class DeltaReader(DataSourceReader):
    """Plans one consistent snapshot (driver) and reads its parquet files with pyarrow (executors).

    Pruning comes from option ``filter`` (an AND predicate): partition conditions drop files exactly,
    data-column conditions skip files by min/max stats and then filter rows here, so the option has exact
    SQL semantics. It is part of the relation, so every query on the DataFrame prunes the same way.
    """

    def __init__(
        self,
        location: TableLocation,
        schema: StructType,
        options: Mapping[str, str],
        pinned: tuple[int, list[str]],
        row_filter: Predicate | None,
    ) -> None:
        self.location = location
        self.schema = schema
        self.version, self.partition_columns = pinned
        self.max_bytes = _opt_int(options, "maxBytesPerPartition", 128 * MiB, minimum=1) or 128 * MiB
        self.open_cost = _opt_int(options, "openCostInBytes", 4 * MiB) or 0
        self.min_partitions = _opt_int(options, "minPartitions", os.cpu_count() or 1, minimum=1) or 1
        self.batch_rows = _opt_int(options, "readBatchRows", 65536, minimum=1) or 65536
        self.row_filter = row_filter
        self.filters: list[Filter] = list(row_filter.conditions) if row_filter else []
        self.exact_filters: list[Filter] = [
            f for f in self.filters if _filter_columns(f)[0][0] in set(self.partition_columns)
        ]
        self.row_conditions = [f for f in self.filters if not any(f is e for e in self.exact_filters)]
        missing = {_filter_columns(f)[0][0] for f in self.row_conditions} - set(schema.names)
        if missing:
            raise DeltaConnectorError(
                f"{SHORT_NAME}: filter columns {sorted(missing)} are not in the read schema ({location.uri!r})"
            )

    def partitions(self) -> list[InputPartition]:
        table = _open_table(self.location, self.version)
        fields = {f.name: f.dataType for f in spark_schema_from_arrow(_table_arrow_schema(table)).fields}
        plan = _plan_files(table, fields, self.partition_columns, self.filters, self.exact_filters)
        log.info(
            "%s: %s v%s: reading %d of %d files",
            SHORT_NAME,
            self.location.uri,
            self.version,
            len(plan.files),
            plan.total_files,
        )
        bins = _pack_files(plan.files, self.max_bytes, self.open_cost, self.min_partitions)
        return [DeltaScanPartition(files) for files in bins]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Executor side: pyarrow only."""
        if not isinstance(partition, DeltaScanPartition):
            return  # Spark's placeholder partition for an empty plan
        filesystem, root = arrow_filesystem(self.location)
        target = _output_arrow_schema(self.schema)
        for planned in partition.files:
            for batch in _read_file(filesystem, f"{root}/{planned.path}", planned, target, self.batch_rows):
                if self.row_conditions:
                    batch = batch.filter(_row_mask(batch, self.row_conditions))
                if batch.num_rows:
                    yield batch


class DeltaPushdownReader(DeltaReader):
    """Opt-in (option ``sparkFilterPushdown=true``): also prune with the filters Spark pushes.

    Unsafe on pyspark 4.3.0 when one DataFrame serves several queries (reused DataFrames, temp views,
    self-joins): Spark keeps the pushdown-planned read on the relation and replays it for later scans
    that push nothing, which then read only the files the earlier filters kept. Use it only with a
    fresh ``spark.read...load()`` per query.
    """

    def pushFilters(self, filters: list[Filter]) -> Iterable[Filter]:
        """Keep every filter for pruning; hand back all but the partition filters pruning decides exactly."""
        fields = {f.name: f.dataType for f in self.schema.fields}
        partition_columns = set(self.partition_columns)
        for f in filters:
            self.filters.append(f)
            if _pushable_filter(f, fields, partition_columns):
                self.exact_filters.append(f)
            else:
                yield f


def _row_mask(batch: pa.RecordBatch, conditions: Sequence[Filter]) -> pa.Array:
    """SQL WHERE semantics in arrow (NULL -> row dropped) for the filter option's data-column conditions."""
    mask: pa.Array | None = None
    for condition in conditions:
        negated = isinstance(condition, Not)
        inner = condition.child if isinstance(condition, Not) else condition
        column = batch.column(inner.attribute[0])  # type: ignore[attr-defined]
        if isinstance(inner, IsNull):
            part = pc.is_null(column)
        elif isinstance(inner, IsNotNull):
            part = pc.is_valid(column)
        elif isinstance(inner, In):
            values = [v for v in inner.value if v is not None]
            part = pc.is_in(column, value_set=pa.array(values, column.type))
            if negated:  # x NOT IN (...) is NULL for NULL x, and for every x when the list holds NULL
                keep = pc.invert(part)
                part = pc.and_kleene(pc.is_valid(column), keep)
                if len(values) < len(inner.value):
                    part = pa.array([False] * len(column))
                negated = False
        else:
            compare = {
                EqualTo: pc.equal,
                GreaterThan: pc.greater,
                GreaterThanOrEqual: pc.greater_equal,
                LessThan: pc.less,
                LessThanOrEqual: pc.less_equal,
            }[type(inner)]
            part = compare(column, pa.scalar(inner.value, column.type))  # type: ignore[attr-defined]
        if negated:
            part = pc.invert(part)
        mask = part if mask is None else pc.and_kleene(mask, part)
    assert mask is not None
    return mask


def _read_file(
    filesystem: pafs.FileSystem, path: str, planned: PlannedFile, target: pa.Schema, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    partitions = dict(planned.partition_values)
    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle, pre_buffer=True, coerce_int96_timestamp_unit="us")
        available = set(parquet.schema_arrow.names)
        wanted = [f.name for f in target if f.name not in partitions and f.name in available]
        if not wanted and parquet.metadata.num_rows:
            # Only partition or missing columns asked for: the row count is all we need from the file.
            yield from _constant_batches(parquet.metadata.num_rows, target, partitions, batch_rows)
            return
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted, use_threads=True):
            yield _conform_batch(batch, target, partitions, path)


def _constant_batches(
    rows: int, target: pa.Schema, partitions: Mapping[str, Any], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    for start in range(0, rows, batch_rows):
        n = min(batch_rows, rows - start)
        arrays = [
            pa.repeat(pa.scalar(partitions[f.name], f.type), n) if f.name in partitions else pa.nulls(n, f.type)
            for f in target
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=target)


def _conform_batch(
    batch: pa.RecordBatch, target: pa.Schema, partitions: Mapping[str, Any], path: str
) -> pa.RecordBatch:
    """Cast one file batch to the snapshot's schema: partition constants, nulls for columns added later."""
    n = batch.num_rows
    arrays = []
    for target_field in target:
        name = target_field.name
        if name in partitions:
            arrays.append(pa.repeat(pa.scalar(partitions[name], target_field.type), n))
            continue
        index = batch.schema.get_field_index(name)
        if index < 0:
            arrays.append(pa.nulls(n, target_field.type))
            continue
        column = batch.column(index)
        if column.type != target_field.type:
            # Other writers may store nanosecond timestamps; Spark holds microseconds, so truncate them.
            lossy_ok = pa.types.is_timestamp(column.type) and pa.types.is_timestamp(target_field.type)
            try:
                column = pc.cast(column, target_field.type, safe=not lossy_ok)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DeltaConnectorError(
                    f"{SHORT_NAME}: column {name!r} of {path} has type {column.type}, "
                    f"cannot read it as {target_field.type}: {exc}"
                ) from exc
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=target)


def planned_files(df: DataFrame) -> list[str]:
    """Files the ``lakehouse_delta`` scans in ``df``'s physical plan will read (relative paths).

    Diagnostics and tests: proves partition pruning and data skipping really drop files. It reads Spark's
    executed plan (BatchScanExec -> PythonInputPartition), so it plans the query but runs no job.
    """
    found: list[str] = []

    def visit(node: Any) -> None:
        name = node.getClass().getSimpleName()
        if name == "AdaptiveSparkPlanExec":
            visit(node.executedPlan())
            return
        if name.endswith("QueryStageExec"):
            visit(node.plan())
            return
        if name == "BatchScanExec":
            partitions = node.inputPartitions()
            for i in range(partitions.size()):
                payload = partitions.apply(i)
                if payload.getClass().getSimpleName() == "PythonInputPartition":
                    value = pickle.loads(bytes(payload.pickedPartition()))
                    if isinstance(value, DeltaScanPartition):
                        found.extend(f.path for f in value.files)
        children = node.children()
        for i in range(children.size()):
            visit(children.apply(i))

    visit(df._jdf.queryExecution().executedPlan())
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# Writing: plan (driver), files + stats (executors), commit (driver)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenFile:
    """A parquet file an executor wrote; becomes one Delta add action at commit."""

    path: str
    size: int
    partition_values: dict[str, str | None]
    typed_partition_values: dict[str, Any]
    num_records: int
    stats: str
    modification_time: int


class DeltaCommitMessage(WriterCommitMessage):
    """What one write task produced (picklable)."""

    def __init__(self, files: list[WrittenFile]) -> None:
        self.files = files


@dataclass
class WritePlan:
    """Everything executors and the commit need, decided once on the driver (picklable)."""

    location: TableLocation
    mode: str  # "append" | "overwrite"
    table_schema: pa.Schema  # the table schema after this write (creation / mergeSchema / overwriteSchema)
    partition_by: list[str]
    input_columns: list[tuple[str, str]]  # (input column, table column)
    file_schema: pa.Schema  # data (non-partition) columns in the files
    partition_fields: list[pa.Field]
    new_columns: list[pa.Field] = field(default_factory=list)
    replace_where: Predicate | None = None
    overwrite_schema: bool = False
    configuration: dict[str, str] = field(default_factory=dict)
    target_file_bytes: int = 128 * MiB
    max_rows_per_file: int | None = None
    row_group_bytes: int = 64 * MiB
    compression: str = "snappy"
    stats_columns: frozenset[tuple[str, ...]] | None = None  # None: all leaves
    txn: tuple[str, int] | None = None
    user_metadata: str | None = None


def _spark_type_name(data_type: DataType) -> str:
    return data_type.simpleString()


_INTEGRAL_ORDER = (ByteType, ShortType, IntegerType, LongType)


def _can_write(source: DataType, target: DataType) -> bool:
    """Types a DataFrame column may have for a table column: same type or a lossless widening."""
    if source.simpleString() == target.simpleString():
        return True
    integral = [isinstance(source, t) for t in _INTEGRAL_ORDER], [isinstance(target, t) for t in _INTEGRAL_ORDER]
    if any(integral[0]) and any(integral[1]):
        return integral[0].index(True) <= integral[1].index(True)
    if isinstance(source, FloatType) and isinstance(target, DoubleType):
        return True
    if isinstance(source, DecimalType) and isinstance(target, DecimalType):
        return source.scale == target.scale and source.precision <= target.precision
    return False


def _nullable_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """Delta tables created from a DataFrame have nullable columns (as with Spark's Delta writer)."""

    def loosen(data_type: pa.DataType) -> pa.DataType:
        if pa.types.is_struct(data_type):
            return pa.struct([pa.field(f.name, loosen(f.type), True) for f in data_type])
        if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
            return pa.list_(pa.field("element", loosen(data_type.value_type), True))
        if pa.types.is_map(data_type):
            return pa.map_(
                pa.field("key", loosen(data_type.key_type), False), pa.field("value", loosen(data_type.item_type), True)
            )
        return data_type

    return pa.schema([pa.field(f.name, loosen(f.type), True) for f in schema])


def _canonical_delta_arrow(schema: pa.Schema) -> pa.Schema:
    """Round-trip through delta-rs so files carry exactly the types the table schema maps to."""
    from deltalake import Schema

    try:
        return pa.schema(Schema.from_arrow(schema).to_arrow())
    except Exception as exc:
        raise DeltaConnectorError(f"{SHORT_NAME}: schema cannot be stored in Delta: {exc}") from exc


def _parse_columns(raw: str | None) -> list[str]:
    return [c.strip().strip("`") for c in (raw or "").split(",") if c.strip()]


def _table_properties(options: Mapping[str, str]) -> dict[str, str]:
    properties: dict[str, str] = {}
    for key, value in options.items():
        lowered = key.lower()
        if not lowered.startswith("delta."):
            continue
        if lowered not in _TABLE_PROPERTIES:
            raise DeltaConnectorError(
                f"{SHORT_NAME}: unknown or unsupported table property {key!r}; "
                f"supported: {sorted(_TABLE_PROPERTIES.values())}"
            )
        properties[_TABLE_PROPERTIES[lowered]] = str(value)
    return properties


def _stats_columns(schema: pa.Schema, configuration: Mapping[str, str]) -> frozenset[tuple[str, ...]] | None:
    """Which leaf columns get min/max/nullCount (delta.dataSkippingStatsColumns / NumIndexedCols, default 32)."""
    explicit = configuration.get("delta.dataSkippingStatsColumns")
    if explicit:
        return frozenset(tuple(c.strip().strip("`").split(".")) for c in explicit.split(",") if c.strip())
    limit = int(configuration.get("delta.dataSkippingNumIndexedCols", "32"))
    if limit < 0:
        return None
    leaves: list[tuple[str, ...]] = []

    def walk(prefix: tuple[str, ...], data_type: pa.DataType) -> None:
        if pa.types.is_struct(data_type):
            for child in data_type:
                walk((*prefix, child.name), child.type)
        else:
            leaves.append(prefix)

    for f in schema:
        walk((f.name,), f.type)
    return frozenset(leaves[:limit])


def build_write_plan(
    options: Mapping[str, str], schema: StructType, overwrite: bool, streaming: bool = False
) -> WritePlan:
    """Validate a write against the table (driver side) and decide everything executors need."""
    location = _location(options)
    merge_schema = _opt_bool(options, "mergeSchema")
    overwrite_schema = _opt_bool(options, "overwriteSchema")
    replace_where_text = (options.get("replaceWhere") or "").strip() or None
    if replace_where_text and not overwrite:
        raise DeltaConnectorError(f"{SHORT_NAME}: replaceWhere needs mode('overwrite') ({location.uri!r})")
    if overwrite_schema and (not overwrite or replace_where_text):
        raise DeltaConnectorError(f"{SHORT_NAME}: overwriteSchema needs a full overwrite, without replaceWhere")
    _check_input_schema(schema, location)

    from deltalake import DeltaTable

    exists = DeltaTable.is_deltatable(location.uri, location.options or None)
    requested_partitions = _parse_columns(options.get("partitionBy"))
    input_arrow = _nullable_arrow_schema(_output_arrow_schema(schema))
    configuration: dict[str, str] = {}
    new_columns: list[pa.Field] = []
    if not exists:
        partition_by = requested_partitions
        configuration = _table_properties(options)
        table_schema = _canonical_delta_arrow(input_arrow)
        _check_partition_columns(partition_by, table_schema, location)
        input_columns = [(name, name) for name in schema.names]
    else:
        table = _open_table(location)
        _check_writer_protocol(table, location, removes_files=overwrite)
        partition_by = list(table.metadata().partition_columns)
        if requested_partitions and [c.lower() for c in requested_partitions] != [c.lower() for c in partition_by]:
            # delta-rs cannot change partition columns of an existing table in a write transaction.
            raise DeltaConnectorError(
                f"{SHORT_NAME}: partitionBy {requested_partitions} differs from the partitioning {partition_by} of "
                f"existing table {location.uri!r}; partitioning is fixed when a table is created"
            )
        configuration = dict(table.metadata().configuration)
        changed = {k: v for k, v in _table_properties(options).items() if configuration.get(k) != v}
        if changed:
            raise DeltaConnectorError(
                f"{SHORT_NAME}: table properties {changed} differ from existing table {location.uri!r}; options only "
                "set properties at creation (use pipelines.tables.set_properties)"
            )
        if overwrite_schema:
            table_schema = _canonical_delta_arrow(input_arrow)
            _check_partition_columns(partition_by, table_schema, location)
            input_columns = [(name, name) for name in schema.names]
        else:
            table_schema = _table_arrow_schema(table)
            input_columns, new_columns = _match_schema(schema, table_schema, partition_by, merge_schema, location)
        if new_columns:
            table_schema = pa.schema([*table_schema, *new_columns])
    partition_set = set(partition_by)
    file_schema = pa.schema([f for f in table_schema if f.name not in partition_set])
    partition_fields = [table_schema.field(c) for c in partition_by]
    replace_where = (
        parse_predicate(
            replace_where_text,
            table_schema,
            partition_by,
            "replaceWhere",
            location,
            "is not a partition column (only partition predicates are replaced atomically):",
        )
        if replace_where_text
        else None
    )
    txn_app = options.get("txnAppId")
    txn_version = _opt_int(options, "txnVersion", None)
    if not streaming and (txn_app is None) != (txn_version is None):
        raise DeltaConnectorError(f"{SHORT_NAME}: set both txnAppId and txnVersion for an idempotent write")
    target = _opt_int(options, "targetFileSizeBytes", None, minimum=1) or int(
        configuration.get("delta.targetFileSize", 128 * MiB)
    )
    compression = str(options.get("compression", "snappy")).lower()
    if compression not in {"snappy", "zstd", "gzip", "lz4", "brotli", "none", "uncompressed"}:
        raise DeltaConnectorError(f"{SHORT_NAME}: unsupported parquet compression {compression!r}")
    return WritePlan(
        location=location,
        mode="overwrite" if overwrite else "append",
        table_schema=table_schema,
        partition_by=partition_by,
        input_columns=input_columns,
        file_schema=file_schema,
        partition_fields=partition_fields,
        new_columns=new_columns,
        replace_where=replace_where,
        overwrite_schema=overwrite_schema,
        configuration=configuration,
        target_file_bytes=target,
        max_rows_per_file=_opt_int(options, "maxRowsPerFile", None, minimum=1),
        compression="none" if compression == "uncompressed" else compression,
        stats_columns=_stats_columns(file_schema, configuration),
        txn=(str(txn_app), int(txn_version)) if txn_app is not None and txn_version is not None else None,
        user_metadata=options.get("userMetadata"),
    )


def _check_input_schema(schema: StructType, location: TableLocation) -> None:
    seen: dict[str, str] = {}
    for name in schema.names:
        if name.lower() in seen:
            raise DeltaSchemaMismatchError(
                f"{SHORT_NAME}: columns {seen[name.lower()]!r} and {name!r} collide (Delta column names are "
                f"case-insensitive) writing {location.uri!r}"
            )
        seen[name.lower()] = name
    try:
        _output_arrow_schema(schema)
    except Exception as exc:
        raise DeltaSchemaMismatchError(f"{SHORT_NAME}: cannot write {schema.simpleString()} to Delta: {exc}") from exc


def _check_partition_columns(partition_by: list[str], schema: pa.Schema, location: TableLocation) -> None:
    for column in partition_by:
        if column not in schema.names:
            raise DeltaConnectorError(
                f"{SHORT_NAME}: partition column {column!r} is not in the data {schema.names} ({location.uri!r})"
            )
        data_type = schema.field(column).type
        if pa.types.is_nested(data_type) or pa.types.is_binary(data_type) or pa.types.is_floating(data_type):
            raise DeltaConnectorError(f"{SHORT_NAME}: cannot partition by {column!r} of type {data_type}")
    if partition_by and len(partition_by) == len(schema):
        raise DeltaConnectorError(f"{SHORT_NAME}: cannot partition by every column of {location.uri!r}")


def _match_schema(
    schema: StructType, table_schema: pa.Schema, partition_by: list[str], merge_schema: bool, location: TableLocation
) -> tuple[list[tuple[str, str]], list[pa.Field]]:
    """Map DataFrame columns onto the table (case-insensitive); collect every mismatch in one error."""
    table_fields = {f.name.lower(): f for f in table_schema}
    table_spark = {f.name.lower(): f for f in spark_schema_from_arrow(table_schema).fields}
    problems: list[str] = []
    mapping: list[tuple[str, str]] = []
    new_columns: list[pa.Field] = []
    present: set[str] = set()
    for spark_field in schema.fields:
        key = spark_field.name.lower()
        if key not in table_fields:
            if merge_schema:
                new_field = _nullable_arrow_schema(_output_arrow_schema(StructType([spark_field])))[0]
                new_columns.append(_canonical_delta_arrow(pa.schema([new_field]))[0])
                mapping.append((spark_field.name, spark_field.name))
            else:
                problems.append(
                    f"column {spark_field.name!r} ({_spark_type_name(spark_field.dataType)}) is not in the table; "
                    "set option mergeSchema=true to add it"
                )
            continue
        present.add(key)
        expected = table_spark[key].dataType
        if not _can_write(spark_field.dataType, expected):
            problems.append(
                f"column {table_fields[key].name!r}: table has {_spark_type_name(expected)}, "
                f"data has {_spark_type_name(spark_field.dataType)}"
            )
        mapping.append((spark_field.name, table_fields[key].name))
    for key, table_field in table_fields.items():
        if key in present:
            continue
        if table_field.name in partition_by:
            problems.append(f"partition column {table_field.name!r} is missing from the data")
        elif not table_field.nullable:
            problems.append(f"column {table_field.name!r} is NOT NULL in the table but missing from the data")
    if problems:
        raise DeltaSchemaMismatchError(
            f"{SHORT_NAME}: schema mismatch writing to {location.uri!r}:\n  - " + "\n  - ".join(problems)
        )
    return mapping, new_columns


# ---- executor side: parquet files and Delta stats ----------------------------------------------------


class _StatsCollector:
    """Per-file Delta statistics (numRecords, minValues, maxValues, nullCount) computed with pyarrow."""

    def __init__(self, schema: pa.Schema, stats_columns: frozenset[tuple[str, ...]] | None) -> None:
        self.leaves: list[tuple[tuple[str, ...], pa.DataType]] = []

        def walk(prefix: tuple[str, ...], data_type: pa.DataType) -> None:
            if pa.types.is_struct(data_type):
                for child in data_type:
                    walk((*prefix, child.name), child.type)
            elif stats_columns is None or prefix in stats_columns or prefix[:1] in stats_columns:
                self.leaves.append((prefix, data_type))

        for f in schema:
            walk((f.name,), f.type)
        self.rows = 0
        self.nulls: dict[tuple[str, ...], int] = dict.fromkeys((p for p, _ in self.leaves), 0)
        self.low: dict[tuple[str, ...], Any] = {}
        self.high: dict[tuple[str, ...], Any] = {}
        self.no_bounds: set[tuple[str, ...]] = set()

    @staticmethod
    def _has_bounds(data_type: pa.DataType) -> bool:
        return (
            pa.types.is_integer(data_type)
            or pa.types.is_floating(data_type)
            or pa.types.is_decimal(data_type)
            or pa.types.is_string(data_type)
            or pa.types.is_large_string(data_type)
            or pa.types.is_date(data_type)
            or pa.types.is_timestamp(data_type)
        )

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for path, data_type in self.leaves:
            column: Any = table.column(path[0])
            for part in path[1:]:
                column = pa.chunked_array(
                    [chunk.flatten()[chunk.type.get_field_index(part)] for chunk in column.chunks]
                )
            self.nulls[path] += column.null_count
            if path in self.no_bounds or not self._has_bounds(data_type):
                continue
            if pa.types.is_floating(data_type):
                if pc.any(pc.is_nan(column)).as_py() or pc.any(pc.is_inf(column)).as_py():
                    self.no_bounds.add(path)
                    continue
            bounds = pc.min_max(column)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is None:
                continue
            self.low[path] = low if path not in self.low else min(self.low[path], low)
            self.high[path] = high if path not in self.high else max(self.high[path], high)

    def to_json(self) -> str:
        minimum: dict[str, Any] = {}
        maximum: dict[str, Any] = {}
        nulls: dict[str, Any] = {}
        for path, data_type in self.leaves:
            _nest(nulls, path, self.nulls[path])
            if path in self.no_bounds or path not in self.low:
                continue
            low = _stat_value(self.low[path], data_type, upper=False)
            high = _stat_value(self.high[path], data_type, upper=True)
            if low is not None:
                _nest(minimum, path, low)
            if high is not None:
                _nest(maximum, path, high)
        return json.dumps(
            {"numRecords": self.rows, "minValues": minimum, "maxValues": maximum, "nullCount": nulls},
            separators=(",", ":"),
        )


def _nest(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _stat_value(value: Any, data_type: pa.DataType, upper: bool) -> Any:
    """JSON form of a bound; None when it cannot be stored as a safe bound."""
    if isinstance(value, dt.datetime):
        # Delta keeps millisecond stats: round the max up so it stays an upper bound for every reader.
        micros = value.microsecond % 1000
        if upper and micros:
            value = value + dt.timedelta(microseconds=1000 - micros)
        value = value.replace(microsecond=value.microsecond - value.microsecond % 1000)
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else None
    if isinstance(value, str):
        if len(value) <= _MAX_STRING_STAT:
            return value
        return None if upper else value[:_MAX_STRING_STAT]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class _OpenFile:
    path: str
    sink: Any
    writer: pq.ParquetWriter
    stats: _StatsCollector
    partition_values: dict[str, str | None]
    typed_partition_values: dict[str, Any]
    rows: int = 0


class TableFilesWriter:
    """Writes one task's rows into Hive-style partition directories, rolling files by size / rows.

    Executor side (pyarrow only). Spark's writer API drives it for ``df.write``; jobs that write several
    tables from one pass (bronze: events and quarantine) drive one per table and hand the files to
    ``commit_write`` on the driver. ``close`` returns the files; ``discard`` removes them.
    """

    def __init__(self, plan: WritePlan) -> None:
        self.plan = plan
        self.filesystem, self.root = arrow_filesystem(plan.location)
        self.open: dict[tuple[Any, ...], _OpenFile] = {}
        self.buffers: dict[tuple[Any, ...], list[pa.Table]] = {}
        self.buffered_bytes: dict[tuple[Any, ...], int] = {}
        self.finished: list[WrittenFile] = []
        self.created: list[str] = []
        self.partition_names = [f.name for f in plan.partition_fields]
        self.full_schema = pa.schema([*plan.file_schema, *plan.partition_fields])
        extension = "" if plan.compression == "none" else f".{plan.compression}"
        self.suffix = f"{extension}.parquet"

    def conform(self, batch: pa.RecordBatch) -> pa.Table:
        """Rename to table columns, cast to table types, fill columns the data lacks with nulls."""
        by_table_name = {table_name: batch.column(i) for i, (_, table_name) in enumerate(self.plan.input_columns)}
        arrays = []
        for target_field in self.full_schema:
            column = by_table_name.get(target_field.name)
            if column is None:
                arrays.append(pa.nulls(batch.num_rows, target_field.type))
                continue
            if column.type != target_field.type:
                try:
                    column = column.cast(target_field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DeltaSchemaMismatchError(
                        f"{SHORT_NAME}: column {target_field.name!r}: cannot cast {column.type} to {target_field.type} "
                        f"writing {self.plan.location.uri!r}: {exc}"
                    ) from exc
            if not target_field.nullable and column.null_count:
                raise DeltaSchemaMismatchError(
                    f"{SHORT_NAME}: column {target_field.name!r} is NOT NULL in {self.plan.location.uri!r} "
                    f"but the data has {column.null_count} null(s)"
                )
            arrays.append(column)
        return pa.Table.from_arrays(arrays, schema=self.full_schema)

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        table = self.conform(batch)
        # A row group is flushed at min(row group size, target file size) so files can roll on size.
        threshold = min(self.plan.row_group_bytes, self.plan.target_file_bytes)
        for key, part in _split_by_partition(table, self.partition_names):
            data = part.select(self.plan.file_schema.names)
            self.buffers.setdefault(key, []).append(data)
            self.buffered_bytes[key] = self.buffered_bytes.get(key, 0) + data.nbytes
            if self.buffered_bytes[key] >= threshold:
                self._flush(key)
        # Many partition values in one task must not multiply memory: flush the biggest buffers first.
        while sum(self.buffered_bytes.values()) > _MAX_TASK_BUFFER_BYTES:
            self._flush(max(self.buffered_bytes, key=self.buffered_bytes.__getitem__))

    def _flush(self, key: tuple[Any, ...]) -> None:
        chunks = self.buffers.pop(key, [])
        self.buffered_bytes.pop(key, None)
        if not chunks:
            return
        data = pa.concat_tables(chunks)  # chunks stay as they are: the parquet writer reads across them
        offset = 0
        while offset < data.num_rows:
            handle = self.open.get(key) or self._open_file(key)
            room = data.num_rows - offset
            if self.plan.max_rows_per_file:
                room = min(room, self.plan.max_rows_per_file - handle.rows)
            piece = data.slice(offset, room)
            handle.writer.write_table(piece, row_group_size=max(piece.num_rows, 1))
            handle.stats.add(piece)
            handle.rows += piece.num_rows
            offset += room
            full_rows = self.plan.max_rows_per_file is not None and handle.rows >= self.plan.max_rows_per_file
            if full_rows or handle.sink.tell() >= self.plan.target_file_bytes:
                self._close_file(key)

    def _open_file(self, key: tuple[Any, ...]) -> _OpenFile:
        typed = dict(zip(self.partition_names, key, strict=True))
        serialized = {name: _serialize_partition_value(value) for name, value in typed.items()}
        directory = _partition_dir(self.partition_names, serialized)
        name = f"part-{uuid.uuid4()}-c000{self.suffix}"
        relative = f"{directory}/{name}" if directory else name
        full = f"{self.root}/{relative}"
        if self.plan.location.is_local:
            os.makedirs(os.path.dirname(full), exist_ok=True)
        self.created.append(relative)
        sink = self.filesystem.open_output_stream(full)
        writer = pq.ParquetWriter(
            sink,
            self.plan.file_schema,
            compression=self.plan.compression,
            write_statistics=True,
            use_dictionary=True,
        )
        handle = _OpenFile(
            relative, sink, writer, _StatsCollector(self.plan.file_schema, self.plan.stats_columns), serialized, typed
        )
        self.open[key] = handle
        return handle

    def _close_file(self, key: tuple[Any, ...]) -> None:
        handle = self.open.pop(key)
        handle.writer.close()
        size = handle.sink.tell()
        handle.sink.close()
        self.finished.append(
            WrittenFile(
                path=handle.path,
                size=size,
                partition_values=handle.partition_values,
                typed_partition_values=handle.typed_partition_values,
                num_records=handle.rows,
                stats=handle.stats.to_json(),
                modification_time=int(time.time() * 1000),
            )
        )

    def close(self) -> list[WrittenFile]:
        for key in list(self.buffers):
            self._flush(key)
        for key in list(self.open):
            self._close_file(key)
        return self.finished

    def discard(self) -> None:
        """A failed task removes what it wrote; Spark retries it with new file names."""
        for handle in self.open.values():
            try:
                handle.writer.close()
                handle.sink.close()
            except Exception:  # the task is failing already; the original error matters
                log.debug("closing a half-written file failed", exc_info=True)
        self.open.clear()
        _delete_files(self.plan.location, self.created)


def _split_by_partition(table: pa.Table, columns: list[str]) -> Iterator[tuple[tuple[Any, ...], pa.Table]]:
    """Group rows by their partition values (vectorised: dictionary codes, sort, run-length ends)."""
    if not columns:
        yield (), table
        return
    codes: pa.Array | None = None
    for column in columns:
        encoded = pc.dictionary_encode(table.column(column).combine_chunks(), null_encoding="encode")
        indices = encoded.indices.cast(pa.int64())
        width = max(len(encoded.dictionary), 1)
        codes = indices if codes is None else pc.add(pc.multiply(codes, width), indices)
    assert codes is not None
    if pc.min_max(codes)["min"] == pc.min_max(codes)["max"]:
        yield tuple(table.column(c)[0].as_py() for c in columns), table
        return
    order = pc.sort_indices(codes)
    ordered = table.take(order)
    runs = pc.run_end_encode(codes.take(order))
    start = 0
    for end in runs.run_ends.to_pylist():
        piece = ordered.slice(start, end - start)
        yield tuple(piece.column(c)[0].as_py() for c in columns), piece
        start = end


def _write_task(plan: WritePlan, batches: Iterator[pa.RecordBatch]) -> DeltaCommitMessage:
    writer = TableFilesWriter(plan)
    try:
        for batch in batches:
            writer.add(batch)
        return DeltaCommitMessage(writer.close())
    except BaseException:
        writer.discard()
        raise


# ---- driver side: the one atomic commit ----------------------------------------------------------------


def _pause_for_crash_test() -> None:
    marker = os.environ.get(PAUSE_BEFORE_COMMIT_ENV)
    if not marker:
        return
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(600)


def _collect_files(messages: Sequence[WriterCommitMessage | None]) -> list[WrittenFile]:
    return [f for m in messages if isinstance(m, DeltaCommitMessage) for f in m.files]


def _files_committed(location: TableLocation, files: list[WrittenFile]) -> bool:
    """True when every file is live in the latest snapshot (the commit landed despite a later error)."""
    if not files:
        return False
    try:
        table = _open_table(location)
        live = {_decode_path(p) for p in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()}
    except Exception:
        return False
    return all(f.path in live for f in files)


def commit_write(plan: WritePlan, files: list[WrittenFile], txn: tuple[str, int] | None, overwrite: bool) -> bool:
    """Make the written files visible in ONE Delta commit; False when the txn was already committed.

    On failure the files are deleted (unless the commit itself landed, e.g. a post-commit checkpoint failed).
    """
    _pause_for_crash_test()
    try:
        return _commit(plan, files, txn, overwrite)
    except BaseException:
        if _files_committed(plan.location, files):
            log.warning("%s: commit to %s raised after it landed", SHORT_NAME, plan.location.uri, exc_info=True)
            return True
        _delete_files(plan.location, [f.path for f in files])
        raise


def _commit(plan: WritePlan, files: list[WrittenFile], txn: tuple[str, int] | None, overwrite: bool) -> bool:
    from deltalake import DeltaTable, Schema, Transaction
    from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions

    location = plan.location
    adds = [AddAction(f.path, f.size, f.partition_values, f.modification_time, True, f.stats) for f in files]
    custom = {"userMetadata": plan.user_metadata} if plan.user_metadata else None
    properties = CommitProperties(
        custom_metadata=custom, app_transactions=[Transaction(txn[0], txn[1])] if txn else None
    )
    if plan.replace_where is not None:
        _check_replace_where(plan.replace_where, files, location)

    if not DeltaTable.is_deltatable(location.uri, location.options or None):
        try:
            create_table_with_add_actions(
                location.uri,
                Schema.from_arrow(plan.table_schema),
                adds,
                mode="error",
                partition_by=plan.partition_by or None,
                configuration=plan.configuration or None,
                storage_options=location.options or None,
                commit_properties=properties,
            )
            return True
        except Exception:
            if not DeltaTable.is_deltatable(location.uri, location.options or None):
                raise
            # Another writer created the table first: fall through and commit against it.

    table = _open_table(location)
    if txn is not None:
        committed = table.transaction_version(txn[0])
        if committed is not None and committed >= txn[1]:
            deleted = _delete_files(location, [f.path for f in files])
            log.info(
                "%s: %s already has txn %s v%s (>= %s): skipped, removed %d orphan files",
                SHORT_NAME,
                location.uri,
                txn[0],
                committed,
                txn[1],
                deleted,
            )
            return False
    removes_files = overwrite or plan.replace_where is not None
    if not files and not removes_files and txn is None and not plan.new_columns:
        return True  # an empty append changes nothing: no empty commit
    _check_writer_protocol(table, location, removes_files=removes_files)
    current_partitions = list(table.metadata().partition_columns)
    if overwrite and plan.overwrite_schema:
        schema = plan.table_schema
    else:
        if current_partitions != plan.partition_by:
            raise DeltaConnectorError(
                f"{SHORT_NAME}: {location.uri!r} is now partitioned by {current_partitions}, "
                f"this write was planned for {plan.partition_by}"
            )
        schema = _table_arrow_schema(table)
        schema, table = _evolve_schema(table, schema, plan)
    if overwrite and plan.replace_where is None:
        table.create_write_transaction(
            adds, mode="overwrite", schema=schema, partition_by=plan.partition_by or None, commit_properties=properties
        )
        return True
    actions: list[Any] = list(adds)
    if plan.replace_where is not None:
        actions.extend(_removes_matching(table, plan.replace_where, plan.partition_by))
    table.create_write_transaction(
        actions, mode="append", schema=schema, partition_by=plan.partition_by or None, commit_properties=properties
    )
    return True


def _evolve_schema(table: DeltaTable, schema: pa.Schema, plan: WritePlan) -> tuple[pa.Schema, DeltaTable]:
    """Check the files still fit the (possibly concurrently changed) table; add mergeSchema columns.

    delta-rs 1.6.6 ignores schema changes in append transactions, so new nullable columns go in their own
    commit just before the data commit (harmless if the data commit then fails: the columns read as null).
    """
    from deltalake import Field

    current = {f.name.lower(): f for f in schema}
    problems = []
    missing: list[pa.Field] = []
    for file_field in plan.file_schema:
        existing = current.get(file_field.name.lower())
        if existing is None:
            if any(f.name == file_field.name for f in plan.new_columns):
                missing.append(file_field)
            else:
                problems.append(f"column {file_field.name!r} is no longer in the table")
        elif _canonical_type(existing.type) != _canonical_type(file_field.type):
            problems.append(f"column {file_field.name!r} changed to {existing.type} (files have {file_field.type})")
    if problems:
        raise DeltaSchemaMismatchError(
            f"{SHORT_NAME}: {plan.location.uri!r} changed while writing:\n  - " + "\n  - ".join(problems)
        )
    if missing:
        table.alter.add_columns([Field.from_arrow(f) for f in missing])
        table = _open_table(plan.location)
        schema = _table_arrow_schema(table)
    return schema, table


def _canonical_type(data_type: pa.DataType) -> str:
    return str(_nullable_arrow_schema(pa.schema([pa.field("x", data_type)]))[0].type)


def _check_replace_where(predicate: Predicate, files: list[WrittenFile], location: TableLocation) -> None:
    outside: dict[str, int] = {}
    for written in files:
        if not predicate.matches(written.typed_partition_values):
            label = ", ".join(f"{k}={v}" for k, v in written.partition_values.items())
            outside[label] = outside.get(label, 0) + written.num_records
    if outside:
        detail = "; ".join(f"{rows} row(s) in partition {label}" for label, rows in sorted(outside.items()))
        raise ReplaceWhereViolationError(
            f"{SHORT_NAME}: data written to {location.uri!r} does not match replaceWhere "
            f"{predicate.text!r}: {detail}. Nothing was committed."
        )


def _removes_matching(table: DeltaTable, predicate: Predicate, partition_by: list[str]) -> list[Any]:
    from deltalake.transaction import RemoveAction

    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return []
    now = int(time.time() * 1000)
    rows = actions.select(["path", "size_bytes", *[f"partition.{c}" for c in partition_by]]).to_pylist()
    removes = []
    for row in rows:
        typed = {c: row[f"partition.{c}"] for c in partition_by}
        if predicate.matches(typed):
            serialized = {c: _serialize_partition_value(v) for c, v in typed.items()}
            removes.append(RemoveAction(_decode_path(row["path"]), True, now, row["size_bytes"], serialized))
    return removes


# ---- Spark writer classes ------------------------------------------------------------------------------


class DeltaBatchWriter(DataSourceArrowWriter):
    """df.write: executors write parquet (pyarrow); commit() makes one Delta commit (delta-rs)."""

    def __init__(self, plan: WritePlan) -> None:
        self.plan = plan

    def write(self, iterator: Iterator[pa.RecordBatch]) -> DeltaCommitMessage:
        return _write_task(self.plan, iterator)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        commit_write(self.plan, _collect_files(messages), self.plan.txn, overwrite=self.plan.mode == "overwrite")

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        files = _collect_files(messages)
        if files and not _files_committed(self.plan.location, files):
            _delete_files(self.plan.location, [f.path for f in files])


def streaming_app_id(options: Mapping[str, str]) -> str:
    """The Delta app id of a streaming query: option txnAppId, else Spark's query id from the checkpoint.

    Spark writes ``{"id": <query uuid>}`` to ``<checkpointLocation>/metadata`` when a query first starts
    and keeps it across restarts; a new checkpoint means a new query and batch ids restarting at 0, so the
    query id (not the path) is what makes "batch N already committed" safe - the same choice as Spark's
    own Delta sink.
    """
    explicit = options.get("txnAppId")
    if explicit:
        return str(explicit)
    checkpoint = options.get("checkpointLocation")
    if not checkpoint:
        raise DeltaConnectorError(
            f"{SHORT_NAME}: the streaming sink needs option checkpointLocation (or txnAppId) for exactly-once commits"
        )
    location = _normalize_uri(str(checkpoint))
    if "://" in location:
        raise DeltaConnectorError(
            f"{SHORT_NAME}: cannot read the query id from checkpoint {checkpoint!r}; set option txnAppId"
        )
    metadata = os.path.join(location, "metadata")
    try:
        with open(metadata) as handle:
            return str(json.load(handle)["id"])
    except (OSError, ValueError, KeyError) as exc:
        raise DeltaConnectorError(
            f"{SHORT_NAME}: cannot read the streaming query id from {metadata}: {exc}; set option txnAppId"
        ) from exc


class DeltaStreamWriter(DataSourceStreamArrowWriter):
    """writeStream sink: one idempotent Delta commit per micro-batch (txn app id, version = batch id).

    A replayed batch (Spark re-runs the last batch after a crash between the Delta commit and its own
    commit log) finds ``transaction_version(app id) >= batch id``, skips the commit and deletes the files
    it just wrote. The txn identifiers must outlive any restart: if the table sets
    ``delta.setTransactionRetentionDuration``, it has to exceed the longest time a query may stay down.
    """

    def __init__(self, plan: WritePlan, options: Mapping[str, str], overwrite: bool) -> None:
        self.plan = plan
        self.options = CaseInsensitiveDict(options)  # keeps checkpointLocation findable in any case
        self.overwrite = overwrite

    def write(self, iterator: Iterator[pa.RecordBatch]) -> DeltaCommitMessage:
        return _write_task(self.plan, iterator)

    def commit(self, messages: list[WriterCommitMessage | None], batchId: int) -> None:
        files = _collect_files(messages)
        if not files and not self.overwrite:
            return  # nothing to make visible; a replay of an empty batch is empty too
        commit_write(self.plan, files, (streaming_app_id(self.options), batchId), overwrite=self.overwrite)

    def abort(self, messages: list[WriterCommitMessage | None], batchId: int) -> None:
        _delete_files(self.plan.location, [f.path for f in _collect_files(messages)])


# --------------------------------------------------------------------------------------------------
# The data source
# --------------------------------------------------------------------------------------------------


class DeltaDataSource(DataSource):
    """``lakehouse_delta``: batch reads (pruning, time travel), batch writes and a streaming sink."""

    @classmethod
    def name(cls) -> str:
        return SHORT_NAME

    def _pin(self) -> tuple[int, list[str], StructType]:
        table = _resolve_read_table(_location(self.options), self.options)
        return (
            table.version(),
            list(table.metadata().partition_columns),
            spark_schema_from_arrow(_table_arrow_schema(table)),
        )

    def schema(self) -> StructType:
        # Resolved once when the DataFrame is defined; the pinned version travels with this (pickled)
        # instance into planning, so schema and files always come from the same snapshot.
        version, partitions, schema = self._pin()
        self.pinned = (version, partitions)
        return schema

    def reader(self, schema: StructType) -> DeltaReader:
        location = _location(self.options)
        pinned = getattr(self, "pinned", None)
        if pinned is None:  # user-specified schema: schema() was skipped
            version, partitions, _ = self._pin()
            pinned = (version, partitions)
        text = (self.options.get("filter") or "").strip()
        row_filter = None
        if text:
            table = _open_table(location, pinned[0])
            table_schema = _table_arrow_schema(table)
            filterable = [
                f.name for f in table_schema if not pa.types.is_nested(f.type) and not pa.types.is_floating(f.type)
            ]
            row_filter = parse_predicate(
                text,
                table_schema,
                filterable,
                "filter",
                location,
                "cannot be used in the filter option (nested or "
                "floating-point columns: filter them in Spark); filterable columns:",
            )
        reader_class = DeltaPushdownReader if _opt_bool(self.options, "sparkFilterPushdown") else DeltaReader
        return reader_class(location, schema, self.options, pinned, row_filter)

    def writer(self, schema: StructType, overwrite: bool) -> DeltaBatchWriter:
        return DeltaBatchWriter(build_write_plan(self.options, schema, overwrite))

    def streamWriter(self, schema: StructType, overwrite: bool) -> DeltaStreamWriter:
        if not self.options.get("txnAppId") and not self.options.get("checkpointLocation"):
            raise DeltaConnectorError(
                f"{SHORT_NAME}: the streaming sink needs option checkpointLocation (or txnAppId) "
                "for exactly-once commits"
            )
        return DeltaStreamWriter(
            build_write_plan(self.options, schema, overwrite, streaming=True), self.options, overwrite
        )

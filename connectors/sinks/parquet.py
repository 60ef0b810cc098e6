"""The parquet sink: a topic's records as a date-partitioned parquet dataset, the predictions' offline store.

Layout under ``<out>/<topic>/`` (a Hive-partitioned dataset: ``pyarrow.dataset.dataset(path,
partitioning="hive")`` or ``pandas.read_parquet(path)`` read it whole, with ``date`` as a column)::

    date=YYYY-MM-DD/part-p<partition>-<first offset>-<last offset>.parquet
    _errors/date=YYYY-MM-DD/part-p<partition>-<first offset>-<last offset>.parquet
    _sink.json   the consumer group that owns the dataset
    _sink.lock   held (flock) by the running sink

Offsets in names are zero-padded to 12 digits. Readers skip names starting with ``_`` or ``.``, so ``_errors``
(records that could not be decoded: their raw key and value bytes, the error code and message, never
dropped) and temporary files stay out of the dataset.

Columns: the record's fields, flattened and typed (`connectors.sinks.avro_columns`), then ``kafka_topic``,
``kafka_partition``, ``kafka_offset``, ``kafka_timestamp`` (UTC), ``kafka_key`` and ``kafka_headers``
(map of name to bytes; e.g. the header of a replayed record). The partition date is the
UTC day of ``classified_at`` for ClassifiedItem records (nomenclature.classified, nomenclature.shadow), of the
Kafka record timestamp for every other schema and for undecodable records.

A flush writes, for each partition with buffered records, one file per date (and per ``_errors`` date) of
that partition's records; every file of the flush carries the same name — the flush's first and last offset
of the partition — and, in its footer (key ``nomenclature.sink``), the list of the flush's files. A file is
written to a temporary name, fsync'd and renamed; then every directory touched is fsync'd; only then are the
offsets committed to the consumer group.

Guarantee: every record of the topic is written exactly once, across kill -9 and restarts. On start the sink
resumes each partition after the last offset in its files, or, for a partition without files, at the group's
committed offset (or the beginning). A flush interrupted by a crash (some of its files renamed, not all, and
never committed) has its files removed and its records read again; a crash after the renames and before the
commit loses nothing and writes nothing twice, because the files, not the commit, say where to resume. The
committed offset matters only for a partition whose files were all deleted (retention): they are not read
again. A committed offset past the files is reported, and the files win; a committed latest flush that misses
files (deleted since) is reported and not read again. Two sinks cannot write one dataset (the lock), and a
new dataset refuses a group that already committed offsets, presumably for another dataset (``_sink.json``
records the owner; ``resume_committed`` accepts them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import TopicPartition

from connectors.sinks.avro_columns import RecordColumns
from connectors.sinks.topic_consumer import Log, SinkError, stderr_log
from schemas import AvroSerde, Catalogue, DecodeError
from schemas.avsc import canonical_json, full_name
from streams.topics import TopicSpec

ERRORS_DIR = "_errors"
MARKER = "_sink.json"
LOCK = "_sink.lock"
FOOTER_KEY = b"nomenclature.sink"
# The record field that dates a record, per schema; other schemas are dated by the Kafka timestamp.
DATE_FIELDS = {"nomenclature.ClassifiedItem": "classified_at"}
_TIMESTAMP = pa.timestamp("ms", tz="UTC")
KAFKA_FIELDS = [
    pa.field("kafka_topic", pa.string()),
    pa.field("kafka_partition", pa.int32()),
    pa.field("kafka_offset", pa.int64()),
    pa.field("kafka_timestamp", _TIMESTAMP),
    pa.field("kafka_key", pa.string()),
    pa.field("kafka_headers", pa.map_(pa.string(), pa.binary())),
]
ERRORS_SCHEMA = pa.schema(
    [
        *KAFKA_FIELDS[:4],
        pa.field("kafka_key", pa.binary()),
        KAFKA_FIELDS[5],
        pa.field("value", pa.binary()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("schema_id", pa.int32()),
    ]
)
PART_FILE = re.compile(r"part-p(\d+)-(\d+)-(\d+)\.parquet")


class SinkConflictError(SinkError):
    """The output is locked by another sink, or belongs to another consumer group."""


def part_name(partition: int, first: int, last: int) -> str:
    return f"part-p{partition}-{first:012d}-{last:012d}.parquet"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new entries survive a crash: each created directory's parent is fsync'd."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        fsync_dir(directory.parent)


def day_of(millis: int | None) -> str:
    return datetime.fromtimestamp(max(millis or 0, 0) / 1000, UTC).strftime("%Y-%m-%d")


class ParquetSink:
    """See the module docstring. Use as a context manager (it holds the dataset's lock)."""

    name = "sink parquet"

    def __init__(
        self,
        out: Path,
        spec: TopicSpec,
        catalogue: Catalogue,
        group: str,
        *,
        resume_committed: bool = False,
        compression: str = "zstd",
        log: Log = stderr_log,
    ) -> None:
        self.topic = spec.name
        self.root = Path(out) / spec.name
        self.group = group
        self.resume_committed = resume_committed
        self.compression = compression
        self.log = log
        self.serde = AvroSerde(catalogue, spec.subject, spec.schema)
        reserved = [f.name for f in KAFKA_FIELDS] + ["date"]
        self.columns = RecordColumns(spec.schema, reserved=reserved)
        self.schema = pa.schema(
            [*self.columns.arrow_fields, *KAFKA_FIELDS],
            metadata={b"avro.schema": canonical_json(spec.schema)},
        )
        self.date_field = DATE_FIELDS.get(full_name(spec.schema))
        self._buffers: dict[int, list[Any]] = {}
        self._buffered = 0
        self._lock: TextIO | None = None
        self.files = 0
        self.rows = 0
        self.undecodable = 0
        self.removed_files = 0
        self.removed_rows = 0
        self.dates: set[str] = set()

    def __enter__(self) -> ParquetSink:
        make_dirs(self.root)
        lock = (self.root / LOCK).open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SinkConflictError(f"another sink is writing {self.root} (it holds {LOCK})") from None
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ---- resuming ------------------------------------------------------------------------------

    def start_positions(
        self, committed: Mapping[TopicPartition, int | None], ends: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        if self._lock is None:
            raise RuntimeError("ParquetSink is used outside its `with` block")
        self._remove_temporaries()
        by_partition = {tp.partition: committed.get(tp) for tp in committed}
        from_files = self.file_positions(by_partition)
        self._check_owner(by_partition, from_files)
        positions: dict[TopicPartition, int | None] = {}
        for tp, offset in committed.items():
            files_next = from_files.get(tp.partition)
            positions[tp] = offset if files_next is None else files_next
            if files_next is not None and offset is not None and offset > files_next:
                self.log(
                    f"{self.name}: p{tp.partition}: group {self.group!r} committed offset {offset}, past the "
                    f"files' {files_next} (another sink in this group? newest files deleted?); the files win"
                )
        self.log(
            f"{self.name}: {self.topic} -> {self.root}, group {self.group}; resuming "
            + ", ".join(
                f"p{tp.partition} at {'the beginning' if p is None else p}" for tp, p in positions.items()
            )
        )
        return positions

    def file_positions(self, committed: Mapping[int, int | None]) -> dict[int, int]:
        """Per partition, the offset after the last one in the files, once an interrupted flush's files (the
        latest flush, incomplete and not committed) are removed."""
        groups: dict[int, dict[tuple[int, int], list[Path]]] = {}
        for path in self._part_files():
            match = PART_FILE.fullmatch(path.name)
            assert match is not None
            partition, first, last = (int(g) for g in match.groups())
            groups.setdefault(partition, {}).setdefault((first, last), []).append(path)
        positions = {}
        for partition, flushes in groups.items():
            (first, last), paths = max(flushes.items(), key=lambda item: item[0][1])
            if self._complete(paths):
                positions[partition] = last + 1
            elif last + 1 <= (committed.get(partition) or 0):  # complete when committed: files deleted since
                self.log(
                    f"{self.name}: the flush of partition {partition}'s offsets {first}-{last} misses files "
                    "(deleted after it was committed); its records are not read again"
                )
                positions[partition] = last + 1
            else:
                self._remove_interrupted(partition, first, last, paths)
                del flushes[(first, last)]
                if flushes:
                    positions[partition] = max(last for _, last in flushes) + 1
        return positions

    def _remove_interrupted(self, partition: int, first: int, last: int, paths: Sequence[Path]) -> None:
        rows = sum(pq.read_metadata(path).num_rows for path in paths)
        for path in paths:
            path.unlink()
            fsync_dir(path.parent)
        self.removed_files += len(paths)
        self.removed_rows += rows
        self.log(
            f"{self.name}: removed {len(paths)} file(s) ({rows} rows) of an interrupted flush of partition "
            f"{partition} (offsets {first}-{last}); those records are read again"
        )

    def _part_files(self) -> list[Path]:
        return [
            path
            for pattern in ("date=*/part-p*.parquet", f"{ERRORS_DIR}/date=*/part-p*.parquet")
            for path in self.root.glob(pattern)
            if PART_FILE.fullmatch(path.name)
        ]

    def _complete(self, paths: Sequence[Path]) -> bool:
        """Whether every file the flush's footer lists is there."""
        try:
            footer = pq.read_metadata(paths[0]).metadata or {}
            listed = json.loads(footer[FOOTER_KEY])["files"]
        except (OSError, KeyError, ValueError, pa.ArrowInvalid) as exc:
            raise SinkError(
                f"{paths[0]}: not a file of this sink ({exc!r}); move it out of {self.root}"
            ) from None
        return all((self.root / relative).is_file() for relative in listed)

    def _remove_temporaries(self) -> None:
        for path in [
            *self.root.glob("date=*/.part-*.tmp"),
            *self.root.glob(f"{ERRORS_DIR}/date=*/.part-*.tmp"),
        ]:
            path.unlink()

    def _check_owner(self, committed: Mapping[int, int | None], from_files: Mapping[int, int]) -> None:
        marker = self.root / MARKER
        if marker.is_file():
            owner = json.loads(marker.read_text(encoding="utf-8")).get("group")
            if owner != self.group:
                raise SinkConflictError(
                    f"{self.root} is written by consumer group {owner!r}, not {self.group!r}: pass "
                    f"--group {owner} (another group's committed offsets could skip records here)"
                )
            return
        offsets = {p: o for p, o in committed.items() if o is not None}
        if offsets and not from_files and not self.resume_committed:
            listed = ", ".join(f"p{p}: {o}" for p, o in sorted(offsets.items()))
            raise SinkConflictError(
                f"{self.root} is a new dataset but consumer group {self.group!r} already committed offsets "
                f"({listed}), presumably for another output; pass --group NAME to start a new dataset from "
                "the beginning, or --resume-committed to start at those offsets"
            )
        text = json.dumps(
            {"topic": self.topic, "group": self.group, "created_at": datetime.now(UTC).isoformat()}
        )
        temporary = marker.with_name(f".{MARKER}.tmp")
        with temporary.open("w", encoding="utf-8") as file:
            file.write(text + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, marker)
        fsync_dir(self.root)

    # ---- writing -------------------------------------------------------------------------------

    def add(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        self._buffers.setdefault(tp.partition, []).extend(records)
        self._buffered += len(records)

    @property
    def buffered(self) -> int:
        return self._buffered

    def flush(self) -> dict[TopicPartition, int]:
        flushed = {}
        for partition, records in sorted(self._buffers.items()):
            if records:
                self._write_flush(partition, records)
                flushed[TopicPartition(self.topic, partition)] = records[-1].offset + 1
        self._buffers.clear()
        self._buffered = 0
        return flushed

    def _write_flush(self, partition: int, records: Sequence[Any]) -> None:
        rows: dict[str, tuple[list[dict[str, Any]], list[Any], list[str | None]]] = {}
        errors: dict[str, list[tuple[Any, str, str, int | None]]] = {}
        for record in records:
            try:
                key = None if record.key is None else record.key.decode("utf-8")
                value = self.serde.decode(record.value)
            except UnicodeDecodeError as exc:
                errors.setdefault(day_of(record.timestamp), []).append(
                    (record, "invalid_key_utf8", f"record key is not UTF-8 text: {exc.reason}", None)
                )
                continue
            except DecodeError as exc:
                errors.setdefault(day_of(record.timestamp), []).append(
                    (record, exc.code, exc.message, exc.schema_id)
                )
                continue
            values, kafka, keys = rows.setdefault(self._day(value, record), ([], [], []))
            values.append(value)
            kafka.append(record)
            keys.append(key)
        tables = {f"date={day}": self._table(*parts) for day, parts in rows.items()}
        tables.update({f"{ERRORS_DIR}/date={day}": _errors_table(found) for day, found in errors.items()})
        first, last = records[0].offset, records[-1].offset
        name = part_name(partition, first, last)
        footer = json.dumps(
            {
                "topic": self.topic,
                "partition": partition,
                "first_offset": first,
                "last_offset": last,
                "files": sorted(f"{directory}/{name}" for directory in tables),
            }
        ).encode()
        for directory, table in sorted(tables.items()):
            metadata = {**(table.schema.metadata or {}), FOOTER_KEY: footer}
            self._write_file(self.root / directory / name, table.replace_schema_metadata(metadata))
        for directory in tables:
            fsync_dir(self.root / directory)
        self.files += len(tables)
        self.rows += sum(len(parts[0]) for parts in rows.values())
        if errors:
            codes = Counter(f[1] for found in errors.values() for f in found)
            self.undecodable += codes.total()
            self.log(
                f"{self.name}: {codes.total()} undecodable record(s) of partition {partition} written to "
                f"{ERRORS_DIR}/ ({', '.join(f'{code}: {n}' for code, n in sorted(codes.items()))})"
            )
        self.dates.update(rows)

    def _day(self, value: Mapping[str, Any], record: Any) -> str:
        if self.date_field is not None:
            stamp = value.get(self.date_field)
            if isinstance(stamp, datetime):
                return (stamp if stamp.tzinfo is UTC else stamp.astimezone(UTC)).date().isoformat()
        return day_of(record.timestamp)

    def _table(self, values: list[dict[str, Any]], kafka: list[Any], keys: list[str | None]) -> pa.Table:
        arrays = self.columns.arrays(values)
        arrays += [
            pa.array([r.topic for r in kafka], pa.string()),
            pa.array([r.partition for r in kafka], pa.int32()),
            pa.array([r.offset for r in kafka], pa.int64()),
            pa.array([_timestamp(r.timestamp) for r in kafka], _TIMESTAMP),
            pa.array(keys, pa.string()),
            _headers(kafka),
        ]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _write_file(self, path: Path, table: pa.Table) -> None:
        make_dirs(path.parent)
        temporary = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, temporary, compression=self.compression)
        with temporary.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)

    def report(self) -> dict[str, Any]:
        return {
            "out": str(self.root),
            "files": self.files,
            "rows": self.rows,
            "undecodable": self.undecodable,
            "removed_interrupted_files": self.removed_files,
            "removed_rows": self.removed_rows,
            "dates": sorted(self.dates),
        }


def _timestamp(millis: int | None) -> int | None:
    return millis if millis is not None and millis >= 0 else None


def _headers(records: Sequence[Any]) -> pa.Array:
    return pa.array([list(r.headers) for r in records], KAFKA_FIELDS[5].type)


def _errors_table(found: Sequence[tuple[Any, str, str, int | None]]) -> pa.Table:
    records = [f[0] for f in found]
    return pa.Table.from_arrays(
        [
            pa.array([r.topic for r in records], pa.string()),
            pa.array([r.partition for r in records], pa.int32()),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([_timestamp(r.timestamp) for r in records], _TIMESTAMP),
            pa.array([r.key for r in records], pa.binary()),
            _headers(records),
            pa.array([r.value for r in records], pa.binary()),
            pa.array([f[1] for f in found], pa.string()),
            pa.array([f[2] for f in found], pa.string()),
            pa.array([f[3] for f in found], pa.int32()),
        ],
        schema=ERRORS_SCHEMA,
    )

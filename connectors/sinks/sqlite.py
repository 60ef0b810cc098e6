"""The SQLite sink: predictions, the latest result per item, corrections and model events in one file.

Tables (times are epoch milliseconds, UTC: ``datetime(classified_at / 1000, 'unixepoch')``; lists and maps are
JSON text: ``json_extract(probabilities, '$.product')``). Each table fed from Kafka begins with kafka_topic,
kafka_partition, kafka_offset (its primary key), kafka_timestamp, kafka_key and kafka_headers (JSON
``[[name, text], …]`` or null; e.g. the header of a replayed record).

- ``predictions`` — one row per ClassifiedItem record read (nomenclature.classified and, when asked for,
  nomenclature.shadow or a nomenclature.backfill.<name>): id, the item's fields (name, full_name, kind,
  unit, type_hint, okved_code, hs_code, country, region, source, created_at, item_label = the label the
  source supplied), label, confidence, probabilities, top_k, explanation, warnings, model_version,
  featurizer_version, source_topic, source_partition, source_offset, source_timestamp, classified_at.
  Indexed by id, by model_version and by classified_at.
- ``items`` — one row per item id: its fields and its latest champion result (label, confidence,
  model_version, classified_at) and that prediction's position. Latest = highest classified_at, then the
  later (partition, offset); the update does not depend on the order rows arrive in. From
  nomenclature.classified only (or a topic given as ``TOPIC=nomenclature.classified``), never the shadow or a
  backfill. Indexed by label and by model_version.
- ``corrections`` — one row per Correction record: id, name, full_name, label, the
  corrected fields (kind … source), user, comment, model_version, corrected_at (the record's, or its Kafka
  timestamp when null, as the service reads it), corrected_at_given (0 when it was null). Every record of
  the topic, including those the worker refused (they are on nomenclature.rejected with stage
  ``correction``). View ``latest_corrections``: the latest per id (corrected_at, then position); view
  ``items_corrected``: items with their latest correction's label and time.
- ``models`` — one row per ModelEvent on nomenclature.models: registry_id, event, alias,
  version, artifact, sha256, previous, reason, details (JSON text), by, at.
- ``model_versions`` — the model registry's records (NOMENCLATURE_MODELS_DIR), when the sink is given one:
  version, created_at, featurizer and sklearn versions, artifact and its sha256, training data sha256 and
  rows, macro_f1, accuracy, notes, aliases (comma-separated), record (the whole record as JSON). Refreshed at
  start and after model events; not from Kafka, so outside the guarantee below.
- ``sink_errors`` — records that could not be decoded, with the same position key: kafka_timestamp, kafka_key
  and value (the raw bytes), error_code, error_message, schema_id.
- ``sink_offsets`` — (topic, partition) → next_offset, updated_at: where the sink resumes.

Guarantee: exactly once into SQLite. A flush inserts its rows and moves ``sink_offsets`` past them in one
transaction, and the sink resumes from ``sink_offsets`` (the consumer group's offsets are committed after each
transaction for monitoring only). A crash before the commit rolls both back; after it, nothing is read twice.
Rows are inserted with INSERT OR IGNORE on their position and offsets only move forward, so even two sinks on
one file write each record once. The database is in WAL mode with synchronous=NORMAL: a power cut may lose
the last transactions, rows and offsets together, and they are read again.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from connectors.sinks.topic_consumer import Log, SinkError, stderr_log, topic_spec
from schemas import CORRECTED_FIELDS, ITEM_SCHEMA, AvroSerde, Catalogue, DecodeError, to_millis
from schemas.avsc import full_name
from streams.topics import CLASSIFIED, CORRECTIONS, MODELS, TOPICS

if TYPE_CHECKING:
    from models.registry.model_registry import ModelRegistry

DEFAULT_TOPICS = (CLASSIFIED, CORRECTIONS, MODELS)
_KAFKA = """kafka_topic TEXT NOT NULL, kafka_partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL,
    kafka_timestamp INTEGER, kafka_key TEXT, kafka_headers TEXT"""
# the item's fields as columns; its own label is `item_label`, beside the predicted one
_ITEM_FIELDS = (*(f["name"] for f in ITEM_SCHEMA["fields"] if f["name"] not in ("id", "label")), "item_label")
_ITEM_COLUMNS = ", ".join(f"{c} INTEGER" if c == "created_at" else f"{c} TEXT" for c in _ITEM_FIELDS)

SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS predictions (
    {_KAFKA},
    id TEXT NOT NULL, {_ITEM_COLUMNS},
    label TEXT NOT NULL, confidence REAL NOT NULL, probabilities TEXT NOT NULL, top_k TEXT NOT NULL,
    explanation TEXT NOT NULL, warnings TEXT NOT NULL, model_version TEXT NOT NULL,
    featurizer_version TEXT NOT NULL, source_topic TEXT, source_partition INTEGER, source_offset INTEGER,
    source_timestamp INTEGER, classified_at INTEGER NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS predictions_id ON predictions (id, classified_at);
CREATE INDEX IF NOT EXISTS predictions_model_version ON predictions (model_version);
CREATE INDEX IF NOT EXISTS predictions_classified_at ON predictions (classified_at);

CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, {_ITEM_COLUMNS},
    label TEXT NOT NULL, confidence REAL NOT NULL, model_version TEXT NOT NULL,
    classified_at INTEGER NOT NULL,
    kafka_topic TEXT NOT NULL, kafka_partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_label ON items (label);
CREATE INDEX IF NOT EXISTS items_model_version ON items (model_version);

CREATE TABLE IF NOT EXISTS corrections (
    {_KAFKA},
    id TEXT NOT NULL, name TEXT, full_name TEXT, label TEXT,
    kind TEXT, unit TEXT, type_hint TEXT, okved_code TEXT, hs_code TEXT, country TEXT, region TEXT,
    source TEXT, user TEXT, comment TEXT, model_version TEXT, corrected_at INTEGER NOT NULL,
    corrected_at_given INTEGER NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS corrections_id ON corrections (id, corrected_at);

CREATE VIEW IF NOT EXISTS latest_corrections AS
SELECT * FROM corrections AS c WHERE NOT EXISTS (
    SELECT 1 FROM corrections AS d WHERE d.id = c.id
    AND (d.corrected_at, d.kafka_partition, d.kafka_offset)
        > (c.corrected_at, c.kafka_partition, c.kafka_offset)
);
CREATE VIEW IF NOT EXISTS items_corrected AS
SELECT i.*, c.label AS corrected_label, c.corrected_at AS corrected_at
FROM items AS i LEFT JOIN latest_corrections AS c ON c.id = i.id;

CREATE TABLE IF NOT EXISTS models (
    {_KAFKA},
    registry_id TEXT NOT NULL, event TEXT NOT NULL, alias TEXT NOT NULL, version TEXT, artifact TEXT,
    sha256 TEXT, previous TEXT, reason TEXT, details TEXT, by TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS models_version ON models (version);

CREATE TABLE IF NOT EXISTS model_versions (
    version TEXT PRIMARY KEY, created_at TEXT, featurizer_version TEXT, sklearn_version TEXT,
    artifact TEXT, artifact_sha256 TEXT, data_sha256 TEXT, data_rows INTEGER, macro_f1 REAL, accuracy REAL,
    notes TEXT, aliases TEXT, record TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sink_errors (
    kafka_topic TEXT NOT NULL, kafka_partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL,
    kafka_timestamp INTEGER, kafka_key BLOB, value BLOB, error_code TEXT NOT NULL,
    error_message TEXT NOT NULL, schema_id INTEGER,
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);

CREATE TABLE IF NOT EXISTS sink_offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

# What a topic's records become, by their schema (and for ClassifiedItem, whether they are the champion's).
CLASSIFIED_KIND, CORRECTIONS_KIND, MODELS_KIND = "classified", "corrections", "models"
OTHER_PREDICTIONS_KIND = "other predictions"  # shadow, backfills: into predictions, never into items
_KIND_OF_SCHEMA = {
    "nomenclature.ClassifiedItem": CLASSIFIED_KIND,
    "nomenclature.Correction": CORRECTIONS_KIND,
    "nomenclature.ModelEvent": MODELS_KIND,
}


def parse_topic(text: str) -> tuple[str, str | None]:
    """``TOPIC`` or ``TOPIC=SCHEMA`` (a topic whose records have SCHEMA, e.g. ``nomenclature.classified``;
    Kafka topic names cannot contain ``=``)."""
    topic, _, schema = text.partition("=")
    return topic, schema or None


class _Topic:
    def __init__(self, text: str, catalogue: Catalogue) -> None:
        self.name, schema = parse_topic(text)
        spec = topic_spec(self.name, schema)
        kind = _KIND_OF_SCHEMA.get(full_name(spec.schema))
        if kind is None:
            usable = ", ".join(t for t in TOPICS if full_name(TOPICS[t].schema) in _KIND_OF_SCHEMA)
            raise SinkError(
                f"the SQLite sink has no table for {self.name!r} ({full_name(spec.schema)} records); "
                f"it takes topics with the records of {usable}"
            )
        if kind == CLASSIFIED_KIND and CLASSIFIED not in (self.name, schema):
            kind = OTHER_PREDICTIONS_KIND
        self.kind = kind
        self.serde = AvroSerde(catalogue, spec.subject, spec.schema)


class SqliteSink:
    """See the module docstring. Use as a context manager (it holds the connection)."""

    name = "sink sqlite"

    def __init__(
        self,
        db: Path,
        topics: Iterable[str],
        catalogue: Catalogue,
        *,
        registry: ModelRegistry | None = None,
        log: Log = stderr_log,
    ) -> None:
        self.db = Path(db)
        self.topics = {t.name: t for t in (_Topic(text, catalogue) for text in topics)}
        self.registry = registry
        self.log = log
        self.conn: sqlite3.Connection | None = None
        self._buffers: dict[TopicPartition, list[Any]] = {}
        self._buffered = 0
        self.counts = dict.fromkeys(("predictions", "corrections", "models", "undecodable", "duplicates"), 0)

    @property
    def topic_names(self) -> list[str]:
        return list(self.topics)

    def __enter__(self) -> SqliteSink:
        self.conn = connect(self.db)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError("SqliteSink is used outside its `with` block")
        return self.conn

    def start_positions(
        self, committed: Mapping[TopicPartition, int | None], ends: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        stored = stored_offsets(self._db())
        positions = {tp: stored.get((tp.topic, tp.partition)) for tp in committed}
        self.log(
            f"{self.name}: {', '.join(self.topics)} -> {self.db}; resuming "
            + ", ".join(
                f"{tp.topic}[{tp.partition}] at {'the beginning' if p is None else p}"
                for tp, p in positions.items()
            )
        )
        self._refresh_registry()
        return positions

    def add(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        self._buffers.setdefault(tp, []).extend(records)
        self._buffered += len(records)

    @property
    def buffered(self) -> int:
        return self._buffered

    def flush(self) -> dict[TopicPartition, int]:
        rows: dict[str, list[tuple[Any, ...]]] = {
            "predictions": [],
            "items": [],
            "corrections": [],
            "models": [],
        }
        errors: list[tuple[Any, ...]] = []
        for tp, records in self._buffers.items():
            topic = self.topics[tp.topic]
            for record in records:
                try:
                    key = None if record.key is None else record.key.decode("utf-8")
                    value = topic.serde.decode(record.value)
                except UnicodeDecodeError as exc:
                    errors.append(
                        _error_row(record, "invalid_key_utf8", f"key is not UTF-8: {exc.reason}", None)
                    )
                    continue
                except DecodeError as exc:
                    errors.append(_error_row(record, exc.code, exc.message, exc.schema_id))
                    continue
                _rows_of(topic.kind, record, key, value, rows)
        positions = {tp: records[-1].offset + 1 for tp, records in self._buffers.items() if records}
        conn = self._db()
        with transaction(conn):
            for table, found in rows.items():
                if found and table != "items":
                    inserted = _insert(conn, table, found)
                    self.counts[table] += inserted
                    self.counts["duplicates"] += len(found) - inserted
            if rows["items"]:
                conn.executemany(_ITEMS_UPSERT, rows["items"])
            if errors:
                inserted = _insert(conn, "sink_errors", errors)
                self.counts["undecodable"] += inserted
                codes = Counter(e[6] for e in errors)
                listed = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items()))
                self.log(
                    f"{self.name}: {len(errors)} undecodable record(s) ({listed}), {inserted} new in "
                    "sink_errors"
                )
            now = int(time.time() * 1000)
            conn.executemany(
                "INSERT INTO sink_offsets (topic, partition, next_offset, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (topic, partition) DO UPDATE SET "
                "next_offset = max(next_offset, excluded.next_offset), updated_at = excluded.updated_at",
                [(tp.topic, tp.partition, offset, now) for tp, offset in positions.items()],
            )
        self._buffers.clear()
        self._buffered = 0
        if rows["models"]:
            self._refresh_registry()
        return positions

    def _refresh_registry(self) -> None:
        if self.registry is None:
            return
        if not self.registry.index_path.is_file():
            self.log(f"{self.name}: no model registry at {self.registry.root}; model_versions stays empty")
            return
        aliases = self.registry.aliases()
        rows = []
        for record in self.registry.list():
            metrics = record.metrics or {}
            held = sorted(alias for alias, version in aliases.items() if version == record.version)
            rows.append(
                (
                    record.version,
                    record.created_at,
                    record.featurizer_version,
                    record.sklearn_version,
                    record.artifact,
                    record.artifact_sha256,
                    record.data_sha256,
                    sum(int(n) for n in (record.data_rows or {}).values()),
                    metrics.get("macro_f1"),
                    metrics.get("accuracy"),
                    record.notes,
                    ",".join(held),
                    json.dumps(asdict(record), ensure_ascii=False, default=str),
                )
            )
        with transaction(self._db()) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    def report(self) -> dict[str, Any]:
        return {"db": str(self.db), **self.counts}


def connect(db: Path) -> sqlite3.Connection:
    """The database, created with the sink's schema if new, in WAL mode."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA_SQL)
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on an exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def stored_offsets(conn: sqlite3.Connection) -> dict[tuple[str, int], int]:
    return {(t, p): o for t, p, o in conn.execute("SELECT topic, partition, next_offset FROM sink_offsets")}


def _insert(conn: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> int:
    """INSERT OR IGNORE the rows; the number actually inserted."""
    placeholders = ", ".join("?" * len(rows[0]))
    before = conn.total_changes
    conn.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({placeholders})", rows)
    return conn.total_changes - before


_ITEM_TABLE_COLUMNS = (
    "id",
    *_ITEM_FIELDS,
    "label",
    "confidence",
    "model_version",
    "classified_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)
_ITEMS_UPSERT = (
    f"INSERT INTO items ({', '.join(_ITEM_TABLE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_ITEM_TABLE_COLUMNS))}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ITEM_TABLE_COLUMNS[1:])
    + " WHERE (excluded.classified_at, excluded.kafka_partition, excluded.kafka_offset)"
    " > (items.classified_at, items.kafka_partition, items.kafka_offset)"
)


def _ms(value: Any) -> int | None:
    return to_millis(value) if isinstance(value, datetime | int) else None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _kafka(record: Any, key: str | None) -> tuple[Any, ...]:
    timestamp = record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None
    headers = [
        [k, v.decode("utf-8", "backslashreplace") if v is not None else None] for k, v in record.headers
    ]
    return (
        record.topic,
        record.partition,
        record.offset,
        timestamp,
        key,
        _json(headers) if headers else None,
    )


def _error_row(record: Any, code: str, message: str, schema_id: int | None) -> tuple[Any, ...]:
    timestamp = record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None
    return (
        record.topic,
        record.partition,
        record.offset,
        timestamp,
        record.key,
        record.value,
        code,
        message,
        schema_id,
    )


def _rows_of(
    kind: str, record: Any, key: str | None, value: dict[str, Any], rows: dict[str, list[Any]]
) -> None:
    kafka = _kafka(record, key)
    if kind in (CLASSIFIED_KIND, OTHER_PREDICTIONS_KIND):
        item = value["item"]
        fields = tuple(
            _ms(item.get("created_at"))
            if f == "created_at"
            else item.get("label" if f == "item_label" else f)
            for f in _ITEM_FIELDS
        )
        source = value["source"]
        classified_at = _ms(value["classified_at"])
        rows["predictions"].append(
            (
                *kafka,
                value["id"],
                *fields,
                value["label"],
                value["confidence"],
                _json(value["probabilities"]),
                _json(value["top_k"]),
                _json(value["explanation"]),
                _json(value["warnings"]),
                value["model_version"],
                value["featurizer_version"],
                source["topic"],
                source["partition"],
                source["offset"],
                _ms(source.get("timestamp")),
                classified_at,
            )
        )
        if kind == CLASSIFIED_KIND:
            rows["items"].append(
                (
                    value["id"],
                    *fields,
                    value["label"],
                    value["confidence"],
                    value["model_version"],
                    classified_at,
                    record.topic,
                    record.partition,
                    record.offset,
                )
            )
    elif kind == CORRECTIONS_KIND:
        corrected = value.get("corrected_fields") or {}
        given = _ms(value.get("corrected_at"))
        rows["corrections"].append(
            (
                *kafka,
                value["id"],
                value.get("name"),
                value.get("full_name"),
                value.get("label"),
                *(corrected.get(f) for f in CORRECTED_FIELDS),
                value.get("user"),
                value.get("comment"),
                value.get("model_version"),
                given if given is not None else kafka[3],  # the Kafka timestamp
                int(given is not None),
            )
        )
    else:
        rows["models"].append(
            (
                *kafka,
                *(value.get(f) for f in ("registry_id", "event", "alias", "version", "artifact", "sha256")),
                *(value.get(f) for f in ("previous", "reason", "details", "by")),
                _ms(value["at"]),
            )
        )

"""Faust tables written a micro-batch at a time: the per-item state and the drift windows' counts.

Each is a normal Faust ``Table`` (rocksdict driver, changelog topic, recovery, standbys), but it is
written a micro-batch at a time: one RocksDB ``WriteBatch`` per partition and the changelog records
through the batching producer, instead of Faust's per-key ``__setitem__`` (which sends each changelog
record through the ≈ 270 µs/record path and capped the pipeline at ≈ 2k items/s here).
As Faust does, the table partition is the source record's partition and the delivered changelog offset
is persisted in the partition's RocksDB so that recovery resumes from it.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import TP
from rocksdict import WriteBatch

from streams.pipeline.emit import BatchProducer, Delivered
from streams.pipeline.messages import OutRecord, TableUpdate

ITEMS = "items"
DRIFT_WINDOWS = "drift_windows"
DRIFT_MONITOR = "drift_monitor"
CORRECTIONS = "corrections"
SHADOW = "shadow"
LIFECYCLE = "lifecycle"
REVIEW = "review"
HELP = {
    ITEMS: "Per-item state: content hash, source position, feature digest, label, model version(s).",
    DRIFT_WINDOWS: "Per source partition: stream time and the bin counts of the open drift windows.",
    DRIFT_MONITOR: "Merged drift windows, episodes, history (one partition, as <app id>-drift-counts).",
    CORRECTIONS: "Per item id: its latest correction (label, corrected_at, user, comment, position).",
    SHADOW: "Per source partition and challenger|champion pair: items scored by both, agreements, pairs.",
    REVIEW: "Per item id put in the review queue: when, why, its uncertainty and model version.",
    LIFECYCLE: "Retraining cycles, triggers and merged shadow counts (one partition, as <app id>-lifecycle).",
}


def declare(app: faust.App, name: str, partitions: int) -> faust.Table:
    return app.Table(
        name,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        help=HELP[name],
        options={"driver": "rocksdict"},
    )


def assigned_actives(app: faust.App) -> frozenset[TP]:
    """The partitions actively assigned to this worker (empty before the first assignment)."""
    try:
        return frozenset(app.assignor.assigned_actives())
    except Exception:  # not assigned yet
        return frozenset()


def settling(app: faust.App) -> bool:
    """A rebalance or a table recovery is in progress: one-partition state may be about to move."""
    return bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))


async def wait_settled(app: faust.App, seconds: float = 60.0) -> None:
    """Hold on while a rebalance or recovery is in progress (at most `seconds`)."""
    for _ in range(int(seconds * 10)):
        if not settling(app):
            return
        await asyncio.sleep(0.1)


class BatchedTable:
    """A table with JSON values keyed by text, written in batches; partitioned like its source topic."""

    def __init__(self, table: faust.Table) -> None:
        self.table = table

    @property
    def changelog_topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def _db(self, partition: int) -> Any:
        return self.table.data._db_for_partition(partition)

    def get(self, partition: int, key: str) -> dict[str, Any] | None:
        raw = self._db(partition).get(key.encode("utf-8"))
        return None if raw is None else json.loads(raw)

    def stage(self, updates: Sequence[TableUpdate]) -> list[OutRecord]:
        """Write ``updates`` to RocksDB and return their changelog records (to produce with the outputs);
        an update without a value deletes the key (a tombstone in the changelog)."""
        batches: dict[int, WriteBatch] = defaultdict(lambda: WriteBatch(raw_mode=True))
        records = []
        topic = self.changelog_topic
        for update in updates:
            key = update.key.encode("utf-8")
            if update.value is None:
                batches[update.partition].delete(key)
            else:
                batches[update.partition].put(key, update.value)
            records.append(OutRecord(topic, key, update.value, None, partition=update.partition))
        for partition, batch in batches.items():
            self._db(partition).write(batch)
        return records

    def persisted(self, delivered: Sequence[Delivered]) -> None:
        """Remember the highest delivered changelog offset per partition, as Faust's own path does."""
        topic = self.changelog_topic
        highest: dict[int, int] = {}
        for batch in delivered:
            if batch.topic == topic:
                highest[batch.partition] = max(batch.last_offset, highest.get(batch.partition, -1))
        for partition, offset in highest.items():
            self.table.data.set_persisted_offset(TP(topic, partition), offset)

    async def deliver(
        self, producer: BatchProducer, records: Sequence[OutRecord], updates: Sequence[TableUpdate]
    ) -> None:
        """Write `updates`, then produce `records` with the changelog and remember the changelog offsets."""
        changelog = self.stage(updates)
        if records or changelog:
            self.persisted(await producer.send_all([*records, *changelog]))

    def items(self, partition: int) -> dict[str, Any]:
        """Every key of a partition with its decoded value (Faust's own bookkeeping keys left out)."""
        out = {}
        for key, raw in self._db(partition).items():
            if isinstance(key, bytes) and not key.startswith(b"__faust"):
                out[key.decode("utf-8")] = json.loads(raw)
        return out

    def key_count(self) -> int:
        """Keys in this worker's partitions (RocksDB's estimate, which counts the offset bookkeeping key)."""
        return sum(
            db.property_int_value("rocksdb.estimate-num-keys") or 0
            for db in list(self.table.data._dbs.values())
        )

"""The records the pipeline reads and writes, independent of Faust."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class RawMessage(NamedTuple):
    """One record as read from a raw topic (a tuple: cheap to pickle to the scoring process)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    replayed: bool = False  # carries the replay header (`nomenclature replay`): reprocessed on purpose

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def source(self) -> dict[str, Any]:
        """The SourcePosition record of the output schemas."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
        }


@dataclass(slots=True)
class OutRecord:
    """A record to produce: Avro value bytes, key bytes, the source's event time."""

    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone
    timestamp_ms: int | None
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class TableUpdate(NamedTuple):
    """A new value (JSON) for a batched table's key, in the source record's partition; None deletes."""

    partition: int
    key: str
    value: bytes | None


class DriftObservation(NamedTuple):
    """One classified item as the drift monitor counts it: its bin per baseline feature."""

    partition: int
    timestamp_ms: int
    bins: tuple[int, ...]


class ShadowObservation(NamedTuple):
    """One item scored by both the champion and the challenger: whether they gave it the same label."""

    partition: int
    agreed: bool


class ReviewCandidate(NamedTuple):
    """A classified item the review queue may take: its partition, id, the champion's confidence, whether
    the challenger disagreed, and the encoded ClassifiedItem of each (the challenger's empty without one)."""

    partition: int
    item_id: str
    confidence: float
    disagreed: bool
    value: bytes
    shadow_value: bytes = b""

    @property
    def uncertainty(self) -> float:
        return round(1.0 - self.confidence + (1.0 if self.disagreed else 0.0), 6)


@dataclass(slots=True)
class BatchResult:
    outputs: list[OutRecord] = field(default_factory=list)
    table_updates: list[TableUpdate] = field(default_factory=list)
    drift: list[DriftObservation] = field(default_factory=list)
    shadow: list[ShadowObservation] = field(default_factory=list)
    review: list[ReviewCandidate] = field(default_factory=list)  # `streams.review.queue`
    # (topic, outcome, code): outcome is classified | rejected | duplicate; code '' unless rejected
    counts: list[tuple[str, str, str]] = field(default_factory=list)

"""Which records of a topic a replay or an offset reset means: per partition, a half-open offset range.

A selection bound is an offset or a time. ``--from-*`` is inclusive, ``--to-*`` exclusive, for offsets and
times alike: ``--from-time T`` starts at the first record whose timestamp is ≥ T, ``--to-time U`` stops
before the first record whose timestamp is ≥ U (the meaning of Kafka's ``offsets_for_times``).

Time bounds are found per partition in two ways. The broker's ``offsets_for_times`` answer is checked
against the records themselves (the one it names must be at or after T, the one before it earlier) and
used only when it holds; the embedded broker (Tansu 0.6.0) answers 0 for every past time, so there — or
wherever the answer is wrong — the boundary is found by binary search over the records' own timestamps,
about log2(records) single-record fetches per partition. Both assume timestamps that do not go backwards
within a partition (producer CreateTime from one clock, or LogAppendTime), as Kafka's time index does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.runtime.broker_quirks import fetched_end_offsets
from streams.runtime.topic_metadata import partitions_by_topic

FETCH_WAIT_MS = 10  # Tansu holds a fetch for its full wait even when records are there


class SelectionError(ValueError):
    """A selection the topic cannot satisfy, or one that does not parse."""


@dataclass(frozen=True)
class Bound:
    """One end of a selection: an offset for every partition, offsets per partition, or a time."""

    offsets: Mapping[int, int] | None = None  # partition -> offset; key -1: every partition
    time_ms: int | None = None

    def offset_for(self, partition: int) -> int | None:
        if self.offsets is None:
            return None
        return self.offsets.get(partition, self.offsets.get(-1))


@dataclass(frozen=True)
class PartitionRange:
    """Offsets [start, stop) of one partition, and how they were found."""

    topic: str
    partition: int
    start: int
    stop: int
    log_start: int
    log_end: int
    found_by: str  # "offsets", "log bounds", "broker time index (verified)", "timestamp search (N reads)"
    first_timestamp: int | None = None
    last_timestamp: int | None = None

    @property
    def records(self) -> int:
        """Offsets in the range: the record count on a log without compaction or transaction markers."""
        return max(self.stop - self.start, 0)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "records": self.records}


def parse_offsets(text: str) -> dict[int, int]:
    """``"120"`` (every partition) or ``"0:120,3:7"`` (per partition) as {partition: offset} (-1 = all)."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return {-1: int(text)}
    out: dict[int, int] = {}
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", part)
        if match is None:
            raise SelectionError(f"offsets {text!r}: expected N or PARTITION:N[,PARTITION:N…]")
        partition, offset = int(match[1]), int(match[2])
        if partition in out:
            raise SelectionError(f"offsets {text!r}: partition {partition} given twice")
        out[partition] = offset
    return out


def parse_time(text: str) -> int:
    """An ISO-8601 time (``2026-12-01T10:00:00Z``, ``2026-12-01 10:00+03:00``, ``2026-12-01``) as epoch ms;
    a time without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SelectionError(f"time {text!r} is not ISO 8601 (e.g. 2026-12-01T10:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def parse_bound(offsets: str | None, time_text: str | None) -> Bound | None:
    """A bound from an operator's ``--*-offset`` or ``--*-time`` text (None when neither is given)."""
    if offsets is not None:
        return Bound(offsets=parse_offsets(offsets))
    if time_text is not None:
        return Bound(time_ms=parse_time(time_text))
    return None


def format_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RecordProbe:
    """Reads single records of assigned partitions: the timestamp of the first record at or after an
    offset, one fetch each."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.reads = 0

    async def first_at(self, tp: TopicPartition, offset: int, stop: int) -> ConsumerRecord | None:
        """The first record of ``tp`` with offset in [offset, stop), or None."""
        if offset >= stop:
            return None
        self.consumer.seek(tp, offset)
        self.reads += 1
        for _ in range(200):  # 10 s of empty fetches at most: the log says the record is there
            batch = await self.consumer.getmany(tp, timeout_ms=FETCH_WAIT_MS * 5, max_records=1)
            for record in batch.get(tp, []):
                return record if record.offset < stop else None
            highwater = self.consumer.highwater(tp)
            if highwater is not None and offset >= highwater:
                return None
        raise TimeoutError(f"no record of {tp.topic}[{tp.partition}] at or after offset {offset} arrived")

    async def offset_at_time(self, tp: TopicPartition, time_ms: int, lo: int, hi: int) -> int:
        """The first offset in [lo, hi) whose record's timestamp is ≥ ``time_ms`` (``hi`` when none is)."""
        while lo < hi:
            mid = (lo + hi) // 2
            record = await self.first_at(tp, mid, hi)
            if record is None or record.timestamp >= time_ms:
                hi = mid
            else:
                lo = record.offset + 1
        return lo

    async def broker_answer_holds(
        self, tp: TopicPartition, time_ms: int, answer: int, log_start: int, log_end: int
    ) -> bool:
        """Whether ``answer`` is the first offset at or after ``time_ms``: its record is not earlier, and
        the record before it is."""
        if not log_start <= answer <= log_end:
            return False
        at = await self.first_at(tp, answer, log_end)
        if at is not None and at.timestamp < time_ms:
            return False
        if answer == log_start:
            return True
        before = await self.first_at(tp, answer - 1, answer)
        return before is None or before.timestamp < time_ms


async def plan_ranges(
    bootstrap: str,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    start: Bound | None = None,
    stop: Bound | None = None,
    trust_broker_times: bool = True,
) -> list[PartitionRange]:
    """Per partition of ``topic`` (or of ``partitions``), the offsets the bounds select; no bound = the
    log's start or end (taken now: records written later are not selected)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=FETCH_WAIT_MS
    )
    await consumer.start()
    try:
        existing = (await partitions_by_topic(consumer)).get(topic)
        if not existing:
            raise SelectionError(f"topic {topic!r} does not exist")
        wanted = sorted(existing if partitions is None else set(partitions))
        unknown = sorted(set(wanted) - existing)
        if unknown:
            raise SelectionError(f"topic {topic!r} has partitions {sorted(existing)}, not {unknown}")
        for bound in (start, stop):
            named = set((bound.offsets or {}) if bound else {}) - {-1}
            if named - existing:
                raise SelectionError(f"topic {topic!r} has no partition {sorted(named - existing)}")
        tps = [TopicPartition(topic, p) for p in wanted]
        consumer.assign(tps)
        log_starts = await consumer.beginning_offsets(tps)
        log_ends = await fetched_end_offsets(bootstrap, tps)
        probe = RecordProbe(consumer)
        ranges = []
        for tp in tps:
            ranges.append(
                await _plan_partition(
                    consumer, probe, tp, log_starts[tp], log_ends[tp], start, stop, trust_broker_times
                )
            )
        return ranges
    finally:
        await consumer.stop()


async def _plan_partition(
    consumer: AIOKafkaConsumer,
    probe: RecordProbe,
    tp: TopicPartition,
    log_start: int,
    log_end: int,
    start: Bound | None,
    stop: Bound | None,
    trust_broker_times: bool,
) -> PartitionRange:
    methods: list[str] = []
    reads_before = probe.reads

    async def resolve(bound: Bound | None, default: int) -> int:
        if bound is None:
            methods.append("log bounds")
            return default
        offset = bound.offset_for(tp.partition)
        if offset is not None:
            methods.append("offsets")
            return min(max(offset, log_start), log_end)
        if bound.time_ms is None:
            methods.append("log bounds")
            return default
        if trust_broker_times:
            answer = await _broker_offset_for_time(consumer, tp, bound.time_ms, log_end)
            if await probe.broker_answer_holds(tp, bound.time_ms, answer, log_start, log_end):
                methods.append("broker time index (verified)")
                return answer
        methods.append("timestamp search")
        return await probe.offset_at_time(tp, bound.time_ms, log_start, log_end)

    first = await resolve(start, log_start)
    last = await resolve(stop, log_end)
    last = max(last, first)
    found_by = ", ".join(dict.fromkeys(methods))
    if "timestamp search" in methods or "broker time index (verified)" in methods:
        found_by += f" ({probe.reads - reads_before} reads)"
    first_record = await probe.first_at(tp, first, last)
    last_record = await probe.first_at(tp, last - 1, last) if last > first else None
    return PartitionRange(
        tp.topic,
        tp.partition,
        first,
        last,
        log_start,
        log_end,
        found_by,
        None if first_record is None else first_record.timestamp,
        None if last_record is None else last_record.timestamp,
    )


async def _broker_offset_for_time(
    consumer: AIOKafkaConsumer, tp: TopicPartition, time_ms: int, log_end: int
) -> int:
    answers = await consumer.offsets_for_times({tp: time_ms})
    answer = answers.get(tp)
    return log_end if answer is None else int(answer.offset)


async def read_ranges(
    bootstrap: str, ranges: Iterable[PartitionRange], *, max_records: int = 2000
) -> AsyncIterator[list[ConsumerRecord]]:
    """The records of every range, in offset order per partition, in batches of at most ``max_records``."""
    todo = {TopicPartition(r.topic, r.partition): r for r in ranges if r.records > 0}
    if not todo:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=FETCH_WAIT_MS * 10,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, selected in todo.items():
            consumer.seek(tp, selected.start)
        idle = 0
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=max_records)
            out: list[ConsumerRecord] = []
            for tp, records in batch.items():
                out.extend(record for record in records if record.offset < todo[tp].stop)
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp].stop:
                    del todo[tp]
                    consumer.pause(tp)
            if out:
                idle = 0
                yield out
                continue
            idle += 1
            if idle > 60:  # 30 s without a record of a range the log said was there
                missing = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in todo)
                raise TimeoutError(f"records of {missing} did not arrive within 30 s")
            await asyncio.sleep(0)
    finally:
        await consumer.stop()

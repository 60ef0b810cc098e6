"""The consumer loop the sinks share: assign every partition of the topics, start where the sink says, hand
it the records, flush it by size or age, commit the flushed positions to the consumer group, stop at the
end offsets taken at start (``once``) or when asked to (Ctrl-C, SIGTERM), flushing first.

Partitions are assigned by hand (``assign()`` with a ``group_id``): offsets are committed to the group without
joining it, so there is no rebalance and no wait for Tansu's slow first join. The price: the group does not
share work — two sinks started with one group both read everything. The sinks therefore never take the
group's offsets as the truth: the parquet sink resumes from its files, the SQLite sink from its own table, and
each guards its output against a second writer. Partitions added to a topic while a sink runs are read from
its next start. End offsets come from fetch high-water marks
(`streams.runtime.broker_quirks.fetched_end_offsets`), which every broker answers right.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import load_schema
from streams.runtime.broker_quirks import TANSU_FETCH_MAX_WAIT_MS, fetched_end_offsets
from streams.runtime.topic_metadata import partitions_by_topic
from streams.topics import TOPICS, TopicSpec, spec_for

Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SinkError(Exception):
    """An expected failure of a sink, told to the operator in one line."""


class TopicMissingError(SinkError):
    pass


class PositionBeyondEndError(SinkError):
    """A sink's stored position lies past the partition's end: the topic was most likely recreated."""


def topic_spec(topic: str, schema: str | None = None) -> TopicSpec:
    """The spec of ``topic``: a topic of the service, or any topic whose records have the schema of the topic
    named by ``schema`` (e.g. ``nomenclature.classified``) or of the file ``schemas/<schema>.avsc``."""
    if schema is None:
        try:
            return spec_for(topic)
        except KeyError:
            raise SinkError(
                f"{topic!r} is not a topic of this service; name its records' schema with --schema "
                f"(a topic: {', '.join(TOPICS)}; or a schemas/*.avsc file name, e.g. classified_item)"
            ) from None
    if schema in TOPICS:
        return TopicSpec(topic, TOPICS[schema].schema, f"records of {schema}'s schema")
    try:
        return TopicSpec(topic, load_schema(schema), f"records of schemas/{schema}")
    except (FileNotFoundError, ValueError):
        raise SinkError(
            f"--schema {schema!r} is neither a topic of this service ({', '.join(TOPICS)}) nor a schema "
            "file in schemas/"
        ) from None


class Sink(Protocol):
    """What `run` drives. Positions are next offsets to read; None = the partition's beginning."""

    name: str

    def start_positions(
        self, committed: Mapping[TopicPartition, int | None], ends: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]: ...

    def add(self, tp: TopicPartition, records: Sequence[Any]) -> None: ...

    @property
    def buffered(self) -> int: ...

    def flush(self) -> dict[TopicPartition, int]:
        """Make the buffered records durable; the next offset of each partition flushed."""
        ...

    def report(self) -> dict[str, Any]:
        """The sink's own counts for the summary (files, undecodable records, ...)."""
        ...


@dataclass(frozen=True)
class ConsumeOptions:
    bootstrap: str
    group: str
    once: bool = False
    flush_rows: int = 50_000
    flush_seconds: float = 60.0
    is_tansu: bool = False
    progress_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.flush_rows < 1:
            raise SinkError(f"flush rows must be at least 1, not {self.flush_rows}")
        if self.flush_seconds <= 0:
            raise SinkError(f"flush seconds must be positive, not {self.flush_seconds}")


@dataclass
class _Range:
    start: int | None
    first: int | None = None
    last: int | None = None
    records: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start,
            "first_offset": self.first,
            "last_offset": self.last,
            "records": self.records,
        }


def install_stop_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM set ``stop`` (the sink flushes and exits); a second Ctrl-C interrupts at once."""
    loop = asyncio.get_running_loop()

    def first(signum: int) -> None:
        stop.set()
        loop.remove_signal_handler(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signum, first, signum)


async def run(
    sink: Sink,
    topics: Sequence[str],
    options: ConsumeOptions,
    stop: asyncio.Event | None = None,
    log: Log = stderr_log,
) -> dict[str, Any]:
    """Consume ``topics`` into ``sink`` until the end offsets taken at start (``options.once``) or ``stop``;
    returns the summary (records, per-partition ranges, rate and the sink's report)."""
    stop = stop or asyncio.Event()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap,
        group_id=options.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Tansu holds a fetch for its whole wait even with records waiting (streams/runtime/broker_quirks.py).
        fetch_max_wait_ms=TANSU_FETCH_MAX_WAIT_MS if options.is_tansu else 500,
    )
    try:
        await consumer.start()
        tps = await _partitions(consumer, topics, options.bootstrap)
        consumer.assign(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps}
        ends = await fetched_end_offsets(options.bootstrap, tps)
        positions = sink.start_positions(committed, ends)
        for tp in tps:
            position = positions.get(tp)
            if position is not None and position > ends[tp]:
                raise PositionBeyondEndError(
                    f"{sink.name}: {tp.topic}[{tp.partition}] is to resume at offset {position} but the "
                    f"partition ends at {ends[tp]}: was the topic recreated? Write to a new output."
                )
            if position is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, position)
        ranges = {tp: _Range(positions.get(tp)) for tp in tps}
        loop = _Loop(consumer, sink, options, ranges, ends, log)
        await loop.consume(stop)
        await loop.flush()
        return _summary(sink, topics, options, ranges, time.monotonic() - loop.started)
    finally:
        await consumer.stop()


async def _partitions(
    consumer: AIOKafkaConsumer, topics: Sequence[str], bootstrap: str
) -> list[TopicPartition]:
    known = await partitions_by_topic(consumer)
    tps = []
    for topic in topics:
        partitions = known.get(topic)
        if not partitions:
            raise TopicMissingError(f"topic {topic!r} does not exist on {bootstrap}")
        tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
    return tps


class _Loop:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        sink: Sink,
        options: ConsumeOptions,
        ranges: dict[TopicPartition, _Range],
        ends: Mapping[TopicPartition, int],
        log: Log,
    ) -> None:
        self.consumer = consumer
        self.sink = sink
        self.options = options
        self.ranges = ranges
        self.ends = ends
        self.log = log
        self.pending: set[TopicPartition] = set()
        if options.once:
            self.pending = {tp for tp, r in ranges.items() if (r.start or 0) < ends[tp]}
            paused = [tp for tp in ranges if tp not in self.pending]
            if paused:
                consumer.pause(*paused)
        self.buffered_since: float | None = None
        self.started = time.monotonic()
        self.last_progress = self.started

    async def consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and (not self.options.once or self.pending):
            room = max(self.options.flush_rows - self.sink.buffered, 1)
            batch = await self.consumer.getmany(timeout_ms=250, max_records=min(room, 10_000))
            for tp, records in batch.items():
                self._take(tp, records)
            if not batch and self.options.once:
                await self._check_positions()
            if self._flush_due():
                await self.flush()
            if time.monotonic() - self.last_progress >= self.options.progress_seconds:
                self._progress()

    def _take(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        reached_end = False
        if self.options.once:
            reached_end = bool(records) and records[-1].offset + 1 >= self.ends[tp]
            records = [r for r in records if r.offset < self.ends[tp]]
        if reached_end:
            self._done(tp)
        if not records:
            return
        self.sink.add(tp, records)
        if self.buffered_since is None:
            self.buffered_since = time.monotonic()
        span = self.ranges[tp]
        span.first = records[0].offset if span.first is None else span.first
        span.last = records[-1].offset
        span.records += len(records)

    async def _check_positions(self) -> None:
        """A partition whose last records are not data (transaction markers) ends without a last record."""
        for tp in list(self.pending):
            if await self.consumer.position(tp) >= self.ends[tp]:
                self._done(tp)

    def _done(self, tp: TopicPartition) -> None:
        self.pending.discard(tp)
        self.consumer.pause(tp)

    def _flush_due(self) -> bool:
        if self.buffered_since is None:
            return False
        if self.sink.buffered >= self.options.flush_rows:
            return True
        return time.monotonic() - self.buffered_since >= self.options.flush_seconds

    async def flush(self) -> None:
        self.buffered_since = None
        if not self.sink.buffered:
            return
        positions = self.sink.flush()
        if not positions:
            return
        try:
            await self.consumer.commit(dict(positions))
        except KafkaError as exc:  # the sinks resume from their own output; the group's offsets are for lag
            self.log(f"{self.sink.name}: could not commit offsets to group {self.options.group!r}: {exc!r}")

    def _progress(self) -> None:
        self.last_progress = time.monotonic()
        records = sum(r.records for r in self.ranges.values())
        lag = 0
        for tp, span in self.ranges.items():
            high = self.consumer.highwater(tp)
            position = span.last + 1 if span.last is not None else span.start or 0
            if high is not None:
                lag += max(high - position, 0)
        rate = records / max(self.last_progress - self.started, 1e-9)
        report = ", ".join(f"{k} {v}" for k, v in self.sink.report().items() if isinstance(v, int))
        self.log(f"{self.sink.name}: {records} records read ({rate:,.0f}/s), lag {lag}; {report}")


def _summary(
    sink: Sink,
    topics: Sequence[str],
    options: ConsumeOptions,
    ranges: Mapping[TopicPartition, _Range],
    seconds: float,
) -> dict[str, Any]:
    records = sum(r.records for r in ranges.values())
    return {
        "sink": sink.name,
        "topics": list(topics),
        "group": options.group,
        "mode": "once" if options.once else "follow",
        "records": records,
        "seconds": round(seconds, 3),  # from the first fetch to the last flush
        "records_per_s": round(records / seconds, 1) if seconds > 0 else None,
        "partitions": {f"{tp.topic}[{tp.partition}]": span.as_dict() for tp, span in sorted(ranges.items())},
        **sink.report(),
    }

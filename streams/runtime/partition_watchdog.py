"""Where the worker stands on each source partition, and a watchdog for partitions Faust stops delivering.

faust-streaming can drop records it has fetched for a partition that is momentarily not "active" (during
recovery or a rebalance: `Consumer.getmany` yields only records of active partitions, while aiokafka's
fetch position has already moved past them; upstream: robinhood/faust#583, faust-streaming/faust#629).
The partition then looks idle with lag that never shrinks. Measured here: after a restart with a backlog,
one partition in three runs stopped at a fixed offset with 44 records left.

The partition then either looks idle with lag that never shrinks, or — when later records arrive — has a
hole. Measured here after a restart with a backlog: in about one run in three, partitions stopped at a
fixed offset, or skipped tens of records.

The watchdog seeks such a partition back to its first unprocessed offset, so the records are fetched and
delivered again (at-least-once: a record seen twice is recognised as a re-delivery by the item table):

* a stall: the fetched high-water mark is ahead of what the worker has processed, with no progress and
  nothing in flight for ``STALL_SECONDS``;
* a hole: a micro-batch's record of a partition comes after an offset that was never delivered. Kafka
  logs can have real holes (compaction, transaction markers): a hole found again at the same offset after
  one seek is accepted.

Faust's own `Consumer.seek` is not enough to get the records again: its consumer hands a record on only if
its offset is at least the partition's read offset (the last one handed on) and drops it otherwise, as
already read. A seek lowers the read offset, but records fetched before the seek may be handed on after it
and raise it again, and then the records sought back for are dropped, silently (seen on Kafka under load:
a hole of 179 records on each of 8 partitions sought back, 674 ids never classified). `ReadOffsets`, which
replaces Faust's mapping of read offsets, holds a partition sought back: it reads as nothing read (every
record is handed on, and Faust notes no gap) until the re-fetch begins — a record at or below the highest
offset handed on so far — or the partition is assigned again.

Faust also notes the offsets it skips as a gap, which a commit passes over as if they had been processed
(`Consumer._new_offset`): a crash before the watchdog had them processed again would lose them.
`forget_gaps` takes them out of Faust's gaps as soon as a micro-batch shows the hole (before that micro-batch
is acknowledged) and whenever the watchdog seeks back. Real holes are noted again as the re-fetch reads past
them: by Faust, or by `ReadOffsets` when the re-fetch begins above the offset sought.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP

from streams.runtime.batched_table import assigned_actives
from streams.runtime.stats import Stats
from streams.topics import is_raw_topic

log = logging.getLogger(__name__)
STALL_SECONDS = 10.0


class ReadOffsets(dict[TP, int | None]):
    """Faust's consumer's read offsets (``Consumer._read_offset``), with partitions held after a seek back.

    ``gaps`` is the consumer's ``_gap`` (partition -> IntervalTree of offsets a commit may pass over): when
    the re-fetch of a partition sought back to ``start`` begins above it, the offsets in between do not
    exist (a real hole), and are noted there, as Faust notes the holes it reads past.
    """

    def __init__(self, offsets: dict[TP, int | None] | None = None, gaps: Any = None) -> None:
        super().__init__(offsets or {})
        self.gaps = gaps
        self.held: dict[TP, int] = {}  # held partition -> the offset at or below which its re-fetch begins
        self.starts: dict[TP, int] = {}  # partition -> the offset it was sought back to
        self.highest: dict[TP, int] = {}  # partition -> the highest offset handed on since it was assigned

    def __missing__(self, tp: TP) -> None:
        return None

    def __getitem__(self, tp: TP) -> int | None:
        if self.held and tp in self.held:
            return None
        return super().__getitem__(tp)

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        if self.held and tp in self.held:
            if offset is None or offset <= self.held[tp]:
                del self.held[tp]  # the re-fetch has begun (or the seek itself): Faust's rule holds again
                start = self.starts.pop(tp, None)
                if start is not None and offset is not None and offset > start and self.gaps is not None:
                    self.gaps[tp].addi(start, offset)
            else:
                self.held[tp] = offset  # a record fetched before the seek
        super().__setitem__(tp, offset)
        if offset is not None and offset > self.highest.get(tp, -1):
            self.highest[tp] = offset

    def __delitem__(self, tp: TP) -> None:
        self._release(tp)
        super().__delitem__(tp)

    def pop(self, tp: TP, *default: int | None) -> int | None:  # type: ignore[override]
        self._release(tp)
        return super().pop(tp, *default)

    def update(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        changed = dict(*args, **kwargs)  # type: ignore[call-overload]
        for tp in changed:
            self._release(tp)
        super().update(changed)

    def hold(self, tp: TP, start: int | None = None) -> None:
        """Hand every record of `tp` on until its re-fetch (from `start`, when given) begins: until a record
        at or below the highest one handed on so far comes; call before and after seeking back."""
        current = super().get(tp)
        self.held[tp] = max(
            self.held.get(tp, -1), self.highest.get(tp, -1), -1 if current is None else current
        )
        if start is not None:
            self.starts[tp] = start

    def _release(self, tp: TP) -> None:
        self.held.pop(tp, None)
        self.starts.pop(tp, None)
        self.highest.pop(tp, None)


def forget_gaps(consumer: Any, tp: TP, start: int, end: int | None = None) -> None:
    """Take offsets ``start`` to ``end`` (exclusive; open-ended without it) out of the consumer's gaps.

    Faust notes the offsets it skips as a gap, which lets a commit pass over them as if processed
    (`Consumer._new_offset`). Offsets the worker is going to seek back for must not be passed over before
    they are processed: a crash in between would lose them. Real holes among them are noted again when
    the re-fetch reads past them.
    """
    gaps = getattr(consumer, "_gap", None)
    if gaps is not None and tp in gaps:
        gaps[tp].chop(start, (1 << 63) if end is None else end)


def install_read_offsets() -> None:
    """Every Faust consumer created from now on keeps its read offsets in a `ReadOffsets`."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer, "_nomenclature_read_offsets", False):
        return
    init = Consumer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._read_offset = ReadOffsets(dict(self._read_offset), gaps=self._gap)

    Consumer.__init__ = __init__  # type: ignore[method-assign]
    Consumer._nomenclature_read_offsets = True  # type: ignore[attr-defined]


async def seek_back(app: faust.App, tp: TP, offset: int) -> None:
    """Seek `tp` back to `offset` so that Faust hands its records on again (see the module's doc)."""
    consumer = app.consumer
    offsets = getattr(consumer, "_read_offset", None)
    if isinstance(offsets, ReadOffsets):
        offsets.hold(tp)  # records handed on while seeking
    else:
        log.warning("consumer created before install_read_offsets: records sought back may be dropped")
    forget_gaps(consumer, tp, offset)
    await consumer.seek(tp, offset)
    if isinstance(offsets, ReadOffsets):
        offsets.hold(tp, start=offset)  # Faust's seek has just set the read offset to `offset`


def processed_position(app: faust.App, stats: Stats, tp: TP) -> int | None:
    """The next offset to process on `tp`: after the last delivered record, or — nothing processed since
    start — the group's committed offset (None if unknown)."""
    position = stats.next_offsets.get((tp.topic, tp.partition))
    if position is None:
        position = getattr(app.consumer, "_committed_offset", {}).get(tp)
    return position


def fetched_highwater(app: faust.App, tp: TP) -> int | None:
    try:
        return app.consumer.highwater(tp)
    except Exception:  # not fetched yet
        return None


def caught_up_partitions(app: faust.App, stats: Stats) -> dict[int, bool]:
    """Per active source partition number: whether the worker has processed it, on every raw topic, up to
    the high-water mark of its latest fetch."""
    caught_up: dict[int, bool] = {}
    for tp in assigned_actives(app):
        if is_raw_topic(tp.topic):
            high = fetched_highwater(app, tp)
            done = high is not None and (processed_position(app, stats, tp) or 0) >= high
            caught_up[tp.partition] = caught_up.get(tp.partition, True) and done
    return caught_up


class PartitionWatchdog:
    def __init__(self, app: faust.App, stats: Stats, busy: Callable[[], int]) -> None:
        """``stats`` says what the worker has processed, ``busy`` how many micro-batches it is handling."""
        install_read_offsets()  # before the worker creates its consumer
        self.app = app
        self.stats = stats
        self.busy = busy
        self.seen: dict[TP, tuple[int | None, float]] = {}  # position, when it last changed
        self.reseeks = 0
        self.holes: dict[TP, int] = {}  # partition -> first skipped offset, to seek back to
        self.sought_holes: set[tuple[TP, int]] = set()

    def gap(self, topic: str, partition: int, first_missing: int, next_seen: int) -> None:
        tp = TP(topic, partition)
        if (tp, first_missing) in self.sought_holes:
            log.info(
                "offsets %d-%d of %s:%d do not exist (seen twice): accepted",
                first_missing,
                next_seen - 1,
                topic,
                partition,
            )
            return
        log.warning(
            "offsets %d-%d of %s:%d were skipped by the consumer",
            first_missing,
            next_seen - 1,
            topic,
            partition,
        )
        # now, before the micro-batch that showed the hole is acknowledged and a commit could pass over it
        forget_gaps(self.app.consumer, tp, first_missing, next_seen)
        self.holes.setdefault(tp, first_missing)

    async def check(self, now: float | None = None) -> list[TP]:
        """Seek every stalled source partition back to its first unprocessed offset; returns them."""
        app = self.app
        now = time.monotonic() if now is None else now
        if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
            self.seen.clear()
            return []
        try:
            sources = [tp for tp in app.consumer.assignment() if is_raw_topic(tp.topic)]
        except Exception:  # consumer not started
            return []
        stalled = []
        for tp in sources:
            position = processed_position(app, self.stats, tp)
            before = self.seen.get(tp)
            if before is None or before[0] != position:
                self.seen[tp] = (position, now)
                continue
            high = fetched_highwater(app, tp)
            if position is None or high is None or position >= high or self.busy():
                self.seen[tp] = (position, now)
                continue
            if now - before[1] >= STALL_SECONDS:
                stalled.append(tp)
                self.seen[tp] = (position, now)
        for tp, offset in list(self.holes.items()):
            del self.holes[tp]
            self.sought_holes.add((tp, offset))
            log.warning("seeking %s:%d back to the skipped offset %d", tp.topic, tp.partition, offset)
            await seek_back(app, tp, offset)
            self.reseeks += 1
        for tp in stalled:
            position = processed_position(app, self.stats, tp)
            assert position is not None
            consumer = app.consumer
            log.warning(
                "partition %s:%d stalled at offset %d with %s records fetched beyond it: seeking back "
                "(paused %s, active %s, buffered %s, read offset %s)",
                tp.topic,
                tp.partition,
                position,
                (fetched_highwater(app, tp) or position) - position,
                tp in getattr(consumer, "_paused_partitions", ()),
                tp in (getattr(consumer, "_active_partitions", None) or ()),
                tp in getattr(consumer, "_buffered_partitions", ()),
                getattr(consumer, "_read_offset", {}).get(tp),
            )
            await seek_back(app, tp, position)
            self.reseeks += 1
        return stalled

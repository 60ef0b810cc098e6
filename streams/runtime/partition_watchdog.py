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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import faust
from faust.types import TP

from streams.runtime.batched_table import assigned_actives
from streams.runtime.stats import Stats
from streams.topics import is_raw_topic

log = logging.getLogger(__name__)
STALL_SECONDS = 10.0


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
            await app.consumer.seek(tp, offset)
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
            await app.consumer.seek(tp, position)
            self.reseeks += 1
        return stalled

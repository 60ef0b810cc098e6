"""Seeking a partition back gets its records handed on again (streams/runtime/partition_watchdog.py).

Faust's consumer hands a record on only if ``offset >= read offset`` and then sets the read offset to it
(`faust.transport.consumer.Consumer._drain_messages`); `drain` below applies that rule to a mapping.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import MutableMapping
from types import SimpleNamespace

import faust
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.runtime.partition_watchdog import PartitionWatchdog, ReadOffsets, install_read_offsets, seek_back
from streams.runtime.stats import Stats

TP0 = TP("nomenclature.raw", 0)


def drain(offsets: MutableMapping[TP, int | None], records: range) -> list[int]:
    """The records Faust hands on, in order, and the read offset it leaves."""
    handed = []
    for offset in records:
        read = offsets[TP0]
        if read is None or offset >= read:
            handed.append(offset)
            offsets[TP0] = offset
    return handed


class _Consumer:
    """Faust's consumer as `seek_back` uses it: records fetched before the seek (`stale`) are handed on while
    it seeks, then `Consumer.seek` sets the read offset."""

    def __init__(self, offsets: MutableMapping[TP, int | None], stale: range) -> None:
        self._read_offset = offsets
        self.stale = stale
        self._gap: defaultdict[TP, IntervalTree] = getattr(offsets, "gaps", None) or defaultdict(IntervalTree)

    async def seek(self, tp: TP, offset: int) -> None:
        drain(self._read_offset, self.stale)
        self._read_offset[tp] = offset


def seek(offsets: MutableMapping[TP, int | None], offset: int, stale: range) -> None:
    """The watchdog's `seek_back` on a consumer holding `offsets`."""
    app = SimpleNamespace(consumer=_Consumer(offsets, stale))
    asyncio.run(seek_back(app, TP0, offset))  # type: ignore[arg-type]


class _Commits:
    """What Faust's `Consumer._new_offset` (the offset a commit may move to) reads, for one partition."""

    def __init__(self, committed: int) -> None:
        self._committed_offset = {TP0: committed}
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._gap: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)

    def ack(self, offsets: range) -> None:
        for offset in offsets:
            if offset not in self._acked_index[TP0]:
                self._acked_index[TP0].add(offset)
                self._acked[TP0].append(offset)

    def skip(self, first: int, seen: int) -> None:
        """Faust's `_drain_messages` when record `seen` comes after `first - 1`: `_add_gap(first, seen)`."""
        self._gap[TP0].addi(first, seen + 1)

    def commit(self) -> int:
        """Where commits take the partition now (each moves it to `Consumer._new_offset`'s answer)."""
        while (offset := Consumer._new_offset(self, TP0)) is not None:  # type: ignore[arg-type]
            self._committed_offset[TP0] = offset - 1  # Faust keeps the last offset processed
        return self._committed_offset[TP0] + 1


def test_fausts_own_read_offsets_drop_what_a_seek_back_went_for() -> None:
    offsets: MutableMapping[TP, int | None] = defaultdict(lambda: None)
    assert drain(offsets, range(0, 10)) == list(range(10))
    seek(offsets, 3, stale=range(10, 13))  # Faust's mapping: seek_back cannot hold it
    assert offsets[TP0] == 3
    assert drain(offsets, range(13, 15)) == [13, 14]  # still fetched before the seek
    assert drain(offsets, range(3, 16)) == [14, 15], "the re-fetch: 3-13 dropped as already read"


def test_a_held_partition_hands_the_records_on_again_then_faust_rule_holds_again() -> None:
    offsets = ReadOffsets()
    assert drain(offsets, range(0, 10)) == list(range(10))
    seek(offsets, 3, stale=range(10, 13))
    assert offsets[TP0] is None, "held: reads as nothing read, so Faust notes no gap either"
    assert drain(offsets, range(13, 15)) == [13, 14]  # still fetched before the seek
    assert drain(offsets, range(3, 16)) == list(range(3, 16)), "every record sought back is handed on"
    assert not offsets.held and offsets[TP0] == 15, "the re-fetch ended the hold"
    assert drain(offsets, range(10, 17)) == [15, 16], "and Faust's rule applies again"


def test_a_hold_ends_when_the_partition_is_assigned_again() -> None:
    offsets = ReadOffsets({TP0: 9})
    offsets.hold(TP0)
    offsets.update({TP0: 5})  # Faust's perform_seek on assignment
    assert not offsets.held and offsets[TP0] == 5
    offsets.hold(TP0)
    offsets.pop(TP0, None)  # revoked
    assert not offsets.held and offsets[TP0] is None


def test_a_faust_consumer_keeps_its_read_offsets_in_read_offsets() -> None:
    install_read_offsets()
    app = faust.App("read-offsets-test", broker="kafka://127.0.0.1:1", store="memory://")
    consumer = app.consumer
    assert isinstance(consumer._read_offset, ReadOffsets)
    assert consumer._read_offset[TP0] is None  # as Faust's defaultdict(lambda: None)


def test_a_commit_does_not_pass_over_the_records_the_watchdog_goes_back_for() -> None:
    plain = _Commits(committed=9)
    plain.skip(10, 20)
    plain.ack(range(20, 25))
    assert plain.commit() == 25, "Faust's gap: commits pass over 10-19, never processed"

    commits = _Commits(committed=9)
    watchdog = PartitionWatchdog(SimpleNamespace(consumer=commits), Stats(), lambda: 0)  # type: ignore[arg-type]
    commits.skip(10, 20)
    watchdog.gap(TP0.topic, TP0.partition, 10, 20)  # the micro-batch with 20 shows the hole
    commits.ack(range(20, 25))
    assert commits.commit() == 10, "no commit past 9 until 10-19 are processed"
    assert watchdog.holes == {TP0: 10}
    commits.ack(range(10, 20))  # sought back and processed
    assert commits.commit() == 25


def test_a_re_fetch_that_begins_above_the_offset_sought_notes_a_real_hole() -> None:
    offsets = ReadOffsets(gaps=defaultdict(IntervalTree))
    assert drain(offsets, range(0, 10)) == list(range(10))
    seek(offsets, 3, stale=range(10, 12))
    assert drain(offsets, range(5, 14)) == list(range(5, 14)), "3 and 4 do not exist (transaction markers)"
    noted = [(interval.begin, interval.end) for interval in offsets.gaps[TP0]]
    assert noted == [(3, 5)], "a commit may pass over them, as over Faust's own gaps"

    offsets = ReadOffsets(gaps=defaultdict(IntervalTree))
    drain(offsets, range(0, 10))
    seek(offsets, 3, stale=range(10, 12))
    drain(offsets, range(3, 14))
    assert not offsets.gaps[TP0], "the re-fetch found every offset"

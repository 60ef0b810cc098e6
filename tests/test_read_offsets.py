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
from faust.types import TP

from streams.runtime.partition_watchdog import ReadOffsets, install_read_offsets, seek_back

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

    async def seek(self, tp: TP, offset: int) -> None:
        drain(self._read_offset, self.stale)
        self._read_offset[tp] = offset


def seek(offsets: MutableMapping[TP, int | None], offset: int, stale: range) -> None:
    """The watchdog's `seek_back` on a consumer holding `offsets`."""
    app = SimpleNamespace(consumer=_Consumer(offsets, stale))
    asyncio.run(seek_back(app, TP0, offset))  # type: ignore[arg-type]


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

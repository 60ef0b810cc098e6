"""Counters of one worker since it started: items in, classified, rejected by code, per topic."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from streams.pipeline.messages import RawMessage


class Stats:
    def __init__(self) -> None:
        self.started_at = time.time()
        self.items_in: Counter[str] = Counter()
        self.classified: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.rejected: dict[str, Counter[str]] = defaultdict(Counter)
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.batches = 0
        self.busy_seconds = 0.0

    def record(
        self, messages: Sequence[RawMessage], counts: Iterable[tuple[str, str, str]], seconds: float
    ) -> None:
        self.batches += 1
        self.busy_seconds += seconds
        for message in messages:
            self.items_in[message.topic] += 1
            tp = (message.topic, message.partition)
            self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), message.offset + 1)
        for topic, outcome, code in counts:
            if outcome == "classified":
                self.classified[topic] += 1
            else:
                if outcome == "duplicate":
                    self.duplicates[topic] += 1
                self.rejected[topic][code] += 1

    def topics(self) -> dict[str, Any]:
        names = set(self.items_in) | set(self.classified) | set(self.rejected)
        return {
            topic: {
                "in": self.items_in[topic],
                "classified": self.classified[topic],
                "rejected_items": self.items_in[topic] - self.classified[topic],
                "rejected_by_code": dict(sorted(self.rejected[topic].items())),
                "duplicates": self.duplicates[topic],
            }
            for topic in sorted(names)
        }

"""The review queue, worker side: which classified items are put before a person, and when.

A classified item is a *candidate* when the champion's calibrated confidence is below
``NOMENCLATURE_REVIEW_THRESHOLD`` or, while a challenger is in shadow evaluation, the two models gave it
different labels (`streams.pipeline.micro_batch` marks them). Candidates wait in memory, least certain
first; a token bucket releases them to ``nomenclature.review`` at ``NOMENCLATURE_REVIEW_MAX_PER_HOUR``
(bursts of a minute's worth), each worker at its share of the raw partitions, so the whole cluster keeps
to the budget. Uncertainty orders them: ``1 - confidence``, plus 1 when the models disagree (a
disagreement is always more worth a person's time than a low confidence).

An id is queued at most once: the ``review`` table (RocksDB with a changelog, partitioned like the items
table) remembers every queued id, and an id already waiting in memory is kept once. A candidate that waits
while less certain ones keep coming may be evicted (the queue keeps at most an hour's budget), and the
candidates of a partition this worker no longer owns are dropped: the queue is a sample for people, and its
budget is the point; both are counted (``nomenclature_review_items_total{outcome}``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from schemas import AvroSerde, Catalogue, now_ms
from streams.pipeline.messages import OutRecord, ReviewCandidate, TableUpdate
from streams.settings import Settings
from streams.topics import CLASSIFIED, REVIEW, TOPICS

LOW_CONFIDENCE = "low_confidence"
SHADOW_DISAGREEMENT = "shadow_disagreement"
# seconds between releases: what a reviewer waits at most for the next item, and how often the worker checks
FLUSH_SECONDS = 2.0

# (partition, item id) -> the review table's value
Lookup = Callable[[int, str], dict[str, Any] | None]


class ReviewQueue:
    """Candidates waiting for the budget, least certain first (see the module's doc)."""

    def __init__(
        self,
        settings: Settings,
        lookup: Lookup,
        catalogue: Catalogue,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_hour = settings.review_max_per_hour
        self.threshold = settings.review_threshold
        self.lookup = lookup
        self.clock = clock
        self.classified_serde = AvroSerde(catalogue, TOPICS[CLASSIFIED].subject, TOPICS[CLASSIFIED].schema)
        self.review_serde = AvroSerde(catalogue, TOPICS[REVIEW].subject, TOPICS[REVIEW].schema)
        self.burst = max(1.0, self.per_hour / 60)
        self.tokens = self.burst
        self._refilled = clock()
        self.pending: dict[str, ReviewCandidate] = {}
        self.outcomes: dict[str, int] = dict.fromkeys(("queued", "already_queued", "evicted", "moved"), 0)

    @property
    def enabled(self) -> bool:
        return self.per_hour > 0

    def offer(self, candidates: Sequence[ReviewCandidate]) -> None:
        """Take a micro-batch's candidates: ids already queued or waiting are left out."""
        if not self.enabled:
            return
        for one in candidates:
            waiting = self.pending.get(one.item_id)
            if waiting is not None:
                if one.uncertainty > waiting.uncertainty:  # the item's latest classification is less sure
                    self.pending[one.item_id] = one
                continue
            if self.lookup(one.partition, one.item_id) is not None:
                self.outcomes["already_queued"] += 1
                continue
            self.pending[one.item_id] = one
        if len(self.pending) > 2 * max(self.per_hour, 1):  # amortised: sort once per hour's worth
            self._evict(max(self.per_hour, 1))

    def _evict(self, keep: int) -> None:
        ranked = sorted(self.pending.values(), key=_order)
        self.outcomes["evicted"] += max(0, len(ranked) - keep)
        self.pending = {one.item_id: one for one in ranked[:keep]}

    def release(
        self, partitions: Collection[int], share: float = 1.0
    ) -> tuple[list[OutRecord], list[TableUpdate]]:
        """What the budget lets out now: ReviewItem records of the least certain candidates of `partitions`
        (this worker's raw partitions, `share` of all of them), with the review table's updates."""
        now = self.clock()
        earned = (now - self._refilled) * self.per_hour / 3600 * share
        self.tokens = min(self.burst * share, self.tokens + earned)
        self._refilled = now
        mine = set(partitions)
        moved = [key for key, one in self.pending.items() if one.partition not in mine]
        for key in moved:
            del self.pending[key]
        self.outcomes["moved"] += len(moved)
        count = math.floor(self.tokens)
        if count <= 0 or not self.pending:
            return [], []
        chosen = sorted(self.pending.values(), key=_order)[:count]
        self.tokens -= len(chosen)
        records, updates = [], []
        queued_at = now_ms()
        for one in chosen:
            del self.pending[one.item_id]
            value = self.review_item(one, queued_at)
            key = one.item_id.encode("utf-8")
            records.append(OutRecord(REVIEW, key, self.review_serde.encode(value), queued_at))
            state = {
                "queued_at": queued_at,
                "model_version": value["model_version"],
                "uncertainty": value["uncertainty"],
                "reasons": value["reasons"],
            }
            updates.append(TableUpdate(one.partition, one.item_id, json.dumps(state).encode()))
        self.outcomes["queued"] += len(chosen)
        return records, updates

    def review_item(self, one: ReviewCandidate, queued_at: int) -> dict[str, Any]:
        """The ReviewItem of a candidate, from its ClassifiedItem(s)."""
        classified = self.classified_serde.decode(one.value)
        reasons = []
        if one.confidence < self.threshold:
            reasons.append(LOW_CONFIDENCE)
        challenger = None
        if one.shadow_value:
            shadow = self.classified_serde.decode(one.shadow_value)
            challenger = {
                "model_version": shadow["model_version"],
                "label": shadow["label"],
                "confidence": shadow["confidence"],
            }
        if one.disagreed:
            reasons.append(SHADOW_DISAGREEMENT)
        return {
            "id": one.item_id,
            "item": classified["item"],
            "label": classified["label"],
            "confidence": classified["confidence"],
            "probabilities": classified["probabilities"],
            "explanation": classified["explanation"],
            "model_version": classified["model_version"],
            "challenger": challenger,
            "reasons": reasons,
            "uncertainty": one.uncertainty,
            "source": classified["source"],
            "queued_at": queued_at,
        }


def _order(one: ReviewCandidate) -> tuple[float, str]:
    return (-one.uncertainty, one.item_id)

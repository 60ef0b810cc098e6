"""What the classify agent does with one micro-batch: score it in the scoring process, then — in input order —
deduplicate, count drift and shadow observations, write the tables, deliver every output, and only then
acknowledge the input.

It sits beside `streams.app`, above the packages, because it joins them: the pipeline (`streams.pipeline`),
drift counting (`streams.drift`), shadow counting (`streams.lifecycle`) and the runtime's tables, producer
and watchdog (`streams.runtime`). The drift, lifecycle and web modules use the few of its parts they need.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import faust

from streams.drift.counts import DriftCounter
from streams.lifecycle.shadow import ShadowCounter
from streams.pipeline.emit import BatchProducer
from streams.pipeline.messages import RawMessage
from streams.pipeline.micro_batch import Models, Pipeline
from streams.pipeline.scoring import ModelSpec, Scorer
from streams.review.queue import ReviewQueue
from streams.runtime.batched_table import BatchedTable
from streams.runtime.events import raw_message
from streams.runtime.metrics import WorkerMetrics
from streams.runtime.partition_watchdog import PartitionWatchdog
from streams.runtime.stats import Stats
from streams.settings import Settings

# Micro-batches in flight: while the oldest is finished and delivered, the scoring process works on the
# next and one more waits for it, so it never idles on the worker's delivery round trip (3 gave +5% over 2).
IN_FLIGHT = 3


class Runner:
    """What the agent does with one micro-batch; owns the pipeline, the models, the producer and counters."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        models: Models,
        items: BatchedTable,
        drift: DriftCounter,
        shadow: ShadowCounter,
        review: BatchedTable,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.models = models  # what the next micro-batch is scored with (`swap` replaces it)
        self.scorer = Scorer(settings, pipeline, models)
        self.items = items
        self.drift = drift
        self.shadow = shadow
        self.review_table = review
        self.review = ReviewQueue(settings, review.get, pipeline.catalogue)
        self.shadow_partitions: set[int] | None = None
        self._drift_partitions: frozenset[int] | None = None
        self.busy = 0  # micro-batches being handled
        self.watchdog: PartitionWatchdog | None = None
        self.producer = BatchProducer(settings.bootstrap_servers)
        self.stats = Stats()
        self.metrics = WorkerMetrics(settings.dashboard_refresh_seconds)
        self.unsubscribed_sources: set[str] = set()  # raw topics created after this worker started

    async def consume(self, stream: faust.StreamT) -> None:
        """The classify agent's loop: up to IN_FLIGHT micro-batches, finished in order. An input is
        acknowledged (its offset may be committed) only by `handle`, after its outputs are delivered: the
        extra reference taken here keeps `take_events` from acknowledging it when the loop moves on."""
        within = self.settings.batch_within_ms / 1000
        in_flight: deque[asyncio.Future[None]] = deque()
        try:
            async for events in stream.take_events(self.settings.batch_size, within=within):
                batch = list(events)
                for event in batch:
                    event.message.incref()
                previous = in_flight[-1] if in_flight else None
                in_flight.append(asyncio.ensure_future(self.handle(batch, previous, stream)))
                while in_flight and (len(in_flight) >= IN_FLIGHT or in_flight[0].done()):
                    await in_flight.popleft()
        finally:
            for task in in_flight:
                task.cancel()

    async def handle(
        self, events: list[faust.EventT], previous: asyncio.Future[None] | None, stream: faust.StreamT
    ) -> None:
        """Score, then — after the previous batch is done, so table state and outputs stay in order —
        deduplicate, write the item table, deliver every output, and only then acknowledge the input."""
        self.busy += 1
        try:
            await self._handle(events, previous, stream)
        finally:
            self.busy -= 1

    async def _handle(
        self, events: list[faust.EventT], previous: asyncio.Future[None] | None, stream: faust.StreamT
    ) -> None:
        started = time.perf_counter()
        models = self.models  # one batch, one set of models: a swap takes effect at the next batch
        messages = [raw_message(event) for event in events]
        scored, scoring_seconds = await self.scorer.score(messages, models)
        if previous is not None:
            await previous
        self._find_gaps(messages)
        result = self.pipeline.finish(messages, scored, self.items.get)
        drift_updates = self.drift.observe(result.drift, models.champion.version, models.baseline)
        shadow_updates = []
        if models.challenger is not None and result.shadow:
            shadow_updates = self.shadow.observe(
                result.shadow, models.challenger.version, models.champion.version
            )
        changelog = (
            self.items.stage(result.table_updates)
            + self.drift.table.stage(drift_updates)
            + self.shadow.table.stage(shadow_updates)
        )
        delivered = await self.producer.send_all(result.outputs + changelog)
        for table in (self.items, self.drift.table, self.shadow.table):
            table.persisted(delivered)
        delivered_at = time.time()
        for event in events:
            await stream.ack(event)
        elapsed = time.perf_counter() - started
        self.stats.record(messages, result.counts, elapsed)
        confidences = [one.confidence for one in scored if one.stage is None]
        self.review.offer(result.review)
        challenger = None if models.challenger is None else models.challenger.version
        self.metrics.batch(messages, result, confidences, scoring_seconds, elapsed, delivered_at, challenger)

    async def swap(self, models: Models) -> None:
        """Score the next micro-batches with `models`, once the scoring processes have loaded them."""
        await self.scorer.preload(ModelSpec.of(models))
        self.models = models
        self.drift.baseline = models.baseline

    def _find_gaps(self, messages: list[RawMessage]) -> None:
        """Offsets Faust skipped (`streams.runtime.partition_watchdog`): the watchdog seeks back to them."""
        expected = dict(self.stats.next_offsets)
        for message in messages:
            tp = (message.topic, message.partition)
            want = expected.get(tp)
            if want is not None and message.offset > want and self.watchdog is not None:
                self.watchdog.gap(message.topic, message.partition, want, message.offset)
            expected[tp] = max(want or 0, message.offset + 1)

    async def report_drift(self, partitions: set[int], caught_up: dict[int, bool]) -> None:
        """Report the drift counts of this worker's active source partitions."""
        if frozenset(partitions) != self._drift_partitions:
            self.drift.rebalanced()
            self._drift_partitions = frozenset(partitions)
        records, closed = self.drift.reports(partitions, caught_up)
        if records:
            await self.producer.send_all(records)
            self.drift.reported(closed)

    async def release_review(self, partitions: set[int], share: float) -> None:
        """Put the candidates the review budget lets out now on nomenclature.review; remember their ids."""
        records, updates = self.review.release(partitions, share)
        if records:
            await self.review_table.deliver(self.producer, records, updates)

    async def report_shadow(self, partitions: set[int]) -> None:
        """Report the shadow counts of this worker's active source partitions, while a challenger runs."""
        models = self.models
        if models.challenger is None:
            return
        if partitions != self.shadow_partitions:
            self.shadow.rebalanced()
            self.shadow_partitions = partitions
        records = self.shadow.reports(partitions, models.challenger.version, models.champion.version)
        if records:
            await self.producer.send_all(records)

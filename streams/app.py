"""The Faust app: raw topics → classify agent (micro-batches) → classified / rejected (and, while a challenger
is in shadow, shadow), plus drift, the model lifecycle and web views."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import faust
from mode import Service

from models.registry import ModelRegistry
from streams import broker_quirks, drift_agents, lifecycle_agents, model_views, views
from streams.batched_table import DRIFT_WINDOWS, ITEMS, SHADOW, BatchedTable, declare
from streams.drift_counts import DriftCounter
from streams.emit import BatchProducer
from streams.messages import RawMessage
from streams.model_events import ModelState, event_record
from streams.model_follower import ModelFollower
from streams.partition_watchdog import PartitionWatchdog
from streams.pipeline import Models, Pipeline
from streams.scoring import ModelSpec, Scorer, build_pipeline, limit_native_threads
from streams.settings import Settings
from streams.shadow import ShadowCounter
from streams.stats import Stats
from streams.topics import CLASSIFIED, DRIFT, MODELS, REJECTED, REPLAY_HEADER
from streams.topics import SHADOW as SHADOW_TOPIC
from streams.topics import raw_topics as raw_topics_now

log = logging.getLogger(__name__)

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
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.models = models  # what the next micro-batch is scored with (`swap` replaces it)
        self.scorer = Scorer(settings, pipeline, models)
        self.items = items
        self.drift = drift
        self.shadow = shadow
        self.shadow_partitions: set[int] | None = None
        self._drift_partitions: frozenset[int] | None = None
        self.busy = 0  # micro-batches being handled
        self.watchdog: PartitionWatchdog | None = None
        self.producer = BatchProducer(settings.bootstrap_servers)
        self.stats = Stats()
        self.unsubscribed_sources: set[str] = set()  # raw topics created after this worker started

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
        scored = await self.scorer.score(messages, models)
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
        for event in events:
            await stream.ack(event)
        self.stats.record(messages, result.counts, time.perf_counter() - started)

    async def swap(self, models: Models) -> None:
        """Score the next micro-batches with `models`, once the scoring processes have loaded them."""
        await self.scorer.preload(ModelSpec.of(models))
        self.models = models
        self.drift.baseline = models.baseline

    def _find_gaps(self, messages: list[RawMessage]) -> None:
        """Offsets Faust skipped (see `streams.partition_watchdog`): the watchdog seeks back to them."""
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


def raw_message(event: faust.EventT) -> RawMessage:
    message = event.message
    timestamp = message.timestamp
    return RawMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=None if timestamp is None else round(timestamp * 1000),
        key=event.key,
        value=event.value,
        replayed=_replayed(message.headers),
    )


def _replayed(headers: Any) -> bool:
    """Whether the record carries the replay header; Faust hands headers over as pairs or as a mapping."""
    if not headers:
        return False
    if isinstance(headers, dict):
        return REPLAY_HEADER in headers
    return any(name == REPLAY_HEADER for name, _ in headers)


def create_app(settings: Settings, raw_topics: list[str], model_state: ModelState) -> faust.App:
    """The worker's app, consuming ``raw_topics`` (see ``streams.topics.raw_topics``), starting with the
    models that ``model_state`` (the control topic, `streams.model_events.read_state`) announces."""
    broker_quirks.apply(settings.is_tansu, settings.bootstrap_servers)
    limit_native_threads()
    registry = ModelRegistry(settings.models_dir)
    pipeline = build_pipeline(settings)
    follower = ModelFollower(registry, pipeline.catalogue, settings.bootstrap_servers, model_state)
    models = follower.load_initial()
    if models.baseline is None:
        log.warning("model %s has no drift baseline: drift is not monitored", models.champion.version)
    settings.tables_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="rocksdb://",
        datadir=str(Path(settings.tables_dir).resolve()),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
        producer_acks=-1,
        **broker_quirks.faust_settings(settings.is_tansu),
    )
    # Faust's pattern subscription does not work with aiokafka ("XXX pattern does not work" in its driver),
    # and changing a running subscription did not get new topics assigned (tried): the topics matching
    # RAW_PATTERN are listed at start; `discover_sources` reports later ones on /health and in the log.
    raw = app.topic(*raw_topics, key_serializer="raw", value_serializer="raw")
    items = BatchedTable(declare(app, ITEMS, settings.partitions))
    drift = DriftCounter(
        settings,
        BatchedTable(declare(app, DRIFT_WINDOWS, settings.partitions)),
        models.baseline,
        pipeline.catalogue,
    )
    shadow_table = BatchedTable(declare(app, SHADOW, settings.partitions))
    shadow = ShadowCounter(settings, shadow_table, pipeline.catalogue)
    runner = Runner(settings, pipeline, models, items, drift, shadow)
    within = settings.batch_within_ms / 1000

    @app.agent(raw, name="classify")
    async def classify(stream: faust.StreamT) -> None:
        # Up to IN_FLIGHT micro-batches, finished in order. An input is acknowledged (its offset may
        # be committed) only by `Runner.handle`, after its outputs are delivered: the extra reference
        # taken here keeps `take_events` from acknowledging it when the loop moves on.
        in_flight: deque[asyncio.Future[None]] = deque()
        try:
            async for events in stream.take_events(settings.batch_size, within=within):
                batch = list(events)
                for event in batch:
                    event.message.incref()
                previous = in_flight[-1] if in_flight else None
                in_flight.append(asyncio.ensure_future(runner.handle(batch, previous, stream)))
                while in_flight and (len(in_flight) >= IN_FLIGHT or in_flight[0].done()):
                    await in_flight.popleft()
        finally:
            for task in in_flight:
                task.cancel()

    monitor = drift_agents.register(app, settings, runner, pipeline.catalogue)
    lifecycle, corrections = lifecycle_agents.register(app, settings, runner, pipeline.catalogue, registry)
    watchdog = PartitionWatchdog(app, runner)
    runner.watchdog = watchdog

    @app.timer(2.0)
    async def watch_partitions() -> None:
        try:
            await watchdog.check()
        except Exception as exc:  # a diagnosis must not stop the worker; the next tick looks again
            log.warning("checking partitions for stalls failed: %r", exc)

    @app.timer(settings.topic_discovery_seconds)
    async def discover_sources() -> None:
        try:
            found = [t for t in await raw_topics_now(settings.bootstrap_servers) if t not in raw.topics]
        except Exception as exc:  # a broker hiccup must not stop the worker; the next tick retries
            log.warning("looking for new raw topics failed: %r", exc)
            return
        new = sorted(set(found) - runner.unsubscribed_sources)
        if new:
            log.warning("new raw topics %s: consumed from the worker's next start", new)
            runner.unsubscribed_sources.update(new)

    @app.service
    class RunnerLifecycle(Service):
        async def on_start(self) -> None:
            tables = (items, drift.table, monitor.table, shadow.table, corrections.table, lifecycle.table)
            outputs = [CLASSIFIED, REJECTED, DRIFT, SHADOW_TOPIC, MODELS, drift.topic, shadow.topic]
            await runner.producer.prepare([*outputs, *(table.changelog_topic for table in tables)])
            await runner.scorer.start()
            if follower.to_announce is not None:  # the control topic had no champion of this registry
                await runner.producer.send_all([event_record(follower.serde, follower.to_announce)])

        @Service.task
        async def _follow_models(self) -> None:
            while not self.should_stop:
                try:
                    await follower.follow(runner.swap)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the broker went away: read on from where it stopped
                    log.warning("following %s failed (%r); reconnecting", MODELS, exc)
                    await asyncio.sleep(2.0)

        async def on_stop(self) -> None:
            runner.scorer.close()
            lifecycle.close()
            await runner.producer.stop()

    views.register(app, settings, runner, monitor)
    model_views.register(app, settings, runner, follower, lifecycle, corrections)
    return app

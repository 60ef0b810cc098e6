"""The Faust app, wired in one place: every topic, table, agent, timer, service and page of a worker.

raw topics → ``classify`` (micro-batches, `streams.runner`) → classified / rejected (and, while a challenger
is in shadow, shadow; uncertain items → review, answered on ``GET /review`` as corrections); window counts →
``drift-monitor`` → alerts; corrections → ``corrections``; alerts → ``drift-trigger`` → retraining requests →
``lifecycle`` (the retraining coordinator); the model control topic → hot swap. What each piece does lives in
the module it comes from; this file says where it is attached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import faust
from faust.types import TP
from mode import Service

from models.registry.model_registry import ModelRegistry
from streams.drift.agents import MonitorHost
from streams.drift.counts import DriftCounter
from streams.lifecycle.agents import TICK_SECONDS, CorrectionsAgent, LifecycleHost
from streams.lifecycle.model_events import ModelState, event_record
from streams.lifecycle.model_follower import ModelFollower
from streams.lifecycle.shadow import ShadowCounter
from streams.pipeline import gc_pauses
from streams.pipeline.scoring import build_pipeline, limit_native_threads
from streams.review import follow as review_follow
from streams.review.board import ReviewBoard
from streams.review.queue import FLUSH_SECONDS as REVIEW_FLUSH_SECONDS
from streams.runner import Runner
from streams.runtime import broker_quirks
from streams.runtime.batched_table import CORRECTIONS as CORRECTIONS_TABLE
from streams.runtime.batched_table import (
    DRIFT_MONITOR,
    DRIFT_WINDOWS,
    ITEMS,
    LIFECYCLE,
    REVIEW,
    SHADOW,
    BatchedTable,
    assigned_actives,
    declare,
    settling,
)
from streams.runtime.partition_watchdog import PartitionWatchdog, caught_up_partitions
from streams.runtime.priority import PriorityScheduler
from streams.settings import Settings
from streams.topics import (
    CLASSIFIED,
    CORRECTIONS,
    DRIFT,
    MODELS,
    REJECTED,
    drift_counts_spec,
    is_raw_topic,
    lifecycle_spec,
)
from streams.topics import REVIEW as REVIEW_TOPIC
from streams.topics import SHADOW as SHADOW_TOPIC
from streams.topics import raw_topics as raw_topics_now
from streams.web import dashboard, metrics_views, model_views, review_view, views
from streams.web.auth import AdminCheck
from streams.web.predict_view import predict_view

log = logging.getLogger(__name__)


def create_app(settings: Settings, raw_topics: list[str], model_state: ModelState) -> faust.App:
    """The worker's app, consuming ``raw_topics`` (see ``streams.topics.raw_topics``), starting with the
    models that ``model_state`` (the control topic, `streams.lifecycle.model_events.read_state`) announces."""
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
        **broker_quirks.faust_settings(settings.is_tansu, settings.session_timeout_seconds),
    )

    # ---- topics the agents read (all as raw bytes: the pipeline decodes them itself)
    # Faust's pattern subscription does not work with aiokafka ("XXX pattern does not work" in its driver),
    # and changing a running subscription did not get new topics assigned (tried): the topics matching
    # RAW_PATTERN are listed at start; `discover_sources` reports later ones on /health and in the log.
    raw = app.topic(*raw_topics, key_serializer="raw", value_serializer="raw")
    drift_counts = _bytes_topic(app, drift_counts_spec(settings.app_id).name, partitions=1)
    lifecycle_topic = _bytes_topic(app, lifecycle_spec(settings.app_id).name, partitions=1)
    corrections_topic = _bytes_topic(app, CORRECTIONS)
    drift_alerts = _bytes_topic(app, DRIFT)

    # ---- tables: Faust tables (RocksDB, changelog) written a micro-batch at a time (`BatchedTable`)
    items = BatchedTable(declare(app, ITEMS, settings.partitions))
    drift_windows = BatchedTable(declare(app, DRIFT_WINDOWS, settings.partitions))
    shadow_counts = BatchedTable(declare(app, SHADOW, settings.partitions))
    drift_monitor = BatchedTable(declare(app, DRIFT_MONITOR, 1))
    lifecycle_state = BatchedTable(declare(app, LIFECYCLE, 1))
    latest_corrections = BatchedTable(declare(app, CORRECTIONS_TABLE, settings.partitions))
    review_queued = BatchedTable(declare(app, REVIEW, settings.partitions))

    # ---- what the agents, timers and pages act on
    drift = DriftCounter(settings, drift_windows, models.baseline, pipeline.catalogue)
    shadow = ShadowCounter(settings, shadow_counts, pipeline.catalogue)
    runner = Runner(settings, pipeline, models, items, drift, shadow, review_queued)
    monitor = MonitorHost(app, settings, drift_monitor, runner.producer, pipeline.catalogue)
    lifecycle = LifecycleHost(app, settings, lifecycle_state, runner.producer, pipeline.catalogue, registry)
    corrections = CorrectionsAgent(settings, latest_corrections, runner)
    board = ReviewBoard(settings.review_votes)  # the review page's view of nomenclature.review
    watchdog = PartitionWatchdog(app, runner.stats, lambda: runner.busy)
    runner.watchdog = watchdog
    # POST /predict's queue and pool, which yield scoring time to the stream while it has micro-batches
    predict_scheduler = PriorityScheduler(
        settings.predict_workers,
        settings.predict_queue_size,
        settings.predict_share,
        stream_busy=lambda: runner.busy > 0,
        metrics=runner.metrics,
    )

    # ---- agents
    @app.agent(raw, name="classify")
    async def classify(stream: faust.StreamT) -> None:
        await runner.consume(stream)

    @app.agent(drift_counts, name="drift-monitor")
    async def merge_drift_counts(stream: faust.StreamT) -> None:
        # one bad report must not stop the monitor; the next one carries the counts
        await _each_record(stream, monitor.ingest, "merging a drift counts report failed")

    @app.agent(corrections_topic, name="corrections")
    async def correct(stream: faust.StreamT) -> None:
        await corrections.consume(stream)

    @app.agent(drift_alerts, name="drift-trigger")
    async def drift_trigger(stream: faust.StreamT) -> None:
        await _each_record(
            stream, lifecycle.on_drift_alert, "turning a drift alert into a retraining request failed"
        )

    @app.agent(lifecycle_topic, name="lifecycle")
    async def coordinate(stream: faust.StreamT) -> None:
        await _each_record(stream, lifecycle.ingest, "handling a lifecycle record failed")

    # ---- timers (a failed tick is logged and the next one tries again: a hiccup must not stop the worker)
    @app.timer(settings.drift_report_seconds)
    async def report_drift() -> None:
        if getattr(app, "rebalancing", False) or not runner.drift.enabled:
            return
        caught_up = caught_up_partitions(app, runner.stats)
        await _logged(runner.report_drift(set(caught_up), caught_up), "sending drift counts failed")

    @app.timer(settings.drift_report_seconds)
    async def judge_drift() -> None:
        await _logged(monitor.tick(), "judging drift windows failed")

    @app.timer(TICK_SECONDS)
    async def lifecycle_tick() -> None:
        await _logged(lifecycle.tick(), "the retraining coordinator's tick failed")

    @app.timer(TICK_SECONDS)
    async def report_shadow() -> None:
        if settling(app) or runner.models.challenger is None:
            return
        partitions = {tp.partition for tp in assigned_actives(app) if is_raw_topic(tp.topic)}
        await _logged(runner.report_shadow(partitions), "sending shadow counts failed")

    @app.timer(REVIEW_FLUSH_SECONDS)
    async def release_review() -> None:
        if settling(app) or not runner.review.enabled:
            return
        sources = [tp for tp in assigned_actives(app) if is_raw_topic(tp.topic)]
        await _logged(
            runner.release_review({tp.partition for tp in sources}, raw_share(app, sources)),
            "putting items in the review queue failed",
        )

    runner.metrics.add_live(metrics_views.live_families(runner, monitor, lifecycle))

    @app.timer(settings.dashboard_refresh_seconds)
    async def sample_metrics() -> None:
        try:
            metrics_views.sample(app, runner)
        except Exception as exc:  # a missed sample is a gap in the plots, not a reason to stop
            log.warning("sampling the metrics history failed: %r", exc)

    @app.timer(2.0)
    async def watch_partitions() -> None:
        await _logged(watchdog.check(), "checking partitions for stalls failed")

    @app.timer(settings.topic_discovery_seconds)
    async def discover_sources() -> None:
        try:
            found = [t for t in await raw_topics_now(settings.bootstrap_servers) if t not in raw.topics]
        except Exception as exc:
            log.warning("looking for new raw topics failed: %r", exc)
            return
        new = sorted(set(found) - runner.unsubscribed_sources)
        if new:
            log.warning("new raw topics %s: consumed from the worker's next start", new)
            runner.unsubscribed_sources.update(new)

    # ---- start and stop: the output producer, the scoring processes, the model control topic
    @app.service
    class RunnerLifecycle(Service):
        async def on_start(self) -> None:
            tables = (
                items, drift_windows, drift_monitor, shadow_counts, latest_corrections, lifecycle_state,
                review_queued,
            )  # fmt: skip
            outputs = [CLASSIFIED, REJECTED, DRIFT, SHADOW_TOPIC, REVIEW_TOPIC, MODELS]
            outputs += [drift.topic, shadow.topic]
            await runner.producer.prepare([*outputs, *(table.changelog_topic for table in tables)])
            await runner.scorer.start()
            await predict_scheduler.start()
            gc_pauses.settle()  # after the worker has loaded what it keeps
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

        @Service.task
        async def _follow_review(self) -> None:
            await review_follow.follow(board, settings.bootstrap_servers, pipeline.catalogue)

        async def on_stop(self) -> None:
            await predict_scheduler.stop()
            runner.scorer.close()
            lifecycle.close()
            await runner.producer.stop()

    # ---- pages
    app.page("/health")(views.health_view(app, settings, runner))
    app.page("/stats")(views.stats_view(app, settings, runner, monitor))
    app.page("/drift")(views.drift_view(app, runner, monitor))
    app.page("/predict")(predict_view(settings, runner, predict_scheduler))
    app.page("/metrics")(metrics_views.metrics_view(runner))
    app.page("/dashboard/data")(metrics_views.dashboard_data_view(app, settings, runner))
    app.page(dashboard.PAGE_PATH)(dashboard.dashboard_view(settings))
    app.page(dashboard.PLOTLY_PATH)(dashboard.plotly_view())
    app.page(dashboard.SCRIPT_PATH)(dashboard.script_view())
    app.page("/models")(model_views.models_view(app, follower, lifecycle, corrections))
    app.page("/models/lifecycle")(model_views.lifecycle_view(lifecycle))
    admin = AdminCheck(settings)
    app.page("/corrections")(model_views.corrections_view(runner.producer, corrections, admin))
    app.page("/retrain")(model_views.retrain_view(lifecycle, admin))
    app.page(review_view.PAGE_PATH)(review_view.review_page_view(settings, admin))
    app.page(review_view.ITEMS_PATH)(review_view.review_items_view(board, admin))
    app.page(review_view.ANSWER_PATH)(
        review_view.review_answer_view(board, runner.producer, corrections, admin)
    )
    return app


async def _each_record(
    stream: faust.StreamT, handle: Callable[[bytes], Awaitable[None]], failure: str
) -> None:
    """Hand every record of ``stream`` to ``handle``; one that fails is logged (``failure``) and skipped."""
    async for value in stream:
        try:
            await handle(value)
        except Exception:
            log.exception(failure)


async def _logged(step: Awaitable[object], failure: str) -> None:
    """A timer's step: a failure is logged (``failure: <error>``), and the next tick tries again."""
    try:
        await step
    except Exception as exc:
        log.warning("%s: %r", failure, exc)


def raw_share(app: faust.App, sources: list[TP]) -> float:
    """The share of every raw topic's partitions that ``sources`` (this worker's) are: its part of the
    review budget. 1.0 while the topics' partition counts are not known yet."""
    topics = {tp.topic for tp in sources}
    try:
        total = sum(app.consumer.topic_partitions(topic) or 0 for topic in topics)
    except Exception:
        total = 0
    return min(1.0, len(sources) / total) if total else 1.0


def _bytes_topic(app: faust.App, name: str, partitions: int | None = None) -> faust.TopicT:
    return app.topic(name, partitions=partitions, key_serializer="raw", value_serializer="raw")

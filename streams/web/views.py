"""Web views on the Faust web server: ``GET /health``, ``GET /stats`` and ``GET /drift`` (the model
lifecycle's are in `streams.web.model_views`). Each function returns the view's class; `streams.app` mounts
it at its path."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import faust
from aiokafka import TopicPartition
from faust.web import Request, Response, View

from streams.drift.agents import MonitorHost
from streams.drift.counts import DriftCounter
from streams.lifecycle.shadow import ShadowCounter
from streams.pipeline.emit import BatchProducer
from streams.pipeline.micro_batch import Models
from streams.review.queue import ReviewQueue
from streams.runtime import broker_quirks
from streams.runtime.batched_table import BatchedTable
from streams.runtime.metrics import WorkerMetrics
from streams.runtime.partition_watchdog import PartitionWatchdog, fetched_highwater, processed_position
from streams.runtime.stats import Stats
from streams.settings import Settings
from streams.topics import is_raw_topic


class Worker(Protocol):
    """What these views read of the classify agent's runner (`streams.runner.Runner`)."""

    producer: BatchProducer
    models: Models
    unsubscribed_sources: set[str]
    stats: Stats
    metrics: WorkerMetrics
    items: BatchedTable
    drift: DriftCounter
    shadow: ShadowCounter
    review: ReviewQueue
    watchdog: PartitionWatchdog | None


async def _broker_reachable(runner: Worker) -> tuple[bool, str]:
    try:
        await runner.producer.start()
        client = runner.producer.producer.client
        ok = await asyncio.wait_for(client.fetch_all_metadata(), timeout=3)
        return True, f"{len(ok.brokers())} broker(s)"
    except Exception as exc:  # any failure means "not reachable" here; the reason is reported
        return False, f"{type(exc).__name__}: {exc}"


def _assignment(app: faust.App) -> list[TopicPartition]:
    try:
        return sorted(app.consumer.assignment())
    except Exception:  # consumer not started yet
        return []


async def lag(app: faust.App, settings: Settings, stats: Stats) -> dict[str, dict[str, int | None]]:
    """Per assigned source partition: next offset to process, fetched high-water mark, and lag."""
    sources = [tp for tp in _assignment(app) if is_raw_topic(tp.topic)]
    highwaters = (
        await broker_quirks.fetched_end_offsets(settings.bootstrap_servers, sources) if sources else {}
    )
    return _lag(app, stats, sources, highwaters)


def consumer_lag(app: faust.App, stats: Stats) -> dict[str, dict[str, int | None]]:
    """As `lag`, from the high-water marks the worker's own consumer last fetched (it fetches every
    assigned partition continually): nothing is asked of the broker, for the metrics' frequent samples."""
    sources = [tp for tp in _assignment(app) if is_raw_topic(tp.topic)]
    highwaters = {tp: high for tp in sources if (high := fetched_highwater(app, tp)) is not None}
    return _lag(app, stats, sources, highwaters)


def _lag(
    app: faust.App, stats: Stats, sources: list[TopicPartition], highwaters: dict[Any, int]
) -> dict[str, dict[str, int | None]]:
    out: dict[str, dict[str, int | None]] = {}
    for tp in sources:
        position = processed_position(app, stats, tp)
        high = highwaters.get(tp)
        out[f"{tp.topic}:{tp.partition}"] = {
            "position": position,
            "highwater": high,
            "lag": None if high is None else high - (position or 0),
        }
    return out


def health_view(app: faust.App, settings: Settings, runner: Worker) -> type[View]:
    class Health(View):
        async def get(self, request: Request) -> Response:
            reachable, detail = await _broker_reachable(runner)
            models = runner.models
            classifier = models.champion
            unsubscribed = sorted(runner.unsubscribed_sources)
            body: dict[str, Any] = {
                "status": "ok" if reachable and not unsubscribed else "degraded",
                "broker": {
                    "bootstrap": settings.bootstrap_servers,
                    # which broker the workarounds of streams.runtime.broker_quirks are applied for
                    "flavor": "tansu" if settings.is_tansu else "kafka",
                    "reachable": reachable,
                    "detail": detail,
                },
                "model": {
                    "loaded": True,
                    "version": classifier.version,
                    "featurizer_version": classifier.featurizer_version,
                    "challenger": None if models.challenger is None else models.challenger.version,
                },
                "assignment": [f"{tp.topic}:{tp.partition}" for tp in _assignment(app)],
                # raw topics created after start: consumed once the worker restarts
                "unsubscribed_raw_topics": unsubscribed,
                "uptime_seconds": round(time.time() - runner.stats.started_at, 1),
            }
            return self.json(body, status=200 if reachable else 503)

    return Health


def stats_view(app: faust.App, settings: Settings, runner: Worker, monitor: MonitorHost) -> type[View]:
    class StatsView(View):
        async def get(self, request: Request) -> Response:
            stats = runner.stats
            body = {
                "tables": {
                    table.table.name: {"keys": table.key_count(), "changelog": table.changelog_topic}
                    for table in (runner.items, runner.drift.table, monitor.table, runner.shadow.table)
                },
                "topics": stats.topics(),
                "lag": await lag(app, settings, stats),
                "batches": stats.batches,
                "busy_seconds": round(stats.busy_seconds, 3),
                # stalled partitions sought back to their first unprocessed offset (partition_watchdog.py)
                "stalled_partition_reseeks": 0 if runner.watchdog is None else runner.watchdog.reseeks,
                "uptime_seconds": round(time.time() - stats.started_at, 1),
            }
            return self.json(body)

    return StatsView


def drift_view(app: faust.App, runner: Worker, monitor: MonitorHost) -> type[View]:
    class DriftView(View):
        async def get(self, request: Request) -> Response:
            current = monitor.current()
            if current is None:
                # the monitor runs where the app's drift-counts partition is assigned: forward the request
                # there (Faust's table routing on the monitor's one-partition table)
                try:
                    return await app.router.route_req(monitor.table.table.name, "drift", self.web, request)
                except Exception as exc:  # SameNode while loading, or no assignment/metadata yet
                    detail = f"the drift monitor is not available yet ({type(exc).__name__})"
                    return self.json({"status": "unavailable", "detail": detail}, status=503)
            body = current.snapshot()
            body["alerts_sent_since_start"] = monitor.alerts_sent
            baseline = runner.drift.baseline
            body["baseline"] = (
                None
                if baseline is None
                else {
                    "version": baseline.version,
                    "model_version": baseline.model_version,
                    "source": baseline.source,
                    "rows": baseline.rows,
                }
            )
            return self.json(body)

    return DriftView

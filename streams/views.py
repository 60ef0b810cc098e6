"""Web views on the Faust web server: ``GET /health`` and ``GET /stats``."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import faust
from aiokafka import TopicPartition
from faust.web import Request, Response, View

from streams import broker_quirks
from streams.settings import Settings
from streams.topics import is_raw_topic

if TYPE_CHECKING:
    from streams.app import Runner


async def _broker_reachable(runner: Runner) -> tuple[bool, str]:
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


async def lag(app: faust.App, settings: Settings, runner: Runner) -> dict[str, dict[str, int | None]]:
    """Per assigned source partition: next offset to process, fetched high-water mark, and lag."""
    sources = [tp for tp in _assignment(app) if is_raw_topic(tp.topic)]
    highwaters = (
        await broker_quirks.fetched_end_offsets(settings.bootstrap_servers, sources) if sources else {}
    )
    out: dict[str, dict[str, int | None]] = {}
    for tp in sources:
        position = runner.stats.next_offsets.get((tp.topic, tp.partition))
        high = highwaters.get(tp)
        if position is None:  # nothing processed since start: fall back to the group's committed offset
            position = getattr(app.consumer, "_committed_offset", {}).get(tp)
        out[f"{tp.topic}:{tp.partition}"] = {
            "position": position,
            "highwater": high,
            "lag": None if high is None else high - (position or 0),
        }
    return out


def register(app: faust.App, settings: Settings, runner: Runner) -> None:
    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            reachable, detail = await _broker_reachable(runner)
            classifier = runner.pipeline.classifier
            unsubscribed = sorted(runner.unsubscribed_sources)
            body: dict[str, Any] = {
                "status": "ok" if reachable and not unsubscribed else "degraded",
                "broker": {"bootstrap": settings.bootstrap_servers, "reachable": reachable, "detail": detail},
                "model": {
                    "loaded": True,
                    "version": classifier.version,
                    "featurizer_version": classifier.featurizer_version,
                },
                "assignment": [f"{tp.topic}:{tp.partition}" for tp in _assignment(app)],
                # raw topics created after start: consumed once the worker restarts
                "unsubscribed_raw_topics": unsubscribed,
                "uptime_seconds": round(time.time() - runner.stats.started_at, 1),
            }
            return self.json(body, status=200 if reachable else 503)

    @app.page("/stats")
    class StatsView(View):
        async def get(self, request: Request) -> Response:
            stats = runner.stats
            body = {
                "tables": {
                    runner.items.table.name: {
                        "keys": runner.items.key_count(),
                        "changelog": runner.items.changelog_topic,
                    }
                },
                "topics": stats.topics(),
                "lag": await lag(app, settings, runner),
                "batches": stats.batches,
                "busy_seconds": round(stats.busy_seconds, 3),
                "uptime_seconds": round(time.time() - stats.started_at, 1),
            }
            return self.json(body)

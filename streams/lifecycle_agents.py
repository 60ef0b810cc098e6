"""The model lifecycle in the Faust app: corrections agent, drift trigger, shadow reports, coordinator.

* ``corrections`` agent (every worker, its partitions of ``nomenclature.corrections``): validates, writes
  the corrections table and log, pairs corrections with shadow labels (`streams.corrections`).
* ``drift-trigger`` agent (every worker, its partitions of ``nomenclature.drift``): a firing alert becomes a
  retraining request on ``<app id>-lifecycle``.
* ``report_shadow`` timer (every worker): its partitions' shadow counts to ``<app id>-lifecycle``.
* ``lifecycle`` agent and ``lifecycle_tick`` timer (the owner of ``<app id>-lifecycle``' one partition): the
  retraining coordinator (`streams.lifecycle`), its state in the one-partition ``lifecycle`` table.

Corrections are keyed by item id like raw items and have as many partitions, so Faust assigns a correction's
partition to the worker that holds the item's table partition: pairing reads the local item table.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import faust
from faust.types import TP

from models.corrections_log import CorrectionsLog
from models.registry import ModelRegistry
from schemas import AvroSerde, Catalogue, DecodeError, now_ms, to_millis
from streams import model_events
from streams.batched_table import CORRECTIONS as CORRECTIONS_TABLE
from streams.batched_table import LIFECYCLE, BatchedTable, assigned_actives, declare, settling, wait_settled
from streams.corrections import CorrectionBatch, CorrectionProcessor
from streams.lifecycle import Coordinator, run_cycle
from streams.messages import OutRecord, RawMessage, TableUpdate
from streams.scoring import watch_parent
from streams.settings import Settings
from streams.topics import CORRECTIONS, DRIFT, TOPICS, is_raw_topic, lifecycle_spec
from streams.validation import Issue

if TYPE_CHECKING:
    from streams.app import Runner

log = logging.getLogger(__name__)
LIFECYCLE_PARTITION = 0
TICK_SECONDS = 2.0


class LifecycleHost:
    """Runs the `Coordinator` where the lifecycle topic's partition is assigned, persisting what changes."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        runner: Runner,
        catalogue: Catalogue,
        registry: ModelRegistry,
    ) -> None:
        self.app = app
        self.settings = settings
        self.runner = runner
        self.table = BatchedTable(declare(app, LIFECYCLE, 1))
        spec = lifecycle_spec(settings.app_id)
        self.tp = TP(spec.name, LIFECYCLE_PARTITION)
        self.serde = AvroSerde(catalogue, spec.subject, spec.schema)
        self.event_serde = model_events.serde(catalogue)
        self.coordinator = Coordinator(settings, registry, self._train, self._announce)
        self._owner = False
        self._pool: ProcessPoolExecutor | None = None
        self.lock = asyncio.Lock()

    def current(self) -> Coordinator | None:
        """The coordinator, loaded from the table when this worker became the owner; None elsewhere."""
        if settling(self.app):
            return None
        owner = self.tp in assigned_actives(self.app)
        if owner and not self._owner:
            self.coordinator.load(self.table.items(LIFECYCLE_PARTITION))
        self._owner = owner
        return self.coordinator if owner else None

    async def ingest(self, value: bytes) -> None:
        try:
            message = self.serde.decode(value)
        except DecodeError as exc:
            log.warning("lifecycle record not decodable, skipped: %s", exc)
            return
        message["at"] = to_millis(message["at"])
        await wait_settled(self.app)  # a rebalance or recovery in progress: hold it until it is over
        async with self.lock:
            coordinator = self.current()
            if coordinator is None:  # the partition went to another worker, which reads this record again
                return
            coordinator.ingest(message)
            await self._persist(coordinator)

    async def tick(self) -> None:
        async with self.lock:
            coordinator = self.current()
            if coordinator is not None:
                await coordinator.tick()
                await self._persist(coordinator)

    async def _persist(self, coordinator: Coordinator) -> None:
        updates = [TableUpdate(LIFECYCLE_PARTITION, k, v) for k, v in coordinator.take_dirty().items()]
        await self.table.deliver(self.runner.producer, [], updates)

    async def _train(self, snapshot: str, reason: str, cycle: str) -> dict[str, Any]:
        if self._pool is None:
            # a process per cycle (its memory is returned when it ends), spawned: the worker runs threads
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=1,
                initializer=watch_parent,
                initargs=(os.getpid(),),
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, run_cycle, self.settings, snapshot, reason, cycle)

    async def _announce(self, events: list[dict[str, Any]]) -> None:
        await self.runner.producer.send_all([model_events.event_record(self.event_serde, e) for e in events])

    async def request(self, trigger: str, reason: str, requested_by: str, at: int | None = None) -> None:
        """Send a retraining request to the coordinator, wherever it runs."""
        value = {
            "kind": "retrain_request",
            "at": at if at is not None else now_ms(),
            "trigger": trigger,
            "reason": reason,
            "requested_by": requested_by,
        }
        record = OutRecord(
            self.tp.topic, b"retrain_request", self.serde.encode(value), value["at"], partition=0
        )
        await self.runner.producer.send_all([record])

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class CorrectionsAgent:
    """What the corrections agent does with one micro-batch."""

    def __init__(self, app: faust.App, settings: Settings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        self.processor = CorrectionProcessor(settings, runner.pipeline.catalogue, runner.pipeline.validator)
        self.table = BatchedTable(declare(app, CORRECTIONS_TABLE, settings.partitions))
        self.log = CorrectionsLog(settings.corrections_dir)
        self.counts: dict[str, Any] = {"in": 0, "accepted": 0, "paired": 0, "rejected_by_code": {}}

    async def handle(self, messages: list[RawMessage]) -> None:
        try:
            batch = self.processor.process(messages, self.table.get)
        except Exception as exc:  # a bug must not cost the batch: each record is dead-lettered instead
            log.exception("processing %d corrections failed", len(messages))
            batch = CorrectionBatch()
            issue = Issue("", "correction_failed", f"{type(exc).__name__}: {exc}")
            for message in messages:
                self.processor.reject(batch, message, [issue], None)
        for partition, rows in batch.log_rows.items():
            await asyncio.to_thread(self.log.append, partition, rows)
        runner = self.runner
        models = runner.models
        shadow_updates: list[TableUpdate] = []
        if models.challenger is not None and batch.latest:
            pairs = self._pairs(batch.latest, models.champion.version, models.challenger.version)
            shadow_updates = runner.shadow.pair(pairs, models.challenger.version, models.champion.version)
            self.counts["paired"] += len(pairs)
        changelog = self.table.stage(batch.table_updates) + runner.shadow.table.stage(shadow_updates)
        delivered = await runner.producer.send_all(batch.outputs + changelog)
        self.table.persisted(delivered)
        runner.shadow.table.persisted(delivered)
        self.counts["in"] += len(messages)
        self.counts["accepted"] += batch.accepted
        by_code = self.counts["rejected_by_code"]
        for code, n in batch.rejected.items():
            by_code[code] = by_code.get(code, 0) + n

    def _pairs(
        self, latest: list[tuple[int, str, str]], champion: str, challenger: str
    ) -> list[tuple[int, str, bool, bool]]:
        """(partition, id, champion right, challenger right) of corrected items the current pair scored."""
        pairs = []
        for partition, item_id, label in latest:
            stored = self.runner.items.get(partition, item_id)
            shadow = (stored or {}).get("shadow")
            if stored is None or shadow is None:
                continue
            if stored.get("model_version") == champion and shadow.get("version") == challenger:
                pairs.append((partition, item_id, stored["label"] == label, shadow["label"] == label))
        return pairs


def register(
    app: faust.App, settings: Settings, runner: Runner, catalogue: Catalogue, registry: ModelRegistry
) -> tuple[LifecycleHost, CorrectionsAgent]:
    from streams.app import raw_message

    host = LifecycleHost(app, settings, runner, catalogue, registry)
    corrections = CorrectionsAgent(app, settings, runner)
    within = settings.batch_within_ms / 1000
    lifecycle_topic = app.topic(host.tp.topic, partitions=1, key_serializer="raw", value_serializer="raw")
    corrections_topic = app.topic(CORRECTIONS, key_serializer="raw", value_serializer="raw")
    drift_topic = app.topic(DRIFT, key_serializer="raw", value_serializer="raw")
    alert_serde = AvroSerde(catalogue, TOPICS[DRIFT].subject, TOPICS[DRIFT].schema)

    @app.agent(corrections_topic, name="corrections")
    async def correct(stream: faust.StreamT) -> None:
        # take_events acknowledges a batch when the loop asks for the next: after `handle` delivered it
        async for events in stream.take_events(settings.batch_size, within=within):
            messages = [raw_message(event) for event in events]
            delay = 1.0
            while True:  # never acknowledged undelivered: retried until delivered (log and table idempotent)
                try:
                    await corrections.handle(messages)
                    break
                except Exception:
                    log.exception(
                        "delivering %d corrections failed; retrying in %.0f s", len(messages), delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 30.0)

    @app.agent(drift_topic, name="drift-trigger")
    async def drift_trigger(stream: faust.StreamT) -> None:
        async for value in stream:
            try:
                alert = alert_serde.decode(value)
                if alert["state"] != "firing" or not settings.retrain_on_drift:
                    continue
                reason = (
                    f"drift alert: {alert['view']} {alert['feature']} {alert['metric']}={alert['value']:.3f} "
                    f"(threshold {alert['threshold']})"
                )
                await host.request("drift", reason, "drift-monitor", at=to_millis(alert["raised_at"]))
            except Exception:  # one bad alert must not stop the trigger
                log.exception("turning a drift alert into a retraining request failed")

    @app.agent(lifecycle_topic, name="lifecycle")
    async def lifecycle(stream: faust.StreamT) -> None:
        async for value in stream:
            try:
                await host.ingest(value)
            except Exception:  # one bad record must not stop the coordinator
                log.exception("handling a lifecycle record failed")

    @app.timer(TICK_SECONDS)
    async def lifecycle_tick() -> None:
        try:
            await host.tick()
        except Exception as exc:
            log.warning("the retraining coordinator's tick failed: %r", exc)

    @app.timer(TICK_SECONDS)
    async def report_shadow() -> None:
        models = runner.models
        if settling(app) or models.challenger is None:
            return
        partitions = {tp.partition for tp in assigned_actives(app) if is_raw_topic(tp.topic)}
        try:
            if partitions != runner.shadow_partitions:
                runner.shadow.rebalanced()
                runner.shadow_partitions = partitions
            records = runner.shadow.reports(partitions, models.challenger.version, models.champion.version)
            if records:
                await runner.producer.send_all(records)
        except Exception as exc:  # a broker hiccup must not stop the worker; the next tick reports again
            log.warning("sending shadow counts failed: %r", exc)

    return host, corrections

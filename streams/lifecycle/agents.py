"""What the model lifecycle's agents and timers do (`streams.app` attaches them):

* ``corrections`` agent (every worker, its partitions of ``nomenclature.corrections``): `CorrectionsAgent`
  validates, writes the corrections table and log, pairs corrections with shadow labels
  (`streams.lifecycle.corrections`).
* ``drift-trigger`` agent (every worker, its partitions of ``nomenclature.drift``): a firing alert becomes a
  retraining request on ``<app id>-lifecycle`` (`LifecycleHost.on_drift_alert`).
* ``report_shadow`` timer (every worker): its partitions' shadow counts to ``<app id>-lifecycle``
  (`streams.runner.Runner.report_shadow`).
* ``lifecycle`` agent and ``lifecycle_tick`` timer (the owner of ``<app id>-lifecycle``' one partition):
  `LifecycleHost` runs the retraining coordinator (`streams.lifecycle.coordinator`), its state in the
  one-partition ``lifecycle`` table.

Corrections are keyed by item id like raw items and have as many partitions, so Faust assigns a correction's
partition to the worker that holds the item's table partition: pairing reads the local item table.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

import faust
from faust.types import TP

from models.registry.model_registry import ModelRegistry
from models.retraining.corrections_log import CorrectionsLog
from schemas import AvroSerde, Catalogue, DecodeError, now_ms, to_millis
from streams.lifecycle import model_events
from streams.lifecycle.coordinator import Coordinator, run_cycle
from streams.lifecycle.corrections import CorrectionBatch, CorrectionProcessor
from streams.lifecycle.shadow import ShadowCounter
from streams.pipeline.emit import BatchProducer
from streams.pipeline.messages import OutRecord, RawMessage, TableUpdate
from streams.pipeline.micro_batch import Models, Pipeline
from streams.pipeline.scoring import watch_parent
from streams.pipeline.validation import Issue
from streams.runtime.batched_table import BatchedTable, assigned_actives, settling, wait_settled
from streams.runtime.events import raw_message
from streams.settings import Settings
from streams.topics import DRIFT, TOPICS, lifecycle_spec

log = logging.getLogger(__name__)
LIFECYCLE_PARTITION = 0
TICK_SECONDS = 2.0


class ScoringState(Protocol):
    """What the corrections agent reads of the classify agent's runner (`streams.runner.Runner`)."""

    pipeline: Pipeline
    models: Models  # the pair in use now: a hot swap replaces it
    items: BatchedTable
    shadow: ShadowCounter
    producer: BatchProducer


class LifecycleHost:
    """Runs the `Coordinator` where the lifecycle topic's partition is assigned, persisting what changes."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        table: BatchedTable,
        producer: BatchProducer,
        catalogue: Catalogue,
        registry: ModelRegistry,
    ) -> None:
        self.app = app
        self.settings = settings
        self.table = table  # the one-partition ``lifecycle`` table
        self.producer = producer
        spec = lifecycle_spec(settings.app_id)
        self.tp = TP(spec.name, LIFECYCLE_PARTITION)
        self.serde = AvroSerde(catalogue, spec.subject, spec.schema)
        self.event_serde = model_events.serde(catalogue)
        self.alert_serde = AvroSerde(catalogue, TOPICS[DRIFT].subject, TOPICS[DRIFT].schema)
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
        await self.table.deliver(self.producer, [], updates)

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
        await self.producer.send_all([model_events.event_record(self.event_serde, e) for e in events])

    async def on_drift_alert(self, value: bytes) -> None:
        """A firing alert on ``nomenclature.drift`` becomes a retraining request (unless turned off)."""
        alert = self.alert_serde.decode(value)
        if alert["state"] != "firing" or not self.settings.retrain_on_drift:
            return
        reason = (
            f"drift alert: {alert['view']} {alert['feature']} {alert['metric']}={alert['value']:.3f} "
            f"(threshold {alert['threshold']})"
        )
        await self.request("drift", reason, "drift-monitor", at=to_millis(alert["raised_at"]))

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
        await self.producer.send_all([record])

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class CorrectionsAgent:
    """What the corrections agent does with one micro-batch."""

    def __init__(self, settings: Settings, table: BatchedTable, runner: ScoringState) -> None:
        self.settings = settings
        self.runner = runner
        self.processor = CorrectionProcessor(settings, runner.pipeline.catalogue, runner.pipeline.validator)
        self.table = table  # the ``corrections`` table: the latest correction per item
        self.log = CorrectionsLog(settings.corrections_dir)
        self.counts: dict[str, Any] = {"in": 0, "accepted": 0, "paired": 0, "rejected_by_code": {}}

    async def consume(self, stream: faust.StreamT) -> None:
        """The agent's loop: micro-batches of corrections, each retried until it is delivered."""
        within = self.settings.batch_within_ms / 1000
        # take_events acknowledges a batch when the loop asks for the next: after `handle` delivered it
        async for events in stream.take_events(self.settings.batch_size, within=within):
            messages = [raw_message(event) for event in events]
            delay = 1.0
            while True:  # never acknowledged undelivered: retried until delivered (log and table idempotent)
                try:
                    await self.handle(messages)
                    break
                except Exception:
                    log.exception(
                        "delivering %d corrections failed; retrying in %.0f s", len(messages), delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 30.0)

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

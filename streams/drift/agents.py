"""What the drift monitor's agent and timers do (`streams.app` attaches them):

* ``report_drift`` (every worker): sends its active partitions' window counts (`streams.drift.counts`,
  `streams.runner.Runner.report_drift`).
* ``drift-monitor`` agent (the owner of ``<app id>-drift-counts``' one partition): `MonitorHost.ingest`
  merges them.
* ``judge_drift`` (acts on that owner only): `MonitorHost.tick` judges the windows that became ready by
  idleness or time.

The monitor's state lives in the one-partition ``drift_monitor`` table, which Faust assigns with the
counts topic's partition (same partition count), recovers from its changelog, and moves on rebalance.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from faust.types import TP

from models.registry.model_registry import ModelRegistry
from schemas import AvroSerde, Catalogue, DecodeError, now_ms, to_millis
from streams.drift.monitor import DriftMonitor
from streams.pipeline.emit import BatchProducer
from streams.pipeline.messages import OutRecord, TableUpdate
from streams.runtime.batched_table import BatchedTable, assigned_actives, settling, wait_settled
from streams.settings import Settings
from streams.topics import DRIFT, TOPICS, drift_counts_spec

log = logging.getLogger(__name__)
MONITOR_PARTITION = 0


class MonitorHost:
    """Runs a `DriftMonitor` where the counts topic's partition is assigned, persisting what changes."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        table: BatchedTable,
        producer: BatchProducer,
        catalogue: Catalogue,
    ) -> None:
        self.app = app
        self.settings = settings
        self.table = table  # the one-partition ``drift_monitor`` table
        self.producer = producer
        counts = drift_counts_spec(settings.app_id)
        self.counts_tp = TP(counts.name, MONITOR_PARTITION)
        self.counts_serde = AvroSerde(catalogue, counts.subject, counts.schema)
        self.alert_serde = AvroSerde(catalogue, TOPICS[DRIFT].subject, TOPICS[DRIFT].schema)
        registry = ModelRegistry(settings.models_dir)
        self.monitor: DriftMonitor | None = None
        self._new_monitor = lambda: DriftMonitor(settings, registry.baseline_by_version)
        self._loaded_for: frozenset[TP] | None = None
        self.lock = asyncio.Lock()
        self.alerts_sent = 0

    @property
    def owner(self) -> bool:
        return self.counts_tp in assigned_actives(self.app)

    def current(self) -> DriftMonitor | None:
        """The monitor, (re)loaded from the table after every assignment change; None where not owner."""
        if settling(self.app):
            return None
        actives = assigned_actives(self.app)
        if self.counts_tp not in actives:
            self.monitor, self._loaded_for = None, None
            return None
        if self.monitor is None or self._loaded_for != actives:
            monitor = self._new_monitor()
            monitor.load(self.table.items(MONITOR_PARTITION))
            self.monitor, self._loaded_for = monitor, actives
        return self.monitor

    async def ingest(self, value: bytes) -> None:
        try:
            report = self.counts_serde.decode(value)
        except DecodeError as exc:
            log.warning("drift counts record not decodable, skipped: %s", exc)
            return
        report["stream_time"] = to_millis(report["stream_time"])
        for window in report["windows"]:
            window["start"] = to_millis(window["start"])
        await wait_settled(self.app)  # a rebalance or recovery in progress: hold the report until it is over
        async with self.lock:
            monitor = self.current()
            if monitor is None:  # the partition went to another worker, which reads this report again
                return
            monitor.ingest(report, now_ms())
            await self._settle(monitor)

    async def tick(self) -> None:
        async with self.lock:
            monitor = self.current()
            if monitor is not None:
                await self._settle(monitor)

    async def _settle(self, monitor: DriftMonitor) -> None:
        alerts = monitor.judge_ready(now_ms())
        records = [self._alert_record(alert) for alert in alerts]
        updates = [TableUpdate(MONITOR_PARTITION, k, v) for k, v in monitor.take_dirty().items()]
        await self.table.deliver(self.producer, records, updates)
        for alert in alerts:
            self.alerts_sent += 1
            log.warning(
                "drift %s: %s %s %s=%.4f (threshold %.2f, p=%.2g) over %d items, window %s",
                alert["state"],
                alert["view"],
                alert["feature"],
                alert["metric"],
                alert["value"],
                alert["threshold"],
                alert["p_value"],
                alert["sample_size"],
                alert["window_start"],
            )

    def _alert_record(self, alert: dict) -> OutRecord:
        key = f"{alert['feature']}:{alert['metric']}:{alert['view']}:{alert['window_start']}"
        return OutRecord(DRIFT, key.encode("utf-8"), self.alert_serde.encode(alert), alert["raised_at"])

"""Drift, worker side: each classified item's bins counted into its event-time window, per source partition.

Event time is the raw record's timestamp. Windows are tumbling, ``NOMENCLATURE_DRIFT_WINDOW_SECONDS`` long,
aligned to the epoch. Per source partition the worker keeps, in the ``drift_windows`` table (RocksDB,
changelog, recovered on restart and on rebalance like the item table), one JSON value:

    {"stream_time": <highest event time seen>, "late_items": n,
     "windows": {"<baseline>|<start>": {"model_version": …, "n": …, "counts": [[…], …], "closed": bool}}}

A window closes for a partition once the partition's stream time passes its end plus
``NOMENCLATURE_DRIFT_GRACE_SECONDS``; an item arriving for a closed window is late and not counted
(`late_items`), as in Kafka Streams. Faust's own windowed tables are not used: they keep each window under
its own key and expire them by wall clock, which is what loses windows on rebalance upstream; here a
partition's whole drift state is one changelogged key of that partition.

Every ``NOMENCLATURE_DRIFT_REPORT_SECONDS`` the worker reports each active partition to
``<app id>-drift-counts``: stream time, whether it has read the partition to its high-water mark, and
the windows that changed (cumulative counts, so a repeated report is harmless); then it drops the windows
it reported closed. `streams.drift.monitor` merges the reports of all partitions and workers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from models.drift.baseline import Baseline
from schemas import AvroSerde, Catalogue, now_ms
from streams.pipeline.messages import DriftObservation, OutRecord, TableUpdate
from streams.runtime.batched_table import BatchedTable
from streams.settings import Settings
from streams.topics import drift_counts_spec

STATE_KEY = "drift"


def window_key(baseline_version: str, start_ms: int) -> str:
    return f"{baseline_version}|{start_ms}"


def parse_window_key(key: str) -> tuple[str, int]:
    baseline_version, start = key.rsplit("|", 1)
    return baseline_version, int(start)


class DriftCounter:
    def __init__(
        self, settings: Settings, table: BatchedTable, baseline: Baseline | None, catalogue: Catalogue
    ) -> None:
        self.table = table
        self.baseline = baseline
        self.window_ms = settings.drift_window_seconds * 1000
        self.grace_ms = settings.drift_grace_seconds * 1000
        spec = drift_counts_spec(settings.app_id)
        self.topic = spec.name
        self.serde = AvroSerde(catalogue, spec.subject, spec.schema)
        self.changed: set[int] | None = None  # None: report every partition (after start or rebalance)
        self.to_drop: dict[int, set[str]] = {}  # closed windows whose counts were delivered, per partition

    @property
    def enabled(self) -> bool:
        return self.baseline is not None

    def _state(self, partition: int) -> dict[str, Any]:
        return self.table.get(partition, STATE_KEY) or {"stream_time": None, "late_items": 0, "windows": {}}

    def observe(
        self, observations: Sequence[DriftObservation], model_version: str, baseline: Baseline | None
    ) -> list[TableUpdate]:
        """Count a micro-batch's observations (binned with `baseline`, the champion's that scored them);
        returns the new state of each partition it touched."""
        if not observations or baseline is None:
            return []
        version = baseline.version
        sizes = baseline.sizes()
        by_partition: dict[int, list[DriftObservation]] = defaultdict(list)
        for one in observations:
            by_partition[one.partition].append(one)
        updates = []
        for partition, items in by_partition.items():
            state = self._state(partition)
            windows = state["windows"]
            for key in self.to_drop.pop(partition, ()):
                windows.pop(key, None)
            stream_time = state["stream_time"]
            for one in items:
                if stream_time is None or one.timestamp_ms > stream_time:
                    stream_time = one.timestamp_ms
                start = one.timestamp_ms - one.timestamp_ms % self.window_ms
                if start + self.window_ms + self.grace_ms <= stream_time:
                    state["late_items"] += 1
                    continue
                key = window_key(version, start)
                window = windows.get(key)
                if window is None:
                    window = windows[key] = {
                        "model_version": model_version,
                        "n": 0,
                        "counts": [[0] * size for size in sizes],
                        "closed": False,
                    }
                window["n"] += 1
                for feature, index in enumerate(one.bins):
                    window["counts"][feature][index] += 1
            state["stream_time"] = stream_time
            self._close(windows, stream_time)
            updates.append(TableUpdate(partition, STATE_KEY, _dump(state)))
            if self.changed is not None:
                self.changed.add(partition)
        return updates

    def _close(self, windows: dict[str, dict[str, Any]], stream_time: int) -> None:
        for key, window in windows.items():
            _, start = parse_window_key(key)
            if start + self.window_ms + self.grace_ms <= stream_time:
                window["closed"] = True

    def reports(
        self, partitions: Collection[int], caught_up: Mapping[int, bool]
    ) -> tuple[list[OutRecord], dict[int, list[str]]]:
        """A report for each of ``partitions`` (this worker's active ones) — the windows only where they
        changed — and per partition the closed windows to drop once the reports are delivered
        (`reported`). Unchanged partitions are still reported: their stream time and ``caught_up`` are
        how the monitor tells an idle partition from a lagging one."""
        full = set(partitions) if self.changed is None else set(partitions) & self.changed
        records, reported_closed = [], {}
        now = now_ms()
        for partition in sorted(partitions):
            state = self._state(partition)
            windows = []
            if partition in full:
                for key, window in sorted(state["windows"].items()):
                    baseline_version, start = parse_window_key(key)
                    windows.append(
                        {
                            "baseline_version": baseline_version,
                            "model_version": window["model_version"],
                            "start": start,
                            "closed": window["closed"],
                            "n": window["n"],
                            "counts": window["counts"],
                        }
                    )
                reported_closed[partition] = [k for k, w in state["windows"].items() if w["closed"]]
            value = {
                "partition": partition,
                "stream_time": state["stream_time"],
                "caught_up": caught_up.get(partition, False),
                "windows": windows,
                "late_items": state["late_items"],
                "reported_at": now,
            }
            records.append(OutRecord(self.topic, str(partition).encode(), self.serde.encode(value), now))
        self.changed = set()
        return records, reported_closed

    def reported(self, reported_closed: dict[int, list[str]]) -> None:
        """The reports were delivered: their closed windows (no item can change them any more) are dropped
        from the table with the partition's next update, which keeps every write of the table in the
        agent's order."""
        for partition, keys in reported_closed.items():
            if keys:
                self.to_drop.setdefault(partition, set()).update(keys)

    def rebalanced(self) -> None:
        """After an assignment change every active partition is reported again (the new owner's view)."""
        self.changed = None
        self.to_drop = {}


def _dump(state: dict[str, Any]) -> bytes:
    return json.dumps(state, separators=(",", ":")).encode("utf-8")

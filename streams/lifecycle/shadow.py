"""Shadow evaluation, worker side: how the challenger compares with the champion on live items.

Per source partition, in the ``shadow`` table (RocksDB, changelog: it survives restarts and moves with the
partition), for the challenger/champion pair in shadow: items scored by both, items they labelled alike,
and the corrected ones, each paired as (champion right, challenger right) under its id so that a later
correction of the same item replaces the earlier pairing. Workers report each partition's cumulative counts
to the app's lifecycle topic; the coordinator (`streams.lifecycle.coordinator`) sums the latest report of
every partition, computes the agreement rate and the exact McNemar test, and decides promotion.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from schemas import AvroSerde, Catalogue, now_ms
from streams.pipeline.messages import OutRecord, ShadowObservation, TableUpdate
from streams.runtime.batched_table import BatchedTable
from streams.settings import Settings
from streams.topics import lifecycle_spec

OUTCOMES = ("both_right", "champion_only", "challenger_only", "both_wrong")


def pair_key(challenger: str, champion: str) -> str:
    return f"{challenger}|{champion}"


def outcome(champion_right: bool, challenger_right: bool) -> str:
    if champion_right:
        return "both_right" if challenger_right else "champion_only"
    return "challenger_only" if challenger_right else "both_wrong"


class ShadowCounter:
    def __init__(self, settings: Settings, table: BatchedTable, catalogue: Catalogue) -> None:
        self.table = table
        spec = lifecycle_spec(settings.app_id)
        self.topic = spec.name
        self.serde = AvroSerde(catalogue, spec.subject, spec.schema)
        self.changed: set[int] | None = None  # None: report every partition (after start or rebalance)

    def _state(self, partition: int, key: str) -> dict[str, Any]:
        return self.table.get(partition, key) or {"scored": 0, "agreed": 0, "paired": {}}

    def observe(
        self, observations: Sequence[ShadowObservation], challenger: str, champion: str
    ) -> list[TableUpdate]:
        """Count a micro-batch's shadowed items; the new state of each partition it touched."""
        key = pair_key(challenger, champion)
        states: dict[int, dict[str, Any]] = {}
        for one in observations:
            state = states.get(one.partition)
            if state is None:
                state = states[one.partition] = self._state(one.partition, key)
            state["scored"] += 1
            state["agreed"] += one.agreed
        return self._updates(states, key)

    def pair(
        self, pairs: Sequence[tuple[int, str, bool, bool]], challenger: str, champion: str
    ) -> list[TableUpdate]:
        """Record corrected shadowed items: (partition, item id, champion right, challenger right)."""
        key = pair_key(challenger, champion)
        states: dict[int, dict[str, Any]] = {}
        for partition, item_id, champion_right, challenger_right in pairs:
            state = states.get(partition)
            if state is None:
                state = states[partition] = self._state(partition, key)
            state["paired"][item_id] = [champion_right, challenger_right]
        return self._updates(states, key)

    def _updates(self, states: dict[int, dict[str, Any]], key: str) -> list[TableUpdate]:
        if self.changed is not None:
            self.changed.update(states)
        return [
            TableUpdate(partition, key, json.dumps(state, separators=(",", ":")).encode())
            for partition, state in states.items()
        ]

    def counts(self, partition: int, challenger: str, champion: str) -> dict[str, int]:
        state = self._state(partition, pair_key(challenger, champion))
        counts = {"scored": state["scored"], "agreed": state["agreed"], **dict.fromkeys(OUTCOMES, 0)}
        for champion_right, challenger_right in state["paired"].values():
            counts[outcome(champion_right, challenger_right)] += 1
        return counts

    def rebalanced(self) -> None:
        self.changed = None

    def reports(self, partitions: Collection[int], challenger: str, champion: str) -> list[OutRecord]:
        """ShadowReport records of the partitions that changed since the last report (all after a start or
        a rebalance): cumulative, so a repeated report is harmless."""
        changed = set(partitions) if self.changed is None else self.changed & set(partitions)
        self.changed = set()
        records = []
        at = now_ms()
        for partition in sorted(changed):
            report = {
                "challenger": challenger,
                "champion": champion,
                "partition": partition,
                **self.counts(partition, challenger, champion),
            }
            value = {"kind": "shadow_report", "at": at, "shadow": report}
            key = f"shadow:{partition}".encode()
            records.append(OutRecord(self.topic, key, self.serde.encode(value), at, partition=0))
        return records

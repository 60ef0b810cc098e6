"""The retraining coordinator: when to train a challenger, and when to promote it. Free of Faust.

It runs in one worker of the app, the one assigned the one-partition ``<app id>-lifecycle`` topic
(`streams.lifecycle.agents`), and keeps its state in the one-partition ``lifecycle`` table.

A cycle starts on the first trigger that holds (checked every couple of seconds):

* ``manual`` — `nomenclature retrain` or ``POST /retrain`` (even while a challenger is in shadow);
* ``corrections`` — at least ``NOMENCLATURE_RETRAIN_MIN_CORRECTIONS`` new corrections in the log;
* ``drift`` — a drift alert fired after the last cycle, and there is a new correction to learn from;
* ``schedule`` — ``NOMENCLATURE_RETRAIN_INTERVAL_SECONDS`` since the last cycle, with new corrections.

The automatic triggers wait while a challenger is in shadow evaluation, for at most
``NOMENCLATURE_SHADOW_MAX_SECONDS``: the corrections arriving meanwhile are what decides it. A cycle
snapshots the corrections log, trains in a separate process (`models.retraining.warm_start.retrain`, lowered
priority, one BLAS thread) so classification never waits for it, registers the candidate as ``challenger``
with its gate metrics and announces it on ``nomenclature.models``; every worker then scores live items with
both models. The challenger is promoted when the gate held (`models.retraining.promotion.evaluate_gate`),
automatic promotion is on, and the shadow comparison is significant
(`models.retraining.promotion.shadow_verdict`: enough items scored, and the exact McNemar test on corrected
shadowed items in the challenger's favour). Then the cycle's corrections join the reference set.

A challenger registered outside a cycle with its gate figures (``nomenclature tune --register-best``) is
adopted as a cycle of trigger ``registered``, and goes through the same shadow comparison and promotion; one
without (``nomenclature models promote X --as challenger``) is shadowed by the workers and left to the
operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from models.registry.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from models.retraining.corrections_log import CorrectionsLog, ReferenceSet
from models.retraining.promotion import shadow_verdict
from models.retraining.warm_start import NoNewCorrectionsError, RetrainConfig, retrain
from schemas import now_ms
from streams.lifecycle import model_events
from streams.lifecycle.shadow import OUTCOMES, pair_key
from streams.settings import Settings

log = logging.getLogger(__name__)
STATE_KEY = "state"
SHADOW_KEY = "shadow"
CYCLES_KEPT = 20
RUNNING, SHADOW, PROMOTED, SUPERSEDED, SKIPPED, FAILED = (
    "running",
    "shadow",
    "promoted",
    "superseded",
    "skipped",
    "failed",
)

Trainer = Callable[[str, str, str], Awaitable[dict[str, Any]]]  # (snapshot path, reason, cycle) -> summary
Announcer = Callable[[list[dict[str, Any]]], Awaitable[None]]


def run_cycle(settings: Settings, snapshot: str, reason: str, cycle: str) -> dict[str, Any]:
    """One retraining, in the training process: the reference dataset (built if absent), then `retrain`."""
    from models.training.train import bundled_dataset

    reference = settings.reference_dataset or bundled_dataset(settings.data_dir / "datasets")
    config = RetrainConfig(
        models_dir=settings.models_dir,
        corrections_root=settings.corrections_dir,
        reference_dataset=Path(reference),
        feature_root=settings.data_dir / "features",
        reference_rows=settings.retrain_reference_rows,
        reference_share=settings.retrain_reference_share,
        holdback=settings.retrain_holdback,
        delta_points=settings.gate_delta_points,
        max_epochs=settings.retrain_max_epochs,
    )
    return retrain(config, Path(snapshot), reason, cycle)


class Coordinator:
    def __init__(
        self, settings: Settings, registry: ModelRegistry, train: Trainer, announce: Announcer
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.log = CorrectionsLog(settings.corrections_dir)
        self.reference = ReferenceSet(settings.corrections_dir)
        self.train = train
        self.announce = announce
        self.state: dict[str, Any] = self._empty()
        self.shadow: dict[str, dict[str, dict[str, Any]]] = {}  # pair key -> partition -> latest report
        self.dirty: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self.new_corrections = 0

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {
            "since": now_ms(),
            "cycles": [],
            "trained_offsets": {},
            "last_cycle_at": None,
            "pending": None,
            "drift_alert": None,
        }

    def load(self, items: dict[str, Any]) -> None:
        """State from the table (after an assignment); a cycle this worker did not run is not running."""
        self.state = items.get(STATE_KEY) or self._empty()
        self.shadow = items.get(SHADOW_KEY) or {}
        running_here = self.task is not None and not self.task.done()
        for cycle in self.state["cycles"]:
            if cycle["status"] == RUNNING and not running_here:
                cycle.update(
                    status=FAILED, error="interrupted: the worker running it stopped or lost the partition"
                )
                self.dirty.add(STATE_KEY)

    def take_dirty(self) -> dict[str, bytes]:
        values = {STATE_KEY: self.state, SHADOW_KEY: self.shadow}
        out = {key: json.dumps(values[key], ensure_ascii=False).encode("utf-8") for key in self.dirty}
        self.dirty.clear()
        return out

    # ---- input ---------------------------------------------------------------------------------

    def ingest(self, message: dict[str, Any]) -> None:
        if message["kind"] == "shadow_report" and message.get("shadow"):
            report = message["shadow"]
            key = pair_key(report["challenger"], report["champion"])
            self.shadow.setdefault(key, {})[str(report["partition"])] = report
            self.dirty.add(SHADOW_KEY)
        elif message["kind"] == "retrain_request":
            request = {k: message.get(k) for k in ("at", "trigger", "reason", "requested_by")}
            if request["trigger"] == "drift":
                known = self.state["drift_alert"]
                if known is None or request["at"] > known["at"]:
                    self.state["drift_alert"] = request
            else:
                self.state["pending"] = request
            self.dirty.add(STATE_KEY)
        else:
            log.warning("lifecycle message of unknown kind %r ignored", message["kind"])

    # ---- decisions -----------------------------------------------------------------------------

    async def tick(self) -> None:
        now = now_ms()
        self.new_corrections = await asyncio.to_thread(
            self.log.count_after, {int(p): o for p, o in self.state["trained_offsets"].items()}
        )
        await self._follow_challengers()
        if self.task is None or self.task.done():
            trigger = self._trigger(now)
            if trigger is not None:
                self._start(*trigger, now)

    def _in_shadow(self) -> dict[str, Any] | None:
        return next((c for c in reversed(self.state["cycles"]) if c["status"] == SHADOW), None)

    def _trigger(self, now: int) -> tuple[str, str] | None:
        state, settings, new = self.state, self.settings, self.new_corrections
        if state["pending"] is not None:
            request = state["pending"]
            return (
                "manual",
                f"requested by {request.get('requested_by') or 'an operator'}: {request.get('reason')}",
            )
        shadowed = self._in_shadow()
        if shadowed is not None and now - shadowed["registered_at"] < settings.shadow_max_seconds * 1000:
            return None
        last = state["last_cycle_at"] or state["since"]
        if settings.retrain_min_corrections > 0 and new >= settings.retrain_min_corrections:
            return "corrections", f"{new} new corrections (threshold {settings.retrain_min_corrections})"
        alert = state["drift_alert"]
        if settings.retrain_on_drift and alert is not None and alert["at"] > last and new > 0:
            return "drift", f"{alert.get('reason')}; {new} new corrections"
        interval = settings.retrain_interval_seconds * 1000
        if interval > 0 and now - last >= interval and new > 0:
            return (
                "schedule",
                f"{settings.retrain_interval_seconds} s since the last cycle; {new} new corrections",
            )
        return None

    def _start(self, trigger: str, reason: str, now: int) -> None:
        cycle = {
            "id": f"cycle-{len(self.state['cycles']) + 1:04d}-{now}",
            "trigger": trigger,
            "reason": reason,
            "status": RUNNING,
            "started_at": now,
            "new_corrections": self.new_corrections,
        }
        self.state["pending"] = None
        self.state["last_cycle_at"] = now
        self.state["cycles"] = [*self.state["cycles"], cycle][-CYCLES_KEPT:]
        self.dirty.add(STATE_KEY)
        log.info("retraining %s started (%s): %s", cycle["id"], trigger, reason)
        self.task = asyncio.ensure_future(self._cycle(cycle))

    async def _cycle(self, cycle: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            snapshot = await asyncio.to_thread(self.log.snapshot)
            cycle["corrections"] = {
                "snapshot": str(snapshot.path),
                "sha256": snapshot.sha256,
                "rows": snapshot.rows,
            }
            self.state["trained_offsets"] = {str(p): o for p, o in snapshot.high_offsets.items()}
            summary = await self.train(str(snapshot.path), cycle["reason"], cycle["id"])
            await self._register(cycle, summary)
        except NoNewCorrectionsError as exc:
            cycle.update(status=SKIPPED, error=str(exc))
            log.info("retraining %s skipped: %s", cycle["id"], exc)
        except Exception as exc:  # a failed cycle is reported; the next trigger tries again
            cycle.update(status=FAILED, error=f"{type(exc).__name__}: {exc}")
            log.exception("retraining %s failed", cycle["id"])
        finally:
            cycle["seconds"] = round(time.perf_counter() - started, 2)
            cycle["finished_at"] = now_ms()
            self.dirty.add(STATE_KEY)

    async def _register(self, cycle: dict[str, Any], summary: dict[str, Any]) -> None:
        version = summary["version"]
        previous = self.registry.aliases().get(CHALLENGER)
        await asyncio.to_thread(self.registry.set_alias, CHALLENGER, version)
        gate = summary["gate"]
        cycle.update(
            status=SHADOW,
            version=version,
            champion=summary["champion"],
            training_seconds=summary.get("training_seconds"),
            corrections={**cycle.get("corrections", {}), **summary.get("corrections", {})},
            gate=gate,
            registered_at=now_ms(),
        )
        for other in self.state["cycles"]:
            if other is not cycle and other["status"] == SHADOW:
                other["status"] = SUPERSEDED
        event = model_events.new_event(
            self.registry,
            model_events.REGISTERED,
            version,
            by=model_events.sender("lifecycle"),
            reason=f"{cycle['id']} ({cycle['trigger']}): {cycle['reason']}",
            previous=previous,
            details={"gate": gate, "champion": summary["champion"]},
        )
        await self.announce([event])
        log.info(
            "retraining %s registered challenger %s in %.1f s (gate %s: %s)",
            cycle["id"],
            version,
            summary.get("training_seconds") or 0.0,
            "eligible" if gate["eligible"] else "not eligible",
            "; ".join(gate["reasons"]),
        )

    def totals(self, challenger: str, champion: str) -> dict[str, int]:
        reports = self.shadow.get(pair_key(challenger, champion), {}).values()
        names = ("scored", "agreed", *OUTCOMES)
        return {name: sum(int(r[name]) for r in reports) for name in names}

    def _adopt(self) -> dict[str, Any] | None:
        """The cycle of a challenger registered with its gate figures outside a cycle, now in shadow."""
        aliases = self.registry.aliases()
        version = aliases.get(CHALLENGER)
        if version is None:
            return None
        record = self.registry.get(version)
        gate = record.metrics.get("gate")
        if not isinstance(gate, dict) or "eligible" not in gate:
            return None  # no gate: the operator decides
        now = now_ms()
        cycle = {
            "id": f"cycle-{len(self.state['cycles']) + 1:04d}-{now}",
            "trigger": "registered",
            "reason": record.notes or f"{version} registered as the challenger",
            "status": SHADOW,
            "started_at": now,
            "registered_at": now,
            "version": version,
            "champion": aliases.get(CHAMPION),
            "gate": gate,
        }
        self.state["cycles"] = [*self.state["cycles"], cycle][-CYCLES_KEPT:]
        self.dirty.add(STATE_KEY)
        log.info("adopted challenger %s (%s) for shadow evaluation", version, cycle["reason"])
        return cycle

    async def _follow_challengers(self) -> None:
        """Track the challenger in shadow: promoted or replaced by an operator, or ready to promote."""
        shadowed = self._in_shadow() or self._adopt()
        if shadowed is None:
            return
        aliases = self.registry.aliases()
        version = shadowed["version"]
        if aliases.get(CHALLENGER) != version:
            promoted = aliases.get(CHAMPION) == version
            shadowed["status"] = PROMOTED if promoted else SUPERSEDED
            if promoted:
                shadowed.update(promoted_at=now_ms(), promoted_by="operator")
                await self._join_reference(shadowed)
            self.dirty.add(STATE_KEY)
            return
        champion = aliases.get(CHAMPION, "")
        current = pair_key(version, champion)
        if set(self.shadow) - {current}:  # reports about pairs no longer in shadow
            self.shadow = {current: self.shadow.get(current, {})}
            self.dirty.add(SHADOW_KEY)
        counts = self.totals(version, champion)
        verdict = shadow_verdict(
            scored=counts["scored"],
            agreed=counts["agreed"],
            b=counts["champion_only"],
            c=counts["challenger_only"],
            both_right=counts["both_right"],
            both_wrong=counts["both_wrong"],
            min_items=self.settings.shadow_min_items,
            alpha=self.settings.shadow_alpha,
        )
        summary = {"champion": champion, **verdict.summary()}
        if summary != shadowed.get("shadow"):
            shadowed["shadow"] = summary
            self.dirty.add(STATE_KEY)
        if not shadowed["gate"]["eligible"]:
            decision = "not promoted: the gate did not hold"
        elif not self.settings.auto_promote:
            decision = (
                "waiting for `nomenclature models promote challenger` (NOMENCLATURE_AUTO_PROMOTE=false)"
            )
        elif not verdict.significant:
            decision = "in shadow: " + "; ".join(verdict.reasons)
        else:
            await self._promote(shadowed, champion, summary)
            return
        if shadowed.get("decision") != decision:
            shadowed["decision"] = decision
            self.dirty.add(STATE_KEY)

    async def _promote(self, cycle: dict[str, Any], champion: str, shadow: dict[str, Any]) -> None:
        version = cycle["version"]
        await asyncio.to_thread(self.registry.verify, version)
        await asyncio.to_thread(self.registry.promote, version)
        reason = (
            f"{cycle['id']}: gate held and shadow evaluation significant "
            f"(McNemar p={shadow['p_value']:.3g}, {shadow['scored']} items scored by both, "
            f"agreement rate {shadow['agreement_rate']})"
        )
        event = model_events.new_event(
            self.registry,
            model_events.PROMOTED,
            version,
            by=model_events.sender("lifecycle"),
            reason=reason,
            previous=champion,
            details={"gate": cycle["gate"], "shadow": shadow},
        )
        await self.announce([event])
        cycle.update(status=PROMOTED, promoted_at=now_ms(), promoted_by="lifecycle", decision=reason)
        self.dirty.add(STATE_KEY)
        log.info("promoted %s over %s: %s", version, champion, reason)
        await self._join_reference(cycle)

    async def _join_reference(self, cycle: dict[str, Any]) -> None:
        snapshot = cycle.get("corrections", {}).get("snapshot")
        if snapshot:
            cycle["joined_reference"] = await asyncio.to_thread(
                self.reference.join, Path(snapshot), cycle["id"]
            )

    def snapshot(self) -> dict[str, Any]:
        shadowed = self._in_shadow()
        return {
            "running": self.task is not None and not self.task.done(),
            "new_corrections": self.new_corrections,
            "trained_offsets": self.state["trained_offsets"],
            "last_cycle_at": self.state["last_cycle_at"],
            "pending_request": self.state["pending"],
            "drift_alert": self.state["drift_alert"],
            "in_shadow": None if shadowed is None else shadowed["version"],
            "cycles": list(reversed(self.state["cycles"])),
            "settings": {
                "min_corrections": self.settings.retrain_min_corrections,
                "interval_seconds": self.settings.retrain_interval_seconds,
                "on_drift": self.settings.retrain_on_drift,
                "auto_promote": self.settings.auto_promote,
                "gate_delta_points": self.settings.gate_delta_points,
                "shadow_min_items": self.settings.shadow_min_items,
                "shadow_alpha": self.settings.shadow_alpha,
                "shadow_max_seconds": self.settings.shadow_max_seconds,
            },
        }

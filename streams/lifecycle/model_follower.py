"""This worker's models: the champion and challenger announced on ``nomenclature.models``, hot-swapped.

At start the worker folds the control topic (`streams.lifecycle.model_events.read_state`) and loads the
announced champion (and challenger); when the topic has no champion of this registry yet, it loads the
registry's and announces it. Then it follows the topic: for each event it loads the announced artifact from
the shared registry, checks it against the event's sha256 and the registry's record (`ModelRegistry.load`
checks the file), has the scoring processes load it too, and only then swaps: the runner scores each
micro-batch with the models it held when the batch began (`Runner.handle`), so a swap falls between
micro-batches and every output carries the version that produced it. An artifact that fails a check is
refused: the worker keeps what it has, logs an error and lists the refusal on ``GET /models``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from models.classifier import Classifier
from models.drift.baseline import Baseline
from models.registry.model_registry import ChecksumError, ModelRegistry
from schemas import Catalogue, DecodeError
from streams.lifecycle import model_events
from streams.lifecycle.model_events import CHALLENGER_REMOVED, CHAMPION_EVENTS, REGISTERED, ModelState
from streams.pipeline.micro_batch import Models
from streams.topics import MODELS

log = logging.getLogger(__name__)
REFUSALS_KEPT = 20


class NoModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadedModel:
    version: str
    sha256: str
    artifact: str
    classifier: Classifier
    baseline: Baseline | None
    event: str  # the event that announced it
    loaded_at: float

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "artifact": self.artifact,
            "featurizer_version": self.classifier.featurizer_version,
            "announced_by_event": self.event,
            "loaded_at": round(self.loaded_at, 3),
        }


def load_verified(registry: ModelRegistry, event: dict[str, Any]) -> LoadedModel:
    """The model an event announces, after checking the event's sha256 and artifact against the registry's
    record and the file against both (ChecksumError, UnknownModelError, FeaturizerMismatchError)."""
    version = event["version"]
    record = registry.get(version)
    announced = event.get("sha256")
    if announced is not None and announced != record.artifact_sha256:
        raise ChecksumError(
            f"{version}: announced sha256 {announced} differs from the registered {record.artifact_sha256}"
        )
    if event.get("artifact") not in (None, record.artifact):
        raise ChecksumError(f"{version}: announced artifact {event['artifact']} is not {record.artifact}")
    classifier = registry.load(version)
    return LoadedModel(
        version,
        record.artifact_sha256,
        record.artifact,
        classifier,
        registry.load_baseline(version),
        event["event"],
        time.time(),
    )


class ModelFollower:
    """Loads what the control topic announces and hands it to `swap`; see the module doc."""

    def __init__(
        self,
        registry: ModelRegistry,
        catalogue: Catalogue,
        bootstrap: str,
        state: ModelState,
    ) -> None:
        self.registry = registry
        self.bootstrap = bootstrap
        self.serde = model_events.serde(catalogue)
        self.state = state
        self.refused: list[dict[str, Any]] = []
        self.champion: LoadedModel | None = None
        self.challenger: LoadedModel | None = None
        self.to_announce: dict[str, Any] | None = None  # the registry's champion, when the topic had none
        self.swaps = 0
        self._swap: Callable[[Models], Awaitable[None]] | None = None

    # ---- start ---------------------------------------------------------------------------------

    def load_initial(self) -> Models:
        """The champion (and challenger) to start with, loaded and verified."""
        for event in reversed(self.state.champions):
            try:
                self.champion = load_verified(self.registry, event)
                break
            except Exception as exc:  # refused: try the champion announced before it
                self._refuse(event, exc)
        if self.champion is None:
            if self.state.champions:
                raise NoModelError(
                    f"no champion announced on {MODELS} for registry {self.state.registry_id} can be "
                    f"loaded from {self.registry.root}: {self.refused[-1]['reason']}"
                )
            record = self.registry.champion()
            if record is None:
                raise NoModelError(
                    f"no trained model in {self.registry.root}: run `nomenclature train` first "
                    "(or `nomenclature worker --train-if-missing`)"
                )
            event = model_events.new_event(
                self.registry,
                model_events.ANNOUNCED,
                record.version,
                by=model_events.sender("worker"),
                reason=f"no champion of this registry on {MODELS}: the registry's champion",
            )
            self.champion = load_verified(self.registry, event)
            self.to_announce = event
        if self.state.challenger is not None:
            try:
                self.challenger = load_verified(self.registry, self.state.challenger)
            except Exception as exc:
                self._refuse(self.state.challenger, exc)
        return self.models()

    def models(self) -> Models:
        assert self.champion is not None, "load_initial first"
        return _models(self.champion, self.challenger)

    # ---- following -----------------------------------------------------------------------------

    async def follow(self, swap: Callable[[Models], Awaitable[None]]) -> None:
        """Read the control topic from where the start-up read ended, for ever, applying each event."""
        self._swap = swap
        tp = TopicPartition(MODELS, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, self.state.next_offset)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    await self._record(record.value, record.offset)
        finally:
            await consumer.stop()

    async def _record(self, value: bytes | None, offset: int) -> None:
        if value is None:
            self.state.next_offset = offset + 1
            return
        try:
            event = model_events.decoded(self.serde.decode(value))
        except DecodeError as exc:
            log.error("%s offset %d is not a ModelEvent, skipped: %s", MODELS, offset, exc)
            self.state.next_offset = offset + 1
            return
        if self.state.apply(event, offset):
            await self.apply(event)

    async def apply(self, event: dict[str, Any]) -> None:
        """Load and swap to what `event` announces (or refuse it). `snapshot` shows the new models only once
        the scoring processes serve them: whoever sees a challenger on ``GET /models`` gets it shadowed."""
        kind, version = event["event"], event.get("version")
        champion, challenger = self.champion, self.challenger
        assert champion is not None
        try:
            if kind in CHAMPION_EVENTS:
                if version != champion.version:
                    champion = await asyncio.to_thread(load_verified, self.registry, event)
                if challenger is not None and challenger.version == version:
                    challenger = None
            elif kind == REGISTERED:
                if challenger is None or challenger.version != version:
                    challenger = await asyncio.to_thread(load_verified, self.registry, event)
            elif kind == CHALLENGER_REMOVED:
                challenger = None
            else:
                log.warning("unknown model event %r on %s ignored", kind, MODELS)
                return
            if self._swap is not None:
                await self._swap(_models(champion, challenger))
        except Exception as exc:  # whatever fails, the worker keeps the models it has
            self._refuse(event, exc)
            return
        self.champion, self.challenger = champion, challenger
        self.swaps += 1
        log.info(
            "model event %s %s: serving champion %s, challenger %s",
            kind,
            version,
            champion.version,
            challenger.version if challenger else None,
        )

    def _refuse(self, event: dict[str, Any], exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.error(
            "refusing model %s (%s, %s by %s): %s",
            event.get("version"),
            event.get("event"),
            event.get("alias"),
            event.get("by"),
            reason,
        )
        self.refused.append(
            {
                "version": event.get("version"),
                "event": event.get("event"),
                "alias": event.get("alias"),
                "sha256": event.get("sha256"),
                "reason": reason,
                "at": time.time(),
            }
        )
        del self.refused[:-REFUSALS_KEPT]

    def snapshot(self) -> dict[str, Any]:
        return {
            "registry_id": self.state.registry_id,
            "champion": None if self.champion is None else self.champion.describe(),
            "challenger": None if self.challenger is None else self.challenger.describe(),
            "refused": list(self.refused),
            "swaps": self.swaps,
            "control_topic": {"topic": MODELS, "next_offset": self.state.next_offset},
        }


def _models(champion: LoadedModel, challenger: LoadedModel | None) -> Models:
    shadowed = None if challenger is None else challenger.classifier
    return Models(champion.classifier, champion.baseline, shadowed)

"""Scoring on another core: ``Pipeline.score`` runs in a separate process.

Decoding, validation, featurization, the MLP and Avro encoding are mostly Python and hold the GIL, so in
a thread they compete with Faust's own per-record work on one core. A scoring process takes them to the
machine's other core; the worker keeps consuming the next micro-batch while the process scores this one.
``NOMENCLATURE_SCORING_PROCESSES=0`` scores in a thread of the worker instead.

Each micro-batch names the model versions it is scored with (`ModelSpec`): a scoring process loads a version
from the shared registry (sha256-checked) the first time it is named and keeps the few in use, so a hot swap
in the worker (`streams.lifecycle.model_follower`) takes effect at the next micro-batch without restarting
anything.

Native thread pools (OpenBLAS, OpenMP) are held to one thread in both processes: with micro-batches of
a few hundred rows a second BLAS thread gains nothing, and its busy-waiting took ≈ 40% of a core from
the worker and the broker (measured: 11.7 s against 7.2 s of CPU for the same 39k items).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple, TypeVar

from threadpoolctl import threadpool_limits

from models.classifier import Classifier
from models.drift.baseline import Baseline
from models.registry.model_registry import ModelRegistry
from schemas import catalogue_from_url
from streams.pipeline import gc_pauses
from streams.pipeline.codes import load_code_lists
from streams.pipeline.messages import RawMessage
from streams.pipeline.micro_batch import Models, Pipeline, Scored
from streams.pipeline.predict import ItemOutcome, classify_items
from streams.pipeline.validation import Issue, Validator
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
KEPT_VERSIONS = 4  # models a scoring process keeps loaded: champion, challenger and the two before them


class ModelSpec(NamedTuple):
    """The versions a micro-batch is scored with (what crosses to the scoring process instead of models)."""

    champion: str
    challenger: str | None = None

    @classmethod
    def of(cls, models: Models) -> ModelSpec:
        return cls(models.champion.version, None if models.challenger is None else models.challenger.version)


def build_pipeline(settings: Settings) -> Pipeline:
    validator = Validator(load_code_lists(), settings.max_name_length, settings.max_full_name_length)
    catalogue = catalogue_from_url(settings.schema_registry_url)
    return Pipeline(settings, catalogue, validator)


class ModelCache:
    """Classifiers and baselines by version, loaded from the registry (sha256-checked) on first use."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._loaded: dict[str, tuple[Classifier, Baseline | None]] = {}

    def _get(self, version: str) -> tuple[Classifier, Baseline | None]:
        found = self._loaded.pop(version, None)
        if found is None:
            found = (self.registry.load(version), self.registry.load_baseline(version))
        self._loaded[version] = found  # most recently used last
        while len(self._loaded) > KEPT_VERSIONS:
            self._loaded.pop(next(iter(self._loaded)))
        return found

    def models(self, spec: ModelSpec) -> Models:
        champion, baseline = self._get(spec.champion)
        challenger = None if spec.challenger is None else self._get(spec.challenger)[0]
        return Models(champion, baseline, challenger)


_pipeline: Pipeline | None = None  # the scoring process's own pipeline and models
_cache: ModelCache | None = None


def limit_native_threads() -> None:
    """One thread for BLAS/OpenMP in this process (see the module doc)."""
    threadpool_limits(1)


def _exit_with_parent(parent: int) -> None:
    """End this scoring process once the worker that started it is gone (killed, or exited untidily):
    a pool worker otherwise outlives a ``kill -9`` of the worker, holding a model and its memory."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def watch_parent(parent: int) -> None:
    """In a pool process: end it once `parent` is gone (a thread watching, see `_exit_with_parent`)."""
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _init(settings: Settings, spec: ModelSpec) -> None:
    global _pipeline, _cache
    watch_parent(os.getppid())
    limit_native_threads()
    _cache = ModelCache(ModelRegistry(settings.models_dir))
    _cache.models(spec)  # sha256-checked again here
    _pipeline = build_pipeline(settings)
    gc_pauses.settle()


def _score(messages: Sequence[RawMessage], spec: ModelSpec) -> tuple[list[Scored], float]:
    assert _pipeline is not None and _cache is not None, "scoring process not initialised"
    return _timed(_pipeline.score, messages, _cache.models(spec))


def _timed(score: Callable[..., list[Scored]], *args: Any) -> tuple[list[Scored], float]:
    """What `score` returns and the seconds it took in this process (the IPC and queueing excluded)."""
    started = time.perf_counter()
    return score(*args), time.perf_counter() - started


def _predict(
    items: list[tuple[dict[str, Any], list[Issue]]], champion: str, top_k: int, explain: int
) -> tuple[list[ItemOutcome], float]:
    """``POST /predict``'s validated items, with this process's pipeline and its copy of the champion."""
    assert _pipeline is not None and _cache is not None, "scoring process not initialised"
    return classify_items(_pipeline, items, _cache.models(ModelSpec(champion)).champion, top_k, explain)


def _load(spec: ModelSpec) -> ModelSpec:
    assert _cache is not None, "scoring process not initialised"
    models = _cache.models(spec)
    return ModelSpec.of(models)


class Scorer:
    def __init__(self, settings: Settings, pipeline: Pipeline, models: Models) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self._spec = ModelSpec.of(models)  # what a new scoring process loads first
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.settings.scoring_processes,
            # spawn, not fork: the worker already runs threads (Faust's consumer, aiokafka)
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(self.settings, self._spec),
        )

    async def start(self) -> None:
        """Start the scoring processes and wait until they have loaded the models."""
        if self.settings.scoring_processes <= 0 or self._pool is not None:
            return
        self._pool = self._new_pool()
        await self.preload(self._spec)
        log.info("scoring processes ready with %s", self._spec)

    async def preload(self, spec: ModelSpec) -> None:
        """Have the scoring processes load `spec`'s models now rather than in the next micro-batch; raises
        what loading raises (ChecksumError...)."""
        self._spec = spec
        if self.settings.scoring_processes <= 0:
            return
        await self.start()
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _load, spec) for _ in range(self.settings.scoring_processes))
        )

    async def score(self, messages: Sequence[RawMessage], models: Models) -> tuple[list[Scored], float]:
        """One `Scored` per message, and the seconds scoring took where it ran."""
        loop = asyncio.get_running_loop()
        if self.settings.scoring_processes <= 0:
            return await loop.run_in_executor(None, _timed, self.pipeline.score, messages, models)
        return await self._in_pool(_score, messages, ModelSpec.of(models))

    async def predict(
        self, items: list[tuple[dict[str, Any], list[Issue]]], champion: Classifier, top_k: int, explain: int
    ) -> tuple[list[ItemOutcome], float]:
        """``POST /predict``: validated (item, warnings) pairs scored by `champion` where micro-batches are
        scored, one outcome each, and the seconds scoring took there."""
        if self.settings.scoring_processes <= 0:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                None, classify_items, self.pipeline, items, champion, top_k, explain
            )
        return await self._in_pool(_predict, items, champion.version, top_k, explain)

    async def _in_pool(self, work: Callable[..., T], *args: Any) -> T:
        """`work` in a scoring process; once more in a new pool if a process died meanwhile."""
        await self.start()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, work, *args)
        except BrokenProcessPool:
            log.error("a scoring process died; starting a new one and scoring the batch again")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            await self.start()
            return await loop.run_in_executor(self._pool, work, *args)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

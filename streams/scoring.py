"""Scoring on another core: ``Pipeline.score`` runs in a separate process.

Decoding, validation, featurization, the MLP and Avro encoding are mostly Python and hold the GIL, so in
a thread they compete with Faust's own per-record work on one core. A scoring process takes them to the
machine's other core; the worker keeps consuming the next micro-batch while the process scores this one.
``NOMENCLATURE_SCORING_PROCESSES=0`` scores in a thread of the worker instead.

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
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from threadpoolctl import threadpool_limits

from models.classifier import Classifier
from models.drift_baseline import Baseline
from models.registry import ModelRegistry
from schemas import catalogue_from_url
from streams.codes import load_code_lists
from streams.messages import RawMessage
from streams.pipeline import Pipeline, Scored
from streams.settings import Settings
from streams.validation import Validator

log = logging.getLogger(__name__)

_pipeline: Pipeline | None = None  # the scoring process's own pipeline


def build_pipeline(settings: Settings, classifier: Classifier, baseline: Baseline | None = None) -> Pipeline:
    validator = Validator(load_code_lists(), settings.max_name_length, settings.max_full_name_length)
    catalogue = catalogue_from_url(settings.schema_registry_url)
    return Pipeline(settings, classifier, catalogue, validator, baseline)


def limit_native_threads() -> None:
    """One thread for BLAS/OpenMP in this process (see the module doc)."""
    threadpool_limits(1)


def _exit_with_parent(parent: int) -> None:
    """End this scoring process once the worker that started it is gone (killed, or exited untidily):
    a pool worker otherwise outlives a ``kill -9`` of the worker, holding a model and its memory."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _init(settings: Settings, model_version: str) -> None:
    global _pipeline
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    limit_native_threads()
    registry = ModelRegistry(settings.models_dir)
    classifier = registry.load(model_version)  # sha256-checked again here
    _pipeline = build_pipeline(settings, classifier, registry.load_baseline(model_version))


def _score(messages: Sequence[RawMessage]) -> list[Scored]:
    assert _pipeline is not None, "scoring process not initialised"
    return _pipeline.score(messages)


def _ready() -> str:
    assert _pipeline is not None
    return _pipeline.classifier.version


class Scorer:
    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.settings.scoring_processes,
            # spawn, not fork: the worker already runs threads (Faust's consumer, aiokafka)
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(self.settings, self.pipeline.classifier.version),
        )

    async def start(self) -> None:
        """Start the scoring processes and wait until they have loaded the model."""
        if self.settings.scoring_processes <= 0 or self._pool is not None:
            return
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        versions = await asyncio.gather(
            *(loop.run_in_executor(self._pool, _ready) for _ in range(self.settings.scoring_processes))
        )
        log.info("scoring processes ready with model %s", versions[0])

    async def score(self, messages: Sequence[RawMessage]) -> list[Scored]:
        loop = asyncio.get_running_loop()
        if self.settings.scoring_processes <= 0:
            return await loop.run_in_executor(None, self.pipeline.score, messages)
        await self.start()
        assert self._pool is not None
        try:
            return await loop.run_in_executor(self._pool, _score, messages)
        except BrokenProcessPool:
            log.error("a scoring process died; starting a new one and scoring the batch again")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            await self.start()
            return await loop.run_in_executor(self._pool, _score, messages)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

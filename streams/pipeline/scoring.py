"""Scoring on another core: the model's work (``Pipeline.predict``) runs in a separate process.

Featurization, the MLP and its explanations are mostly Python and hold the GIL, so in a thread they would
compete with Faust's own per-record work on one core. A scoring process takes them to the machine's other
core; the worker keeps consuming the next micro-batch while the process scores this one. With one scoring
process (the default), the worker itself decodes and validates a micro-batch before it goes (only the
accepted items cross) and encodes the outputs when the predictions come back: that leaves the process, the
busier of the two, only the model's part, and puts the worker's idle share of its core to use (measured on
2 cores: scoring process 338–349 → 262–289 µs per item, worker 142–146 → 200–235, the pipeline +18–28%,
docs/benchmarks.md). With several, each does all of a micro-batch's scoring, so that they scale with their
number. ``NOMENCLATURE_SCORING_PROCESSES=0`` scores in a thread of the worker instead.

Each micro-batch names the model versions it is scored with (`ModelSpec`): a scoring process loads a version
from the shared registry (sha256-checked) the first time it is named and keeps the few in use, so a hot swap
in the worker (`streams.lifecycle.model_follower`) takes effect at the next micro-batch without restarting
anything.

A scoring process is a child of the worker with a socket to it (`ScoringProcess`), which the worker's
event loop reads: a call costs no thread handoff in the worker. The process ends with the socket (the worker
closed it or died) or when it sees its parent gone; a call that finds its process dead is made once more in
a new one.

Native thread pools (OpenBLAS, OpenMP) are held to one thread in both processes: with micro-batches of
a few hundred rows a second BLAS thread gains nothing, and its busy-waiting took ≈ 40% of a core from
the worker and the broker (measured: 11.7 s against 7.2 s of CPU for the same 39k items).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from threadpoolctl import threadpool_limits

from models.classifier import Classifier
from models.drift.baseline import Baseline
from models.registry.model_registry import ModelRegistry
from schemas import catalogue_from_url
from streams.pipeline import gc_pauses
from streams.pipeline.codes import load_code_lists
from streams.pipeline.messages import RawMessage
from streams.pipeline.micro_batch import Models, Pipeline, Predicted, Scored
from streams.pipeline.predict import ItemOutcome, classify_items
from streams.pipeline.validation import Issue, Validator
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
FRAME_HEADER = 8  # bytes: a frame's length, big-endian
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


def _init(settings: Settings) -> None:
    global _pipeline, _cache
    watch_parent(os.getppid())
    limit_native_threads()
    _cache = ModelCache(ModelRegistry(settings.models_dir))
    _pipeline = build_pipeline(settings)


def _score(messages: Sequence[RawMessage], spec: ModelSpec) -> tuple[list[Scored], float]:
    """`Pipeline.score` of a micro-batch, with this process's copies of `spec`'s models."""
    assert _pipeline is not None and _cache is not None, "scoring process not initialised"
    return _timed(_pipeline.score, messages, _cache.models(spec))


def _predict_accepted(items: list[dict[str, Any]], spec: ModelSpec) -> tuple[list[Predicted], float]:
    """`Pipeline.predict` of a micro-batch's accepted items, with this process's copies of `spec`'s models."""
    assert _pipeline is not None and _cache is not None, "scoring process not initialised"
    return _timed(_pipeline.predict, items, _cache.models(spec))


def _timed(work: Callable[..., T], *args: Any) -> tuple[T, float]:
    """What `work` returns and the seconds it took in this process (the IPC and queueing excluded)."""
    started = time.perf_counter()
    return work(*args), time.perf_counter() - started


def _predict(
    items: list[tuple[dict[str, Any], list[Issue]]], champion: str, top_k: int, explain: int
) -> tuple[list[ItemOutcome], float]:
    """``POST /predict``'s validated items, with this process's pipeline and its copy of the champion."""
    assert _pipeline is not None and _cache is not None, "scoring process not initialised"
    return classify_items(_pipeline, items, _cache.models(ModelSpec(champion)).champion, top_k, explain)


def _load(spec: ModelSpec) -> ModelSpec:
    """Load `spec`'s models (sha256-checked again here), then let the collector settle on them."""
    assert _cache is not None, "scoring process not initialised"
    models = _cache.models(spec)
    gc_pauses.settle()
    return ModelSpec.of(models)


class ScoringProcessDied(RuntimeError):
    """The scoring process ended (killed, out of memory) before it answered."""


class ScoringProcess:
    """One scoring process and the worker's end of its socket, read by the event loop.

    A call is one frame each way (an 8-byte length, then a pickle): the function and its arguments out,
    ``(ok, result or exception)`` back. The process answers in order, so the answers resolve the waiting
    calls first come, first served. No thread takes part on the worker's side: a ProcessPoolExecutor's
    queue-feeder and result threads each had to win the GIL from the busy event loop to pass a call on.
    """

    def __init__(self, settings: Settings) -> None:
        parent, child = socket.socketpair()
        # spawn, not fork: the worker already runs threads (Faust's consumer, aiokafka)
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=_serve, args=(child, settings), name="nomenclature-scoring", daemon=True
        )
        self.process.start()
        child.close()
        self._socket = parent
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._connecting: asyncio.Future[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self.died = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def load(self) -> int:
        """Calls sent and not yet answered."""
        return len(self._waiting)

    async def call(self, work: Callable[..., T], *args: Any) -> T:
        if not self.died and self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        if self._connecting is not None and not self._connecting.done():
            await asyncio.wait([self._connecting])  # concurrent first calls share one connection
        if self.died or self._writer is None:
            raise ScoringProcessDied(f"scoring process {self.pid} has ended")
        payload = pickle.dumps((work, args), protocol=pickle.HIGHEST_PROTOCOL)
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        self._writer.write(len(payload).to_bytes(FRAME_HEADER, "big"))
        self._writer.write(payload)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            answer.cancel()  # the reader skips it
            raise ScoringProcessDied(f"scoring process {self.pid} has ended: {exc}") from exc
        return await answer  # type: ignore[no-any-return]

    async def _connect(self) -> None:
        try:
            reader, self._writer = await asyncio.open_unix_connection(sock=self._socket)
        except OSError:
            self.died = True
            return
        self._reading = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(FRAME_HEADER), "big")
                payload = await reader.readexactly(size)
                answer = self._waiting.popleft()
                if answer.done():  # its caller was cancelled
                    continue
                try:
                    ok, value = pickle.loads(payload)
                except Exception as exc:  # e.g. an exception whose class cannot be rebuilt here
                    ok, value = False, exc
                if ok:
                    answer.set_result(value)
                else:
                    answer.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        self.died = True
        self._fail_waiting(ScoringProcessDied(f"scoring process {self.pid} ended before answering"))

    def _fail_waiting(self, error: Exception) -> None:
        while self._waiting:
            answer = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(error)

    def close(self) -> None:
        """Close the socket: the process sees its end and exits."""
        self.died = True
        for task in (self._connecting, self._reading):
            if task is not None:
                task.cancel()
        try:  # the process sees the end now, not when the event loop gets to closing the transport
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already
            pass
        if self._writer is not None:
            self._writer.close()
        else:
            self._socket.close()
        self._fail_waiting(ScoringProcessDied("the scorer was closed"))


def _serve(channel: socket.socket, settings: Settings) -> None:
    """A scoring process's loop: a call in, its answer out, until the worker closes its end."""
    _init(settings)
    while True:
        header = _receive(channel, FRAME_HEADER)
        if header is None:
            os._exit(0)
        request = _receive(channel, int.from_bytes(header, "big"))
        if request is None:
            os._exit(0)
        try:
            work, args = pickle.loads(request)
            answer = (True, work(*args))
        except Exception as exc:
            answer = (False, exc)
        try:
            payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an answer or exception that does not pickle
            payload = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        try:
            channel.sendall(len(payload).to_bytes(FRAME_HEADER, "big") + payload)
        except OSError:
            os._exit(0)


def _receive(channel: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None once the other end has closed."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = channel.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buffer)


class Scorer:
    def __init__(self, settings: Settings, pipeline: Pipeline, models: Models) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self._spec = ModelSpec.of(models)  # what a new scoring process loads first
        self._processes: list[ScoringProcess] = []

    async def start(self) -> None:
        """Start the scoring processes and wait until they have loaded the models."""
        if self.settings.scoring_processes <= 0 or self._processes:
            return
        self._processes = [ScoringProcess(self.settings) for _ in range(self.settings.scoring_processes)]
        await self.preload(self._spec)
        log.info("scoring processes ready with %s", self._spec)

    async def preload(self, spec: ModelSpec) -> None:
        """Have the scoring processes load `spec`'s models now rather than in the next micro-batch; raises
        what loading raises (ChecksumError...)."""
        self._spec = spec
        if self.settings.scoring_processes <= 0:
            return
        await self.start()
        await asyncio.gather(*(process.call(_load, spec) for process in self._processes))

    async def score(self, messages: Sequence[RawMessage], models: Models) -> tuple[list[Scored], float]:
        """One `Scored` per message, and the seconds scoring took where it ran.

        With one scoring process, the worker decodes, validates and encodes (`Pipeline.accept`, `encode`)
        and the process runs the model (`Pipeline.predict`): what crosses is the accepted items and their
        predictions, and the work is shared between two cores rather than all on the process's. With more,
        each process does all of it, so that they scale with their number.
        """
        pipeline = self.pipeline
        processes = self.settings.scoring_processes
        if processes <= 0:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, _timed, pipeline.score, messages, models)
        if processes > 1:
            return await self._in_process(_score, messages, ModelSpec.of(models))
        accepted = pipeline.accept(messages)
        items = accepted.items()
        predictions, seconds = (
            await self._in_process(_predict_accepted, items, ModelSpec.of(models)) if items else ([], 0.0)
        )
        return pipeline.encode(messages, accepted, predictions, models), seconds

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
        return await self._in_process(_predict, items, champion.version, top_k, explain)

    async def _in_process(self, work: Callable[..., T], *args: Any) -> T:
        """`work` in the least busy scoring process; once more in a new one if that one died meanwhile."""
        await self.start()
        process = self._least_busy()
        try:
            return await process.call(work, *args)
        except ScoringProcessDied:
            if not self._processes:  # the scorer was closed
                raise
            if process in self._processes:
                log.error("scoring process %s died; scoring again in a new one", process.pid)
                process.close()
                index = self._processes.index(process)
                process = self._processes[index] = ScoringProcess(self.settings)
                await process.call(_load, self._spec)  # as at start: models loaded, the collector settled
            else:  # another call has replaced it already
                process = self._least_busy()
            return await process.call(work, *args)

    def _least_busy(self) -> ScoringProcess:
        return min(self._processes, key=lambda one: one.load)

    def close(self) -> None:
        processes, self._processes = self._processes, []
        for process in processes:
            process.close()

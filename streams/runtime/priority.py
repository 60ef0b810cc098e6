"""Priority and backpressure for ``POST /predict``: a bounded queue served richest request first by a fixed
pool of tasks, which yields scoring time to the stream while the stream has work.

* **Weight** (`request_weight`): the mean richness of a request's items (`item_richness`: a full name that
  says more than the name, kind, unit, ОКВЭД2 / ТН ВЭД / country codes, a longer name). Rich items are the
  ones the model classifies best, and the callers who send them are the ones this service is for; a large
  request of bare names does not outrank a small rich one, as the weight is a mean, not a sum.
* **Order**: the heaviest waiting request is served next; equal weights are served first come, first served.
  Waiting adds weight (`AGING_PER_SECOND`: a request that has waited a second longer outranks one a point
  richer), so a steady stream of rich requests delays poor ones by seconds but never starves them. With
  strict order, the small differences between ordinary requests' weights made `tools.bench_predict`'s 10
  closed-loop clients see p99 3.9 s (p50 27 ms); with aging, p99 0.48 s (p50 57 ms).
* **Backpressure**: at most ``queue_size`` requests wait; one more is refused at once (`QueueFull`, a 429
  with ``Retry-After``: recent service time × waiting requests / workers, at least 1 s).
* **The stream's share**: while ``stream_busy()`` says the stream is handling micro-batches, /predict takes
  at most ``share`` of scoring time: after a job that took d seconds of scoring, no job starts for
  d·(1−share)/share seconds, unless the stream goes idle first.

Pure asyncio, free of Faust: the web view (`streams.web.predict_view`) submits jobs, `streams.app` starts and
stops the pool.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")

# item_richness: what each part adds (the most an item reaches is their sum, 7.5)
RICHNESS_POINTS: dict[str, float] = {
    "full_name": 2.0,  # present and different from name
    "kind": 1.0,
    "unit": 1.0,
    "okved_code": 1.0,
    "hs_code": 1.0,
    "country": 0.5,
    "name_length": 1.0,  # in proportion to the name's length, full from NAME_LENGTH_FULL characters
}
NAME_LENGTH_FULL = 60
SMOOTHING = 0.2  # weight of the newest job in the running mean of service times
POLL_SECONDS = 0.05  # how often a paused pool looks whether the stream went idle
AGING_PER_SECOND = 1.0  # weight a waiting request gains per second (the module doc)


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def item_richness(item: Mapping[str, Any]) -> float:
    """How much an item tells about itself, from 0 (a bare short name) to 7.5 (see `RICHNESS_POINTS`)."""
    name, full_name = _text(item.get("name")), _text(item.get("full_name"))
    points = RICHNESS_POINTS
    score = 0.0
    if full_name and full_name.casefold() != name.casefold():
        score += points["full_name"]
    for key in ("kind", "unit", "okved_code", "hs_code", "country"):
        if _text(item.get(key)):
            score += points[key]
    score += points["name_length"] * min(len(name), NAME_LENGTH_FULL) / NAME_LENGTH_FULL
    return score


def request_weight(items: Iterable[Mapping[str, Any]]) -> float:
    """The mean `item_richness` of a request's items (0 for none), rounded to 3 decimals."""
    scores = [item_richness(item) for item in items]
    return round(sum(scores) / len(scores), 3) if scores else 0.0


class QueueMetrics(Protocol):
    """What the scheduler reports to, when given (`streams.runtime.metrics.WorkerMetrics`)."""

    predict_queue_wait_seconds: Any  # Histogram
    predict_queue_depth: Any  # Gauge


class QueueFull(Exception):
    """The queue holds ``queue_size`` requests; ask again in ``retry_after`` seconds."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(
            f"{waiting} requests are waiting, the most the queue holds; retry in {retry_after} s"
        )
        self.waiting = waiting
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    value: T
    weight: float
    queued_seconds: float  # from submit to the job's start (a pause for the stream included)
    scoring_seconds: float  # what the job reported


@dataclass(order=True)
class _Entry:
    # (arrival time × aging − weight, arrival number): a fixed key, as every waiting request ages alike
    rank: tuple[float, int]
    job: Callable[[], Awaitable[tuple[Any, float]]] = field(compare=False)
    weight: float = field(compare=False)
    submitted: float = field(compare=False)
    done: asyncio.Future[Served[Any]] = field(compare=False)


class PriorityScheduler:
    """A bounded priority queue and ``workers`` tasks that run its jobs; see the module doc."""

    def __init__(
        self,
        workers: int,
        queue_size: int,
        share: float,
        stream_busy: Callable[[], bool],
        metrics: QueueMetrics | None = None,
    ) -> None:
        if workers < 1 or queue_size < 1 or not 0 < share <= 1:
            raise ValueError(
                f"need workers ≥ 1, queue_size ≥ 1, 0 < share ≤ 1: {workers}, {queue_size}, {share}"
            )
        self.workers = workers
        self.queue_size = queue_size
        self.share = share
        self.stream_busy = stream_busy
        self.metrics = metrics
        self._heap: list[_Entry] = []
        self._arrivals = itertools.count()
        self._ready: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._not_before = 0.0  # no job starts before this while the stream is busy
        self.service_seconds = 0.0  # running mean of a job's time in a worker, its pause included
        self.served = 0

    @property
    def waiting(self) -> int:
        return len(self._heap)

    def retry_after(self) -> int:
        """Whole seconds until a place in the queue is likely free (at least 1)."""
        return max(1, math.ceil(self.service_seconds * self.waiting / self.workers))

    async def start(self) -> None:
        """Start the pool's tasks (`run` does, too: the web server answers before the app's services run)."""
        if self._tasks or self._stopped:
            return
        self._ready = asyncio.Condition()
        self._tasks = [asyncio.create_task(self._serve(), name=f"predict-{n}") for n in range(self.workers)]

    async def stop(self) -> None:
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for entry in self._heap:
            entry.done.cancel()
        self._heap.clear()
        self._report_depth()

    async def run(self, job: Callable[[], Awaitable[tuple[T, float]]], weight: float) -> Served[T]:
        """Queue `job` (which returns its value and the seconds of scoring it took) and wait for it to be
        served; raises `QueueFull` at once when the queue is full."""
        await self.start()
        if self._stopped or self._ready is None:
            raise RuntimeError("the scheduler is stopped")
        if len(self._heap) >= self.queue_size:
            raise QueueFull(len(self._heap), self.retry_after())
        done: asyncio.Future[Served[Any]] = asyncio.get_running_loop().create_future()
        now = time.perf_counter()
        entry = _Entry((now * AGING_PER_SECOND - weight, next(self._arrivals)), job, weight, now, done)
        heapq.heappush(self._heap, entry)
        self._report_depth()
        async with self._ready:
            self._ready.notify()
        try:
            return await done
        except asyncio.CancelledError:  # the caller went away: its request need not be scored
            if entry in self._heap:
                self._heap.remove(entry)
                heapq.heapify(self._heap)
                self._report_depth()
            raise

    async def _serve(self) -> None:
        assert self._ready is not None
        while True:
            async with self._ready:
                await self._ready.wait_for(lambda: bool(self._heap))
            await self._yield_to_stream()
            if not self._heap:  # another worker took it, or its caller left, meanwhile
                continue
            entry = heapq.heappop(self._heap)
            self._report_depth()
            started = time.perf_counter()
            queued = started - entry.submitted
            if self.metrics is not None:
                self.metrics.predict_queue_wait_seconds.observe(queued)
            try:
                value, scoring = await entry.job()
            except asyncio.CancelledError:
                entry.done.cancel()
                raise
            except Exception as exc:
                scoring = time.perf_counter() - started
                if not entry.done.done():
                    entry.done.set_exception(exc)
            else:
                if not entry.done.done():
                    entry.done.set_result(Served(value, entry.weight, queued, scoring))
            self._account(started, scoring)

    def _account(self, started: float, scoring: float) -> None:
        """The pause the stream is owed for `scoring` seconds, and the running mean of service times."""
        now = time.perf_counter()
        if self.stream_busy():
            self._not_before = max(self._not_before, now) + scoring * (1 - self.share) / self.share
        pause = max(0.0, self._not_before - now)
        took = now - started + pause
        self.served += 1
        self.service_seconds = (
            took if self.served == 1 else (1 - SMOOTHING) * self.service_seconds + SMOOTHING * took
        )

    async def _yield_to_stream(self) -> None:
        while self.stream_busy() and (left := self._not_before - time.perf_counter()) > 0:
            await asyncio.sleep(min(left, POLL_SECONDS))

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.predict_queue_depth.set(len(self._heap))

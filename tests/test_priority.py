"""The /predict scheduler (`streams.runtime.priority`), without Kafka: weights, order, 429, the share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from streams.runtime.priority import (
    AGING_PER_SECOND,
    RICHNESS_POINTS,
    PriorityScheduler,
    QueueFull,
    item_richness,
    request_weight,
)

RICH = {
    "id": "r",
    "name": "Ноутбук Lenovo ThinkPad E14 Gen 5, 14 дюймов, 16 ГБ, SSD 512 ГБ",
    "full_name": "Портативный персональный компьютер Lenovo ThinkPad E14",
    "kind": "Товар",
    "unit": "шт",
    "okved_code": "47.11",
    "hs_code": "8471300000",
    "country": "CN",
}


def test_richness_counts_each_part_and_the_name_length() -> None:
    bare = {"id": "b", "name": "Болт", "full_name": "Болт"}
    assert item_richness(bare) == pytest.approx(len("Болт") / 60)
    assert item_richness(RICH) == pytest.approx(sum(RICHNESS_POINTS.values()))
    without_codes = {k: v for k, v in RICH.items() if k not in ("okved_code", "hs_code", "country")}
    assert item_richness(without_codes) == pytest.approx(item_richness(RICH) - 2.5)


def test_a_full_name_that_repeats_the_name_adds_nothing() -> None:
    same = {"name": "Ремонт  насоса", "full_name": "ремонт насоса "}
    other = {"name": "Ремонт насоса", "full_name": "Ремонт центробежного насоса"}
    assert item_richness(other) - item_richness(same) == pytest.approx(RICHNESS_POINTS["full_name"])
    assert item_richness({"name": "Ремонт", "unit": "  ", "kind": None, "hs_code": 84}) == item_richness(
        {"name": "Ремонт"}
    )


def test_request_weight_is_the_mean_not_the_sum() -> None:
    bare = {"name": "Болт", "full_name": "Болт"}
    assert request_weight([RICH]) == pytest.approx(7.5)
    assert request_weight([RICH, bare]) == pytest.approx((7.5 + item_richness(bare)) / 2, abs=1e-3)
    assert request_weight([bare] * 100) < request_weight([RICH])
    assert request_weight([]) == 0.0


def job(
    log: list[str], name: str, seconds: float = 0.0, gate: asyncio.Event | None = None
) -> Callable[[], Awaitable[tuple[str, float]]]:
    """A job that waits for `gate`, sleeps `seconds`, logs its name and reports `seconds` of scoring."""

    async def run() -> tuple[str, float]:
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(seconds)
        log.append(name)
        return name, seconds

    return run


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def scheduler(**kwargs: Any) -> PriorityScheduler:
    options: dict[str, Any] = {"workers": 1, "queue_size": 8, "share": 1.0, "stream_busy": lambda: False}
    return PriorityScheduler(**(options | kwargs))


def test_the_richest_waiting_request_goes_first_then_first_come() -> None:
    async def scenario() -> list[str]:
        pool = scheduler()
        await pool.start()
        log: list[str] = []
        gate = asyncio.Event()
        blocker = asyncio.create_task(pool.run(job(log, "blocker", gate=gate), 0.0))
        await asyncio.sleep(0.01)  # the blocker is running, so the rest wait
        waiting = [("poor", 1.0), ("rich-1", 5.0), ("middle", 3.0), ("rich-2", 5.0), ("bare", 0.0)]
        tasks = [asyncio.create_task(pool.run(job(log, name), weight)) for name, weight in waiting]
        await until(lambda: pool.waiting == len(waiting))
        gate.set()
        await asyncio.gather(blocker, *tasks)
        await pool.stop()
        return log

    assert asyncio.run(scenario()) == ["blocker", "rich-1", "rich-2", "middle", "poor", "bare"]


def test_a_full_queue_refuses_at_once_with_a_retry_after_from_recent_service_times() -> None:
    async def scenario() -> None:
        pool = scheduler(queue_size=3)
        await pool.start()
        log: list[str] = []
        for n in range(2):  # two jobs of 0.5 s teach it the service time
            await pool.run(job(log, f"warm-{n}", 0.5), 1.0)
        gate = asyncio.Event()
        blocker = asyncio.create_task(pool.run(job(log, "blocker", gate=gate), 1.0))
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(pool.run(job(log, f"q{n}"), 1.0)) for n in range(3)]
        await until(lambda: pool.waiting == 3)
        with pytest.raises(QueueFull) as refused:
            await pool.run(job(log, "refused"), 100.0)  # however rich: the queue is full
        assert refused.value.waiting == 3
        assert refused.value.retry_after >= 2  # ≈ 0.5 s × 3 waiting / 1 worker, rounded up
        assert refused.value.retry_after == pool.retry_after()
        gate.set()
        await asyncio.gather(blocker, *queued)
        assert "refused" not in log
        assert (await pool.run(job(log, "later"), 1.0)).value == "later"  # room again
        await pool.stop()

    asyncio.run(scenario())


def test_retry_after_is_at_least_one_second() -> None:
    pool = scheduler()
    assert pool.retry_after() == 1


def run_jobs(pool: PriorityScheduler, count: int, seconds: float) -> float:
    """Seconds `count` jobs of `seconds` each, submitted together, take through `pool`."""

    async def scenario() -> float:
        await pool.start()
        log: list[str] = []
        started = time.perf_counter()
        await asyncio.gather(*(pool.run(job(log, str(n), seconds), 1.0) for n in range(count)))
        elapsed = time.perf_counter() - started
        await pool.stop()
        assert len(log) == count
        return elapsed

    return asyncio.run(scenario())


def test_while_the_stream_is_busy_predict_takes_at_most_its_share() -> None:
    idle = run_jobs(scheduler(share=0.5, stream_busy=lambda: False), 4, 0.1)
    half = run_jobs(scheduler(share=0.5, stream_busy=lambda: True), 4, 0.1)
    quarter = run_jobs(scheduler(share=0.25, stream_busy=lambda: True), 4, 0.1)
    assert idle < 0.6  # 4 × 0.1 s, no pauses
    # a pause of d·(1−share)/share after each of the first three jobs
    assert half >= 0.4 + 3 * 0.1 - 0.02
    assert quarter >= 0.4 + 3 * 0.3 - 0.02
    assert half < 0.7 + 0.3  # and no more than that


def test_the_pause_ends_when_the_stream_goes_idle() -> None:
    busy = {"now": True}

    async def scenario() -> float:
        pool = scheduler(share=0.01, stream_busy=lambda: busy["now"])  # owes the stream 99 × each job
        await pool.start()
        log: list[str] = []
        await pool.run(job(log, "first", 0.05), 1.0)  # ≈ 5 s of pause owed
        second = asyncio.create_task(pool.run(job(log, "second"), 1.0))
        await asyncio.sleep(0.2)
        assert log == ["first"]  # held back
        started = time.perf_counter()
        busy["now"] = False
        await second
        await pool.stop()
        return time.perf_counter() - started

    assert asyncio.run(scenario()) < 0.5


def test_a_served_request_reports_its_wait_its_scoring_time_and_weight() -> None:
    async def scenario() -> None:
        pool = scheduler()
        await pool.start()
        log: list[str] = []
        first = asyncio.create_task(pool.run(job(log, "first", 0.2), 1.0))
        await asyncio.sleep(0.01)
        served = await pool.run(job(log, "second", 0.05), 2.5)
        await first
        await pool.stop()
        assert served.value == "second"
        assert served.weight == 2.5
        assert served.queued_seconds >= 0.15
        assert served.scoring_seconds == 0.05

    asyncio.run(scenario())


def test_a_caller_that_leaves_frees_its_place_and_its_job_never_runs() -> None:
    async def scenario() -> None:
        pool = scheduler(queue_size=1)
        await pool.start()
        log: list[str] = []
        gate = asyncio.Event()
        blocker = asyncio.create_task(pool.run(job(log, "blocker", gate=gate), 1.0))
        await asyncio.sleep(0.01)
        leaving = asyncio.create_task(pool.run(job(log, "left"), 1.0))
        await until(lambda: pool.waiting == 1)
        leaving.cancel()
        await asyncio.gather(leaving, return_exceptions=True)
        assert pool.waiting == 0
        staying = asyncio.create_task(pool.run(job(log, "stayed"), 1.0))  # fits again
        gate.set()
        await asyncio.gather(blocker, staying)
        await pool.stop()
        assert log == ["blocker", "stayed"]

    asyncio.run(scenario())


def test_a_failing_job_fails_its_caller_only() -> None:
    async def scenario() -> None:
        pool = scheduler()
        await pool.start()

        async def broken() -> tuple[str, float]:
            raise ValueError("model exploded")

        with pytest.raises(ValueError, match="model exploded"):
            await pool.run(broken, 1.0)
        assert (await pool.run(job([], "next"), 1.0)).value == "next"
        await pool.stop()

    asyncio.run(scenario())


def test_metrics_see_the_depth_and_the_wait() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.values: list[float] = []

        def observe(self, value: float) -> None:
            self.values.append(value)

        def set(self, value: float) -> None:
            self.values.append(value)

    class Metrics:
        def __init__(self) -> None:
            self.predict_queue_wait_seconds = Recorder()
            self.predict_queue_depth = Recorder()

    metrics = Metrics()

    async def scenario() -> None:
        pool = scheduler(metrics=metrics)
        await pool.start()
        await asyncio.gather(*(pool.run(job([], str(n), 0.02), 1.0) for n in range(3)))
        await pool.stop()

    asyncio.run(scenario())
    assert len(metrics.predict_queue_wait_seconds.values) == 3
    assert max(metrics.predict_queue_depth.values) >= 2
    assert metrics.predict_queue_depth.values[-1] == 0


def test_run_starts_the_pool_itself_and_a_stopped_pool_refuses() -> None:
    async def scenario() -> None:
        pool = scheduler()  # not started: the web server may answer before the app's services start
        assert (await pool.run(job([], "early"), 1.0)).value == "early"
        await pool.stop()
        with pytest.raises(RuntimeError, match="stopped"):
            await pool.run(job([], "late"), 1.0)

    asyncio.run(scenario())


def test_waiting_adds_weight_so_poor_requests_are_delayed_not_starved() -> None:
    async def scenario() -> list[str]:
        pool = scheduler()
        await pool.start()
        log: list[str] = []
        gate = asyncio.Event()
        blocker = asyncio.create_task(pool.run(job(log, "blocker", gate=gate), 0.0))
        await asyncio.sleep(0.01)
        poor = asyncio.create_task(pool.run(job(log, "poor"), 0.0))
        await asyncio.sleep(0.6 / AGING_PER_SECOND)  # poor has gained 0.6 points meanwhile
        richer = asyncio.create_task(pool.run(job(log, "half a point richer"), 0.5))
        much_richer = asyncio.create_task(pool.run(job(log, "a point richer"), 1.0))
        await until(lambda: pool.waiting == 3)
        gate.set()
        await asyncio.gather(blocker, poor, richer, much_richer)
        await pool.stop()
        return log

    assert asyncio.run(scenario()) == ["blocker", "a point richer", "poor", "half a point richer"]

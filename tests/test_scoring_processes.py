"""The scorer's processes: they score as the worker itself would, and one that dies is replaced."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from models.registry.model_registry import ModelRegistry
from streams.pipeline.messages import RawMessage
from streams.pipeline.micro_batch import Models, Scored
from streams.pipeline.scoring import (
    Scorer,
    ScoringProcess,
    ScoringProcessDied,
    _predict_accepted,
    build_pipeline,
)
from streams.settings import Settings
from streams.topics import RAW
from tests.support import classified_serde, item_serde, make_item

NAMES = ["Ремонт насоса", "Болт М8 оцинкованный", "Услуги по уборке помещений", "Кабель ВВГ 3х2,5"]


def _messages(first_offset: int) -> list[RawMessage]:
    serde = item_serde()
    values = [serde.encode(make_item(f"sp-{first_offset + i}", name)) for i, name in enumerate(NAMES)]
    values.append(serde.encode(make_item("sp-empty", "", full_name="")))  # refused at validation
    values.append(b"\x00not avro")  # refused at decode
    return [
        RawMessage(RAW, 0, first_offset + i, 1_700_000_000_000, None, value) for i, value in enumerate(values)
    ]


def _outcome(scored: list[Scored]) -> list[tuple[object, ...]]:
    """What a record's scoring said, its output record and item-table value included (less the time)."""
    classified = classified_serde()

    def timeless(record: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in record.items() if k != "classified_at"}

    return [
        (
            *(s.item_id, s.stage, s.errors, s.content_hash, s.label, s.confidence, s.drift),
            timeless(classified.decode(s.value)) if s.value else None,
            timeless(json.loads(s.state)) if s.state else None,
        )
        for s in scored
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _models(settings: Settings) -> Models:
    registry = ModelRegistry(settings.models_dir)
    champion = registry.load()
    return Models(champion, registry.load_baseline(champion.version))


@pytest.fixture
def settings(trained_models: Path) -> Settings:
    return Settings(scoring_processes=2, models_path=trained_models)


def test_processes_score_like_the_worker_and_a_killed_one_is_replaced(settings: Settings) -> None:
    pipeline = build_pipeline(settings)
    models = _models(settings)
    expected = _outcome(pipeline.score(_messages(0), models))
    assert [row[1] for row in expected[-2:]] == ["validate", "decode"]
    assert all(row[4] and row[6] and row[7] and row[8] for row in expected[:-2])

    async def scenario() -> tuple[list[Scored], list[Scored], list[Scored], set[int], set[int]]:
        scorer = Scorer(settings, pipeline, models)
        try:
            await scorer.start()
            # two batches at once: one to each process
            first, second = await asyncio.gather(
                scorer.score(_messages(0), models), scorer.score(_messages(0), models)
            )
            pids = await asyncio.gather(scorer._in_process(os.getpid), scorer._in_process(os.getpid))
            assert len(set(pids)) == 2, "two calls at once go to the two processes"
            before = {process.pid for process in scorer._processes}
            victim = scorer._processes[0].pid
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(victim) and scorer._processes[0].process.exitcode is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # the worker's end reads the socket's close
            after_kill = [await scorer.score(_messages(0), models) for _ in range(3)]
            after = {process.pid for process in scorer._processes}
            return first[0], second[0], after_kill[-1][0], before, after
        finally:
            scorer.close()

    first, second, again, before, after = asyncio.run(scenario())
    assert len(before) == 2
    assert _outcome(first) == expected and _outcome(second) == expected
    assert _outcome(again) == expected, "scored again in the new process, the same"
    assert len(after) == 2 and len(after & before) == 1, "the killed process was replaced, the other kept"


def test_one_process_runs_the_model_and_the_worker_the_rest_to_the_same_records(trained_models: Path) -> None:
    """With one scoring process the worker decodes, validates and encodes and the process predicts; what
    comes out is what `Pipeline.score` gives, and only the accepted items cross to the process."""
    settings = Settings(scoring_processes=1, models_path=trained_models)
    pipeline = build_pipeline(settings)
    models = _models(settings)
    messages = _messages(0)
    expected = _outcome(pipeline.score(messages, models))
    crossed: list[int] = []

    async def scenario() -> list[Scored]:
        scorer = Scorer(settings, pipeline, models)
        call = ScoringProcess.call

        async def counted(process: ScoringProcess, work: Any, *args: Any) -> Any:
            if work is _predict_accepted:
                crossed.append(len(args[0]))
            return await call(process, work, *args)

        try:
            await scorer.start()
            ScoringProcess.call = counted  # type: ignore[method-assign]
            return (await scorer.score(messages, models))[0]
        finally:
            ScoringProcess.call = call  # type: ignore[method-assign]
            scorer.close()

    assert _outcome(asyncio.run(scenario())) == expected
    assert crossed == [len(NAMES)], "the refused records stayed in the worker"


def test_an_error_comes_back_as_itself_and_a_closed_scorer_ends_its_processes(settings: Settings) -> None:
    pipeline = build_pipeline(settings)
    models = _models(settings)

    async def scenario() -> list[int]:
        scorer = Scorer(settings, pipeline, models)
        await scorer.start()
        processes = list(scorer._processes)
        with pytest.raises(ValueError, match="invalid literal"):
            await processes[0].call(int, "not a number")
        assert await processes[0].call(len, [1, 2, 3]) == 3, "the process lives on after an error"
        scorer.close()
        with pytest.raises(ScoringProcessDied):
            await processes[0].call(len, [])
        for process in processes:
            process.process.join(10)
        return [process.process.exitcode for process in processes]

    assert asyncio.run(scenario()) == [0, 0], "each process saw its socket close and exited"

"""``POST /predict``: items classified on request, by the champion the stream uses, where the stream scores.

The request is checked here (size, shape, each item by the stream's validator: `streams.pipeline.predict`),
queued by weight (`streams.runtime.priority`), and scored in the scoring processes
(`streams.pipeline.scoring.Scorer.predict`). The contract, with examples: docs/predict.md. The function
returns the view's class; `streams.app` mounts it at its path.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from faust.web import Request, Response, View

from streams.pipeline.micro_batch import Models, Pipeline
from streams.pipeline.predict import (
    ItemOutcome,
    RequestError,
    body_too_large,
    check_items,
    parse_request,
    response_body,
)
from streams.pipeline.scoring import Scorer
from streams.runtime.metrics import WorkerMetrics
from streams.runtime.priority import PriorityScheduler, QueueFull, request_weight
from streams.settings import Settings

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024


class PredictWorker(Protocol):
    """What the view uses of the classify agent's runner (`streams.runner.Runner`)."""

    pipeline: Pipeline
    scorer: Scorer
    models: Models
    metrics: WorkerMetrics


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, read in chunks and refused (413) as soon as it passes `limit` bytes, whatever the
    Content-Length said (a chunked body has none)."""
    content = request.content  # type: ignore[attr-defined]  # Faust's web driver is aiohttp's
    chunks, size = [], 0
    while chunk := await content.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise body_too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def declared_length(request: Request, limit: int) -> None:
    """Refuse a body whose Content-Length is over `limit` before reading any of it."""
    header = request.headers.get("Content-Length")
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise RequestError(400, f"Content-Length is not a number: {header!r}") from None
    if length > limit:
        raise body_too_large(length, limit)


def predict_view(settings: Settings, runner: PredictWorker, scheduler: PriorityScheduler) -> type[View]:
    metrics = runner.metrics

    async def answer(request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            declared_length(request, settings.predict_max_bytes)
            parsed = parse_request(await read_capped(request, settings.predict_max_bytes), settings)
        except RequestError as exc:
            return exc.status, {"error": exc.message}, {}
        checked = check_items(runner.pipeline.validator, parsed.items)
        pairs = [(item, warnings) for _, item, warnings in checked.accepted]
        weight = request_weight(item for item, _ in pairs)
        outcomes: list[ItemOutcome] = []
        timing = {"queued_ms": 0.0, "scoring_ms": 0.0}
        if pairs:

            async def job() -> tuple[list[ItemOutcome], float]:
                champion = runner.models.champion  # the stream's, when the job starts
                return await runner.scorer.predict(pairs, champion, parsed.top_k, parsed.explain)

            try:
                served = await scheduler.run(job, weight)
            except QueueFull as exc:
                message = f"too many /predict requests waiting ({exc.waiting}); retry in {exc.retry_after} s"
                body = {"error": message, "retry_after": exc.retry_after}
                return 429, body, {"Retry-After": str(exc.retry_after)}
            outcomes = served.value
            timing = {
                "queued_ms": round(served.queued_seconds * 1000, 3),
                "scoring_ms": round(served.scoring_seconds * 1000, 3),
            }
        status, body = response_body(checked, outcomes)
        return status, body | {"weight": weight, "timing": timing}, {}

    class PredictView(View):
        async def post(self, request: Request) -> Response:
            try:
                status, body, headers = await answer(request)
            except Exception as exc:
                log.exception("POST /predict failed")
                status, body, headers = 500, {"error": f"classifying failed: {type(exc).__name__}: {exc}"}, {}
            metrics.predict_answered(status, len(body.get("results", ())), len(body.get("rejected", ())))
            return self.json(body, status=status, headers=headers)

    return PredictView

"""``GET /review``: the review page; ``GET /review/items``: what it shows; ``POST /review/answer``: a
reviewer's answer, published as a Correction to ``nomenclature.corrections`` (the retraining loop's input).

All three are protected like the other admin actions (`streams.web.auth`): a browser signs in with HTTP
Basic (``NOMENCLATURE_ADMIN_USER``/``_PASSWORD``), whose user is the reviewer; with a bearer token or on a
loopback bind without secrets the page asks for the reviewer's name. An answer is refused, and nothing
published, for an id not in the queue, a model version other than the one the item was queued for (the
page is stale), a label other than product/service, or a reviewer who already answered the item.
"""

from __future__ import annotations

import html
import json
from typing import Any

from faust.web import Request, Response, View

from schemas import now_ms
from streams.lifecycle.agents import CorrectionsAgent
from streams.lifecycle.corrections import MAX_USER_LENGTH, correction_value
from streams.pipeline.emit import BatchProducer
from streams.pipeline.messages import OutRecord
from streams.review.board import AnswerRefused, ReviewBoard
from streams.settings import Settings
from streams.topics import CORRECTIONS
from streams.web.auth import Admin, AdminCheck, admin_only
from streams.web.dashboard import static_file

PAGE_PATH = "/review"
ITEMS_PATH = "/review/items"
ANSWER_PATH = "/review/answer"
PAGE_SIZE = 50


def review_page_view(settings: Settings, check: AdminCheck) -> type[View]:
    config = {
        "paths": {"items": ITEMS_PATH, "answer": ANSWER_PATH},
        "threshold": settings.review_threshold,
        "max_per_hour": settings.review_max_per_hour,
        "votes": settings.review_votes,
    }
    page = (
        static_file("review.html")
        .decode("utf-8")
        .replace("{{config}}", html.escape(json.dumps(config), quote=True))
        .replace("{{app_id}}", html.escape(settings.app_id))
        .replace("{{script}}", static_file("review.js").decode("utf-8"))
    )

    class ReviewPage(View):
        @admin_only(check)
        async def get(self, request: Request, admin: Admin) -> Response:
            signed_in = html.escape(admin.user or "", quote=True)
            return self.html(page.replace("{{user}}", signed_in), headers={"Cache-Control": "no-cache"})

    return ReviewPage


def review_items_view(board: ReviewBoard, check: AdminCheck) -> type[View]:
    class ReviewItems(View):
        @admin_only(check)
        async def get(self, request: Request, admin: Admin) -> Response:
            reviewer = admin.user or request.query.get("reviewer") or None
            try:
                limit = max(1, min(1000, int(request.query.get("limit", PAGE_SIZE))))
            except ValueError:
                return self.json({"error": "limit must be a whole number"}, status=400)
            return self.json(
                {
                    "reviewer": reviewer,
                    "items": board.waiting(reviewer, limit),
                    "counts": board.counts(),
                    "agreement": board.agreement(),
                    "votes": board.votes,
                }
            )

    return ReviewItems


def review_answer_view(
    board: ReviewBoard, producer: BatchProducer, corrections: CorrectionsAgent, check: AdminCheck
) -> type[View]:
    processor = corrections.processor

    class ReviewAnswer(View):
        @admin_only(check)
        async def post(self, request: Request, admin: Admin) -> Response:
            try:
                body = json.loads((await request.read()).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return self.json({"error": f"the body is not JSON: {exc}"}, status=400)
            if not isinstance(body, dict):
                return self.json({"error": "expected an answer object: id, label, model_version"}, status=400)
            reviewer = admin.user or _text(body.get("reviewer"))
            if not reviewer:
                return self.json(
                    {"error": "who answers? sign in with HTTP Basic, or give 'reviewer' (your name)"},
                    status=400,
                )
            if len(reviewer) > MAX_USER_LENGTH:
                return self.json({"error": f"reviewer: at most {MAX_USER_LENGTH} characters"}, status=400)
            try:
                item = board.check_answer(
                    body.get("id"), body.get("label"), body.get("model_version"), reviewer
                )
            except AnswerRefused as refused:
                return self.json({"error": refused.message, "published": 0}, status=refused.status)
            value = correction_value(
                {
                    "id": item["id"],
                    "name": item["item"].get("name"),
                    "full_name": item["item"].get("full_name"),
                    "label": body["label"],
                    "user": reviewer,
                    "comment": _text(body.get("comment")),
                    "model_version": item["model_version"],
                    "corrected_at": now_ms(),
                }
            )
            errors = processor.check(value, value["id"], now_ms())[1]
            if errors:
                return self.json({"published": 0, "errors": [e.as_dict() for e in errors]}, status=422)
            record = OutRecord(
                CORRECTIONS, item["id"].encode("utf-8"), processor.serde.encode(value), now_ms()
            )
            await producer.send_all([record])
            board.add_correction(value, record.timestamp_ms)
            return self.json(
                {"published": 1, "topic": CORRECTIONS, "reviewer": reviewer, "counts": board.counts()},
                status=202,
            )

    return ReviewAnswer


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None

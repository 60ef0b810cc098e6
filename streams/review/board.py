"""The review queue as people see it: the items on ``nomenclature.review`` and the answers to them.

Every worker folds both topics from the beginning (`follow`): the review topic's ReviewItems, and the
corrections topic, whose records are the answers (a reviewer's answer on ``GET /review`` is a Correction;
one made any other way, e.g. ``nomenclature correct``, answers the item just as well). So the page on any
worker shows the whole queue, without asking another worker. An item leaves the queue once
``NOMENCLATURE_REVIEW_VOTES`` distinct reviewers answered it; until then it is shown to the others.

Where two reviewers answered one item, their agreement is Cohen's kappa over those items (the first two
answers of each, and per pair of reviewers over the items both answered): agreement beyond what their
label frequencies alone would give.

Free of Faust and Kafka: the worker feeds it (`streams.review.follow`), the page and the export read it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sklearn.metrics import cohen_kappa_score

LABELS = ("product", "service")
ANONYMOUS = "(anonymous)"


class Answer(NamedTuple):
    user: str
    label: str
    comment: str | None
    model_version: str | None
    at: int  # epoch milliseconds


@dataclass(frozen=True)
class AnswerRefused(Exception):
    """A review answer that is not published: HTTP status and why."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


class ReviewBoard:
    def __init__(self, votes: int = 1) -> None:
        self.votes = votes
        self.items: dict[str, dict[str, Any]] = {}  # id -> its ReviewItem
        self.answers: dict[str, dict[str, Answer]] = {}  # id -> user -> that user's latest answer

    # ---- what the topics bring
    def add_item(self, value: Mapping[str, Any]) -> None:
        self.items[value["id"]] = dict(value)

    def add_correction(self, value: Mapping[str, Any], timestamp_ms: int | None) -> None:
        """A correction, as an answer to the item it names (any item: its ReviewItem may come later)."""
        label = value.get("label")
        item_id = value.get("id")
        if label not in LABELS or not isinstance(item_id, str):
            return  # refused by the corrections agent too; not an answer
        at = value.get("corrected_at")
        at_ms = int(at.timestamp() * 1000) if hasattr(at, "timestamp") else int(at or timestamp_ms or 0)
        user = (value.get("user") or "").strip() or ANONYMOUS
        answer = Answer(user, label, value.get("comment"), value.get("model_version"), at_ms)
        self.answers.setdefault(item_id, {})[user] = answer

    # ---- what the page shows
    def _answered(self, item_id: str) -> dict[str, Answer]:
        return self.answers.get(item_id, {})

    def is_waiting(self, item_id: str) -> bool:
        return item_id in self.items and len(self._answered(item_id)) < self.votes

    def waiting(self, reviewer: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Items still waiting (and not answered by `reviewer`), least certain first."""
        found = [
            item
            for item_id, item in self.items.items()
            if self.is_waiting(item_id) and (reviewer is None or reviewer not in self._answered(item_id))
        ]
        found.sort(key=lambda item: (-item["uncertainty"], item["queued_at"], item["id"]))
        return found if limit is None else found[:limit]

    def counts(self) -> dict[str, int]:
        pending = sum(1 for item_id in self.items if self.is_waiting(item_id))
        answers = sum(len(self._answered(item_id)) for item_id in self.items)
        reviewers = {user for item_id in self.items for user in self._answered(item_id)}
        return {
            "pending": pending,
            "reviewed": len(self.items) - pending,
            "answers": answers,
            "reviewers": len(reviewers),
        }

    def agreement(self) -> dict[str, Any]:
        """Cohen's kappa of the items two (or more) reviewers answered: overall (first two answers of
        each item) and per pair of reviewers."""
        first, second = [], []
        by_pair: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        for item_id in self.items:
            answered = sorted(self._answered(item_id).values(), key=lambda a: (a.at, a.user))
            if len(answered) < 2:
                continue
            first.append(answered[0].label)
            second.append(answered[1].label)
            for a, b in itertools.combinations(sorted(answered, key=lambda a: a.user), 2):
                labels = by_pair.setdefault((a.user, b.user), ([], []))
                labels[0].append(a.label)
                labels[1].append(b.label)
        pairs = [
            {"reviewers": list(pair), **_agreement(a, b)}
            for pair, (a, b) in sorted(by_pair.items(), key=lambda kv: -len(kv[1][0]))
        ]
        return {**_agreement(first, second), "pairs": pairs}

    # ---- answering
    def check_answer(self, item_id: Any, label: Any, model_version: Any, reviewer: str) -> dict[str, Any]:
        """The waiting item an answer is about; `AnswerRefused` says why an answer cannot be taken."""
        if not isinstance(item_id, str) or not item_id:
            raise AnswerRefused(400, "the answer needs the item's id")
        item = self.items.get(item_id)
        if item is None:
            raise AnswerRefused(404, f"item {item_id!r} is not in the review queue")
        if label not in LABELS:
            raise AnswerRefused(422, f"label must be 'product' or 'service', not {label!r}")
        if model_version != item["model_version"]:
            raise AnswerRefused(
                409,
                f"stale answer: item {item_id!r} was queued for review of model {item['model_version']}, "
                f"the answer is about {model_version!r}; reload the page",
            )
        if reviewer in self._answered(item_id):
            raise AnswerRefused(409, f"{reviewer} already answered item {item_id!r}")
        if not self.is_waiting(item_id):
            raise AnswerRefused(409, f"item {item_id!r} already has its {self.votes} answer(s)")
        return item

    def export_rows(self) -> Iterator[dict[str, Any]]:
        """One row per answer to a queued item: the item, what the model said, who answered what."""
        for item_id, item in self.items.items():
            challenger = item.get("challenger") or {}
            for answer in sorted(self._answered(item_id).values(), key=lambda a: (a.at, a.user)):
                yield {
                    "id": item_id,
                    "name": item["item"].get("name"),
                    "full_name": item["item"].get("full_name"),
                    "model_version": item["model_version"],
                    "model_label": item["label"],
                    "confidence": item["confidence"],
                    "challenger_version": challenger.get("model_version"),
                    "challenger_label": challenger.get("label"),
                    "reasons": ",".join(item["reasons"]),
                    "uncertainty": item["uncertainty"],
                    "queued_at": item["queued_at"],
                    "reviewer": answer.user,
                    "label": answer.label,
                    "agrees_with_model": answer.label == item["label"],
                    "comment": answer.comment,
                    "answered_model_version": answer.model_version,
                    "answered_at": answer.at,
                }


def _agreement(a: list[str], b: list[str]) -> dict[str, Any]:
    """Items, observed agreement and Cohen's kappa (None where it is undefined: no items, or both reviewers
    gave one and the same label throughout, so chance agreement is 1)."""
    if not a:
        return {"items": 0, "observed": None, "kappa": None}
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    kappa = None
    if len(set(a) | set(b)) > 1:
        value = float(cohen_kappa_score(a, b, labels=list(LABELS)))
        kappa = None if value != value else round(value, 4)  # NaN: chance agreement is 1
    return {"items": len(a), "observed": round(observed, 4), "kappa": kappa}

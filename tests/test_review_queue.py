"""The review queue without a broker: which classified items are candidates (the pipeline's own marks), the
hourly budget, least certain first, de-duplication against the review table and within the queue; and the
review board: waiting items, answers, refusals, Cohen's kappa and the export rows."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sklearn.metrics import cohen_kappa_score

from models.registry import default_model
from models.registry.model_registry import ModelRegistry
from schemas import AvroSerde, LocalCatalogue
from streams.pipeline.messages import RawMessage, ReviewCandidate
from streams.pipeline.micro_batch import Models
from streams.pipeline.scoring import build_pipeline
from streams.review.board import AnswerRefused, ReviewBoard
from streams.review.queue import LOW_CONFIDENCE, SHADOW_DISAGREEMENT, ReviewQueue
from streams.settings import Settings
from streams.topics import CLASSIFIED, RAW, REVIEW, TOPICS
from tests.support import make_item

CATALOGUE = LocalCatalogue()
CLASSIFIED_SERDE = AvroSerde(CATALOGUE, TOPICS[CLASSIFIED].subject, TOPICS[CLASSIFIED].schema)
REVIEW_SERDE = AvroSerde(CATALOGUE, TOPICS[REVIEW].subject, TOPICS[REVIEW].schema)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def classified(item_id: str, confidence: float, label: str = "product", version: str = "m1") -> bytes:
    other = "service" if label == "product" else "product"
    return CLASSIFIED_SERDE.encode(
        {
            "id": item_id,
            "item": make_item(item_id, f"Изделие {item_id}"),
            "label": label,
            "confidence": confidence,
            "probabilities": {label: confidence, other: 1 - confidence},
            "top_k": [{"label": label, "probability": confidence}],
            "explanation": [{"token": "изделие", "weight": 0.25}],
            "model_version": version,
            "featurizer_version": "f1",
            "warnings": [],
            "source": {"topic": RAW, "partition": 0, "offset": 7, "timestamp": None},
            "classified_at": 1,
        }
    )


def candidate(
    item_id: str, confidence: float, partition: int = 0, disagreed: bool = False
) -> ReviewCandidate:
    shadow = classified(item_id, 0.8, "service", "m2") if disagreed else b""
    return ReviewCandidate(partition, item_id, confidence, disagreed, classified(item_id, confidence), shadow)


def queue(per_hour: int, table: dict[tuple[int, str], Any] | None = None) -> tuple[ReviewQueue, Clock]:
    clock = Clock()
    store = {} if table is None else table
    settings = Settings(review_max_per_hour=per_hour, review_threshold=0.7)
    return ReviewQueue(settings, lambda p, k: store.get((p, k)), CATALOGUE, clock=clock), clock


def released_ids(records: list[Any]) -> list[str]:
    return [REVIEW_SERDE.decode(r.value)["id"] for r in records]


def test_the_pipeline_marks_low_confidence_and_disagreement_and_nothing_else(tmp_path: Any) -> None:
    registry = ModelRegistry(tmp_path / "models")
    default_model.install(registry)
    champion = registry.load()
    settings = Settings(data_dir=tmp_path, review_threshold=0.0)
    pipeline = build_pipeline(settings)
    serde = AvroSerde(pipeline.catalogue, TOPICS[RAW].subject, TOPICS[RAW].schema)
    names = ["Болт М12", "Услуги по уборке помещений", "Ремонт и поставка насоса", "Кабель ВВГ 3х2,5"]
    messages = [
        RawMessage(RAW, 0, i, 1, f"i{i}".encode(), serde.encode(make_item(f"i{i}", name)))
        for i, name in enumerate(names)
    ]
    scored = pipeline.score(messages, Models(champion))
    confidences = sorted(one.confidence for one in scored)
    threshold = (confidences[1] + confidences[2]) / 2  # two below, two above
    pipeline.settings = Settings(data_dir=tmp_path, review_threshold=threshold)
    result = pipeline.finish(messages, scored, lambda p, k: None)
    assert sorted(c.confidence for c in result.review) == confidences[:2]
    assert all(not c.disagreed and c.shadow_value == b"" for c in result.review)
    # the challenger in shadow: the same model can only agree, so nothing above the threshold comes in
    shadowed = pipeline.score(messages, Models(champion, challenger=champion))
    assert {c.item_id for c in pipeline.finish(messages, shadowed, lambda p, k: None).review} == {
        c.item_id for c in result.review
    }
    # disagreement is read from the labels: a shadow label other than the champion's makes a candidate
    flipped = [
        one._replace(shadow_label="service" if one.label == "product" else "product") for one in shadowed
    ]
    marked = pipeline.finish(messages, flipped, lambda p, k: None).review
    assert len(marked) == 4 and all(c.disagreed for c in marked)
    pipeline.settings = Settings(data_dir=tmp_path, review_max_per_hour=0, review_threshold=1.0)
    assert pipeline.finish(messages, scored, lambda p, k: None).review == []


def test_least_certain_first_within_the_hourly_budget() -> None:
    review, clock = queue(per_hour=120)  # 2 a minute, bursts of 2
    review.offer([candidate(f"c{i}", 0.5 + i / 100) for i in range(10)])
    records, updates = review.release({0})
    assert released_ids(records) == ["c0", "c1"]  # the burst: the two least certain
    assert [u.key for u in updates] == ["c0", "c1"] and all(u.partition == 0 for u in updates)
    assert review.release({0}) == ([], [])  # the budget is spent
    clock.now += 30  # half a minute earns one
    assert released_ids(review.release({0})[0]) == ["c2"]
    review.offer([candidate("x", 0.51)])  # a less certain one arrives: it goes before the rest
    clock.now += 30
    assert released_ids(review.release({0})[0]) == ["x"]
    clock.now += 3600  # an idle hour refills only up to the burst
    assert len(review.release({0})[0]) == 2
    # a disagreement goes before any low confidence
    review.offer([candidate("d", 0.95, disagreed=True)])
    clock.now += 30
    assert released_ids(review.release({0})[0]) == ["d"]


def test_over_an_hour_no_more_than_the_budget_is_released() -> None:
    review, clock = queue(per_hour=60)
    released = 0
    for minute in range(60):
        review.offer([candidate(f"m{minute}-{i}", 0.6) for i in range(5)])
        released += len(review.release({0})[0])
        clock.now += 60
    assert 59 <= released <= 61  # one a minute, plus the first burst of one


def test_the_share_of_a_worker_and_partitions_it_no_longer_owns() -> None:
    review, _ = queue(per_hour=3600)  # a burst of 60
    review.offer([candidate(f"p0-{i}", 0.6, partition=0) for i in range(80)])
    review.offer([candidate(f"p1-{i}", 0.55, partition=1) for i in range(5)])
    records, _ = review.release({0}, share=0.5)  # partition 1 went to another worker; half of the budget
    assert len(records) == 30 and all(i.startswith("p0-") for i in released_ids(records))
    assert review.outcomes["moved"] == 5
    assert review.release({0}, share=0.5) == ([], [])


def test_an_id_is_queued_once() -> None:
    table: dict[tuple[int, str], Any] = {}
    review, _ = queue(per_hour=3600, table=table)
    review.offer([candidate("a", 0.6), candidate("a", 0.55), candidate("b", 0.6)])  # a twice in the queue
    assert len(review.pending) == 2 and review.pending["a"].confidence == 0.55  # kept at its least certain
    records, updates = review.release({0})
    assert sorted(released_ids(records)) == ["a", "b"]
    for update in updates:  # what the worker writes to the review table
        table[(update.partition, update.key)] = json.loads(update.value)
    review.offer([candidate("a", 0.51), candidate("c", 0.6)])
    assert list(review.pending) == ["c"] and review.outcomes["already_queued"] == 1
    assert table[(0, "a")]["model_version"] == "m1" and table[(0, "a")]["reasons"] == [LOW_CONFIDENCE]


def test_the_pending_queue_keeps_the_least_certain_hour() -> None:
    review, _ = queue(per_hour=10)
    review.offer([candidate(f"c{i:02d}", 0.5 + i / 100) for i in range(30)])
    assert sorted(review.pending) == [f"c{i:02d}" for i in range(10)]
    assert review.outcomes["evicted"] == 20


def test_a_review_item_carries_both_opinions() -> None:
    review, _ = queue(per_hour=60)
    review.offer([candidate("d", 0.65, disagreed=True)])
    value = REVIEW_SERDE.decode(review.release({0})[0][0].value)
    assert value["reasons"] == [LOW_CONFIDENCE, SHADOW_DISAGREEMENT]
    assert value["challenger"] == {"model_version": "m2", "label": "service", "confidence": 0.8}
    assert value["uncertainty"] == pytest.approx(1.35)
    assert value["item"]["name"] == "Изделие d" and value["explanation"][0]["token"] == "изделие"
    assert value["model_version"] == "m1" and value["source"]["offset"] == 7


def board_with(items: dict[str, float], votes: int = 1) -> ReviewBoard:
    review, _ = queue(per_hour=3600)
    review.offer([candidate(item_id, confidence) for item_id, confidence in items.items()])
    board = ReviewBoard(votes)
    for record in review.release({0})[0]:
        board.add_item(REVIEW_SERDE.decode(record.value))
    return board


def answer(board: ReviewBoard, item_id: str, user: str, label: str, at: int) -> None:
    board.add_correction({"id": item_id, "label": label, "user": user, "corrected_at": at}, None)


def test_the_board_waits_for_the_votes_and_refuses_bad_answers() -> None:
    board = board_with({"a": 0.6, "b": 0.55, "c": 0.69}, votes=2)
    assert [i["id"] for i in board.waiting()] == ["b", "a", "c"]
    answer(board, "b", "anna", "service", 1)
    assert [i["id"] for i in board.waiting("anna")] == ["a", "c"]  # anna does not see it again
    assert [i["id"] for i in board.waiting("boris")] == ["b", "a", "c"]  # boris is the second vote
    assert board.counts() == {"pending": 3, "reviewed": 0, "answers": 1, "reviewers": 1}
    answer(board, "b", "boris", "service", 2)
    assert board.counts()["reviewed"] == 1 and "b" not in {i["id"] for i in board.waiting()}
    refusals = {
        "unknown": (("zzz", "product", "m1", "vera"), 404, "not in the review queue"),
        "label": (("a", "goods", "m1", "vera"), 422, "'product' or 'service'"),
        "stale": (("a", "product", "m0", "vera"), 409, "stale answer"),
        "twice": (("b", "product", "m1", "anna"), 409, "already answered"),
        "done": (("b", "product", "m1", "vera"), 409, "already has its 2 answer"),
    }
    for args, status, message in refusals.values():
        with pytest.raises(AnswerRefused) as refused:
            board.check_answer(*args)
        assert refused.value.status == status and message in refused.value.message
    assert board.check_answer("a", "product", "m1", "vera")["id"] == "a"
    board.add_correction({"id": "a", "label": "goods", "user": "x"}, 5)  # not an answer
    assert board.counts()["answers"] == 2


def test_cohens_kappa_over_items_two_reviewers_answered() -> None:
    labels = {  # item: (anna, boris)
        "i1": ("product", "product"), "i2": ("product", "service"), "i3": ("service", "service"),
        "i4": ("service", "service"), "i5": ("product", "product"), "i6": ("service", "product"),
    }  # fmt: skip
    board = board_with({item_id: 0.6 for item_id in [*labels, "lonely"]}, votes=2)
    for at, (item_id, (anna, boris)) in enumerate(labels.items()):
        answer(board, item_id, "anna", anna, 2 * at)
        answer(board, item_id, "boris", boris, 2 * at + 1)
    answer(board, "lonely", "anna", "product", 99)
    agreement = board.agreement()
    expected = cohen_kappa_score([a for a, _ in labels.values()], [b for _, b in labels.values()])
    assert agreement["items"] == 6 and agreement["observed"] == pytest.approx(4 / 6, abs=1e-4)
    assert agreement["kappa"] == pytest.approx(expected, abs=1e-4) and 0 < agreement["kappa"] < 1
    assert agreement["pairs"] == [
        {"reviewers": ["anna", "boris"], **{k: agreement[k] for k in ("items", "observed", "kappa")}}
    ]
    # one label throughout: chance agreement is 1 and kappa is undefined, not a number
    same = board_with({"s1": 0.6, "s2": 0.6}, votes=2)
    for item_id in ("s1", "s2"):
        answer(same, item_id, "anna", "product", 1)
        answer(same, item_id, "boris", "product", 2)
    assert same.agreement()["kappa"] is None and same.agreement()["observed"] == 1.0


def test_export_rows_one_per_answer() -> None:
    board = board_with({"a": 0.6, "b": 0.65}, votes=2)
    answer(board, "a", "anna", "service", 10)
    answer(board, "a", "boris", "product", 20)
    rows = list(board.export_rows())
    assert [(r["id"], r["reviewer"], r["label"], r["agrees_with_model"]) for r in rows] == [
        ("a", "anna", "service", False),
        ("a", "boris", "product", True),
    ]
    assert (
        rows[0]["model_label"] == "product"
        and rows[0]["confidence"] == 0.6
        and rows[0]["name"] == "Изделие a"
    )

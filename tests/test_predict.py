"""``POST /predict`` against a real worker on a real broker: 200, 422 beside classified items, 413 by item
count, by declared and by read size, 400, 429 with Retry-After, and the stream's own answer for the same item.

The worker runs with a queue of one request and one predict worker, so that a burst of requests overflows it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from models.registry.model_registry import ModelRegistry
from streams.pipeline.micro_batch import Models
from streams.pipeline.predict import check_items, classify_items, response_body
from streams.pipeline.scoring import Scorer, build_pipeline
from streams.settings import Settings
from tests.support import Broker, Worker, make_item, new_worker, produce_items, running, wait_for_ids

# the web surface: its outcome does not depend on the broker (the Kafka suite leaves it out)
pytestmark = pytest.mark.surface

MAX_ITEMS = 20
MAX_BYTES = 20_000
CLASSIFIED_FIELDS = {
    "index", "id", "label", "confidence", "probabilities", "top_k", "explanation", "model_version",
    "featurizer_version", "warnings",
}  # fmt: skip


@pytest.fixture(scope="module")
def worker(
    module_broker: Broker, trained_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    started = new_worker(module_broker, tmp_path_factory.mktemp("predict"), trained_models)
    started.extra_env.update(
        NOMENCLATURE_PREDICT_QUEUE_SIZE="1",
        NOMENCLATURE_PREDICT_WORKERS="1",
        NOMENCLATURE_PREDICT_MAX_ITEMS=str(MAX_ITEMS),
        NOMENCLATURE_PREDICT_MAX_BYTES=str(MAX_BYTES),
    )
    with running(started):
        yield started


def post(
    worker: Worker, body: bytes | Iterator[bytes], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers, JSON body) of a POST /predict; an iterator body goes chunked (no Content-Length)."""
    connection = http.client.HTTPConnection("127.0.0.1", worker.web_port, timeout=30)
    try:
        chunked = not isinstance(body, bytes)
        connection.request(
            "POST", "/predict", body=body, headers=headers or {"Content-Type": "application/json"},
            encode_chunked=chunked,
        )  # fmt: skip
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def post_json(worker: Worker, payload: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    return post(worker, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def test_valid_items_come_back_classified_with_what_a_classified_item_carries(worker: Worker) -> None:
    items = [
        make_item("p-1", "Ремонт насоса", full_name="Ремонт центробежного насоса", kind="Услуга"),
        make_item("p-2", "Болт М8х40", unit="шт", country="RU", created_at="2024-05-01T10:00:00Z"),
    ]
    status, _, body = post_json(worker, {"items": items})
    assert status == 200, body
    assert body["rejected"] == []
    assert [r["id"] for r in body["results"]] == ["p-1", "p-2"]
    for result in body["results"]:
        assert set(result) == CLASSIFIED_FIELDS
        assert result["label"] in {"product", "service"}
        assert result["confidence"] == max(result["probabilities"].values())
        assert len(result["top_k"]) == 2
        assert result["model_version"] == worker.get("/health")["model"]["version"]
    assert body["weight"] > 0
    assert set(body["timing"]) == {"queued_ms", "scoring_ms"}
    assert body["timing"]["scoring_ms"] > 0


def test_top_k_and_explain_are_the_callers(worker: Worker) -> None:
    item = make_item("p-3", "Услуги по уборке офисных помещений")
    status, _, body = post_json(worker, {"items": [item], "top_k": 1, "explain": False})
    assert status == 200, body
    (result,) = body["results"]
    assert len(result["top_k"]) == 1 and result["explanation"] == []
    status, _, body = post_json(worker, {"items": [item]})
    assert body["results"][0]["explanation"], "explanations are on by default"


def test_invalid_items_are_422_per_item_and_the_valid_ones_are_still_classified(worker: Worker) -> None:
    items = [
        make_item("ok-1", "Поставка офисной бумаги А4"),
        {"id": "bad-1", "name": "   ", "full_name": "Бумага"},
        make_item("bad-2", "Кабель ВВГ", okved_code="xx", country="RUS"),
        "not an item",
        make_item("ok-2", "Монтаж кабельных линий", hs_code="8499"),  # a warning, not an error
    ]
    status, _, body = post_json(worker, {"items": items})
    assert status == 422, body
    assert [(r["index"], r["id"]) for r in body["results"]] == [(0, "ok-1"), (4, "ok-2")]
    assert [w["code"] for w in body["results"][1]["warnings"]] == ["hs_unknown_heading"]
    rejected = {r["index"]: r for r in body["rejected"]}
    assert sorted(rejected) == [1, 2, 3]
    assert [(e["field"], e["code"]) for e in rejected[1]["errors"]] == [("name", "blank")]
    assert {(e["field"], e["code"]) for e in rejected[2]["errors"]} == {
        ("okved_code", "okved_malformed"),
        ("country", "country_unknown"),
    }
    assert "alpha-3" in next(e["message"] for e in rejected[2]["errors"] if e["field"] == "country")
    assert rejected[3]["id"] is None and rejected[3]["errors"][0]["code"] == "wrong_type"


def test_an_item_the_stream_would_refuse_is_refused_with_the_streams_issues(
    module_broker: Broker, worker: Worker
) -> None:
    prefix = f"refused-{uuid.uuid4().hex[:6]}-"
    items = [
        {"id": prefix + "1", "name": "Болт"},  # no full_name
        make_item(prefix + "2", "Гайка", country="RUS", hs_code="12345"),
    ]
    produce_items(module_broker.bootstrap, items)
    classified, rejected = wait_for_ids(module_broker.bootstrap, prefix, {i["id"] for i in items}, worker)
    assert classified == []
    stream = {r["item_id"]: r["errors"] for r in rejected}
    status, _, body = post_json(worker, {"items": items})
    assert status == 422
    assert body["results"] == []
    assert {r["id"]: r["errors"] for r in body["rejected"]} == stream
    assert body["timing"] == {"queued_ms": 0.0, "scoring_ms": 0.0}  # nothing was queued
    status, _, body = post_json(worker, {"items": [{"name": "Гайка", "full_name": "Гайка"}]})
    assert [(e["field"], e["code"]) for e in body["rejected"][0]["errors"]] == [("id", "required")]


def test_too_many_items_is_413(worker: Worker) -> None:
    items = [make_item(f"n-{n}", "Болт") for n in range(MAX_ITEMS + 1)]
    status, _, body = post_json(worker, {"items": items})
    assert status == 413
    assert f"{MAX_ITEMS + 1} items, at most {MAX_ITEMS}" in body["error"]


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(worker: Worker) -> None:
    started = time.monotonic()
    # 50 MB announced, a few bytes sent: a server that waited for the body would not answer
    status, _, body = post(worker, b'{"items": []}', {"Content-Length": "50000000"})
    assert status == 413
    assert "50,000,000 bytes" in body["error"] and "NOMENCLATURE_PREDICT_MAX_BYTES" in body["error"]
    assert time.monotonic() - started < 10


def test_a_chunked_body_over_the_limit_is_413_as_it_is_read(worker: Worker) -> None:
    item = json.dumps(make_item("big", "Болт " * 50)).encode()

    def chunks() -> Iterator[bytes]:
        yield b'{"items": ['
        for _ in range(2 * MAX_BYTES // len(item)):
            yield item + b","
        yield item + b"]}"

    status, _, body = post(worker, chunks(), {"Content-Type": "application/json"})
    assert status == 413
    assert f"at most {MAX_BYTES:,}" in body["error"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'[{"id": "a"}]', "expected a JSON object"),
        (b'{"items": {"id": "a"}}', '"items" must be a list'),
        (b'{"items": []}', "empty"),
        (b'{"items": [{"id": "a", "name": "b", "full_name": "b"}], "top_k": "2"}', '"top_k"'),
        (b'{"items": [{"id": "a", "name": "b", "full_name": "b"}], "explain": 3}', '"explain"'),
        (b'{"item": []}', "unknown request fields ['item']"),
    ],
)
def test_a_malformed_request_is_400_with_what_is_wrong(worker: Worker, body: bytes, says: str) -> None:
    status, _, answer = post(worker, body)
    assert status == 400
    assert says in answer["error"]


def test_the_same_item_gets_the_streams_label_and_confidence(module_broker: Broker, worker: Worker) -> None:
    prefix = f"same-{uuid.uuid4().hex[:6]}-"
    items = [
        make_item(prefix + "1", "Техническое обслуживание лифтов", unit="усл. ед."),
        make_item(prefix + "2", "Труба стальная электросварная 57х3,5", full_name="Труба стальная", unit="м"),
    ]
    produce_items(module_broker.bootstrap, items)
    classified, rejected = wait_for_ids(module_broker.bootstrap, prefix, {i["id"] for i in items}, worker)
    assert rejected == []
    by_id = {c["id"]: c for c in classified}
    status, _, body = post_json(worker, {"items": items})
    assert status == 200, body
    for result in body["results"]:
        stream = by_id[result["id"]]
        for name in ("label", "confidence", "probabilities", "top_k", "explanation", "model_version"):
            assert result[name] == stream[name], name


async def _burst(port: int, requests: int, items: list[dict[str, Any]]) -> list[tuple[int, dict, Any]]:
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, dict, Any]:
            async with session.post(f"http://127.0.0.1:{port}/predict", json={"items": items}) as response:
                return response.status, dict(response.headers), await response.json()

        return await asyncio.gather(*(one() for _ in range(requests)))


def test_a_full_queue_answers_429_with_retry_after(worker: Worker) -> None:
    items = [
        make_item(f"q-{n}", f"Ремонт и обслуживание насосного оборудования, позиция {n}") for n in range(20)
    ]
    answers = asyncio.run(_burst(worker.web_port, 30, items))
    statuses = [status for status, _, _ in answers]
    assert 200 in statuses and 429 in statuses, statuses
    assert set(statuses) <= {200, 429}
    for status, headers, body in answers:
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
            assert body["retry_after"] == int(headers["Retry-After"])
            assert "retry in" in body["error"]
    # one in service and one waiting at any moment: a served request waited for at most the one before it
    served = [body for status, _, body in answers if status == 200]
    assert all(len(body["results"]) == 20 for body in served)


def test_the_thread_fallback_scores_like_the_stream(trained_models: Path) -> None:
    """NOMENCLATURE_SCORING_PROCESSES=0: /predict's items are scored in a thread of the worker."""
    settings = Settings(scoring_processes=0)
    pipeline = build_pipeline(settings)
    champion = ModelRegistry(trained_models).load()
    checked = check_items(pipeline.validator, [make_item("t-1", "Ремонт насоса")])
    pairs = [(item, warnings) for _, item, warnings in checked.accepted]
    scorer = Scorer(settings, pipeline, Models(champion))
    outcomes, seconds = asyncio.run(scorer.predict(pairs, champion, 2, 3))
    (outcome,) = outcomes
    assert outcome.result is not None and seconds > 0
    expected = pipeline.predict([pairs[0][0]], Models(champion), 2, 3)[0][0]
    assert (outcome.result["label"], outcome.result["confidence"]) == (expected.label, expected.confidence)
    assert outcome.result["model_version"] == champion.version


class _FailsOn:
    """The champion, except that scoring any batch holding an item named `poison` raises."""

    def __init__(self, champion: Any, poison: str) -> None:
        self._champion, self._poison = champion, poison

    def __getattr__(self, name: str) -> Any:
        return getattr(self._champion, name)

    def predict(self, items: list[dict[str, Any]], *args: Any) -> Any:
        if any(item["name"] == self._poison for item in items):
            raise FloatingPointError("poisoned")
        return self._champion.predict(items, *args)


def test_one_item_that_cannot_be_classified_costs_only_itself(trained_models: Path) -> None:
    """The stream's and /predict's shared rule (`Pipeline.predict`): the batch is scored item by item
    then, and the failing one gets ``classify_failed``."""
    settings = Settings(scoring_processes=0)
    pipeline = build_pipeline(settings)
    champion = ModelRegistry(trained_models).load()
    checked = check_items(
        pipeline.validator,
        [make_item("a", "Ремонт насоса"), make_item("b", "Яд"), make_item("c", "Болт М8 оцинкованный")],
    )
    pairs = [(item, warnings) for _, item, warnings in checked.accepted]
    outcomes, _ = classify_items(pipeline, pairs, _FailsOn(champion, "Яд"), 2, 3)  # type: ignore[arg-type]
    assert [o.result is not None for o in outcomes] == [True, False, True]
    assert outcomes[1].errors[0].code == "classify_failed" and "poisoned" in outcomes[1].errors[0].message
    status, body = response_body(checked, outcomes)
    assert status == 422 and [r["id"] for r in body["results"]] == ["a", "c"]
    assert body["rejected"] == [{"index": 1, "id": "b", "errors": [outcomes[1].errors[0].as_dict()]}]

"""The review loop end to end: a worker on a broker of this module's own queues the uncertain items it
classifies on nomenclature.review (once per id, least certain first), a reviewer signed in with HTTP Basic
opens GET /review in headless Chromium and presses a key, and the answer arrives on nomenclature.corrections
as a Correction by that reviewer, which the corrections agent accepts. Bad answers are refused with nothing
published; `nomenclature review export` writes the answers."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from streams.topics import CORRECTIONS, REVIEW
from tests.browser import chromium, wait_in_page
from tests.support import ROOT, Broker, Worker, make_item, new_worker, produce_items, read_values, running

pytestmark = pytest.mark.surface

USER, PASSWORD = "anna", "s3cret-review"
NAMES = [
    "Болт М12х60 оцинкованный",
    "Услуги по уборке помещений",
    "Ремонт и поставка насоса",
    "Кабель ВВГ 3х2,5",
    "Организация доставки груза",
    "Монтаж системы вентиляции",
]


@pytest.fixture(scope="module")
def worker(
    module_broker: Broker, trained_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    started = new_worker(module_broker, tmp_path_factory.mktemp("review"), trained_models)
    started.extra_env.update(
        NOMENCLATURE_REVIEW_THRESHOLD="1.0",  # every item is uncertain enough
        NOMENCLATURE_REVIEW_MAX_PER_HOUR="3600",  # bursts of 60
        NOMENCLATURE_ADMIN_USER=USER,
        NOMENCLATURE_ADMIN_PASSWORD=PASSWORD,
    )
    with running(started):
        yield started


def call(worker: Worker, path: str, body: Any = None, auth: bool = True) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{worker.web_port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(condition: Any, worker: Worker, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        worker.assert_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout:.0f}s; log tail:\n{worker.log_tail()}")
        time.sleep(0.5)
    return value


def corrections_for(worker: Worker, prefix: str) -> list[dict[str, Any]]:
    return [c for c in read_values(worker.broker.bootstrap, CORRECTIONS) if c["id"].startswith(prefix)]


@pytest.fixture(scope="module")
def queued(worker: Worker) -> list[dict[str, Any]]:
    """The review items of six classified items, as the page lists them (least certain first)."""
    items = [make_item(f"rv-{i}", name) for i, name in enumerate(NAMES)]
    produce_items(worker.broker.bootstrap, items)

    def listed() -> list[dict[str, Any]] | None:
        status, body = call(worker, "/review/items")
        assert status == 200, body
        mine = [i for i in body["items"] if i["id"].startswith("rv-")]
        return mine if len(mine) == len(items) else None

    return wait_until(listed, worker, "the six items in the review queue")


def test_uncertain_items_are_queued_once_least_certain_first(
    worker: Worker, queued: list[dict[str, Any]]
) -> None:
    uncertainty = [i["uncertainty"] for i in queued]
    assert uncertainty == sorted(uncertainty, reverse=True)
    first = queued[0]
    assert first["reasons"] == ["low_confidence"] and first["challenger"] is None
    assert first["uncertainty"] == pytest.approx(1 - first["confidence"], abs=1e-6)
    assert first["explanation"] and first["model_version"] == worker.get("/health")["model"]["version"]
    # the same ids again, with new content (so not duplicates): classified again, never queued again
    produce_items(worker.broker.bootstrap, [make_item(f"rv-{i}", f"{n} (изм.)") for i, n in enumerate(NAMES)])
    wait_until(
        lambda: (
            sum(
                c["id"].startswith("rv-")
                for c in read_values(worker.broker.bootstrap, "nomenclature.classified")
            )
            >= 2 * len(NAMES)
        ),
        worker,
        "the second round classified",
    )
    time.sleep(3.0)  # longer than a release period
    on_topic = [r for r in read_values(worker.broker.bootstrap, REVIEW) if r["id"].startswith("rv-")]
    assert sorted(r["id"] for r in on_topic) == sorted(i["id"] for i in queued)
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=10).read().decode()
    )
    assert 'nomenclature_review_items_total{outcome="already_queued"} 6.0' in metrics


def test_a_key_in_the_browser_publishes_the_reviewers_correction(
    worker: Worker, queued: list[dict[str, Any]], tmp_path: Path
) -> None:
    first, second = queued[0], queued[1]
    second_name = second["item"]["name"]
    driver = chromium()
    try:
        # HTTP Basic in the address: Chromium signs in and sends it with the page's own requests too
        driver.get(f"http://{USER}:{PASSWORD}@127.0.0.1:{worker.web_port}/review")
        wait_in_page(driver, "return window.review && window.review.state.current !== null;")
        assert driver.find_element("id", "item-name").text == first["item"]["name"]
        assert driver.find_element("id", "who").text == f"signed in as {USER}"
        assert int(driver.find_element("id", "pending").text) >= len(queued)
        tokens = driver.find_element("id", "item-explanation").text
        assert first["explanation"][0]["token"] in tokens
        comment = driver.find_element("id", "comment")
        comment.send_keys("прокладка — это изделие, s внутри комментария не ответ")
        driver.find_element("tag name", "body").click()  # out of the comment box: keys answer now
        driver.find_element("tag name", "body").send_keys("s")
        wait_in_page(driver, "return window.review.state.answered === 1;")
        assert driver.find_element("id", "item-name").text == second["item"]["name"]
        driver.find_element("tag name", "body").send_keys("n")  # skip: nothing is published
        wait_in_page(
            driver,
            f"return document.getElementById('item-name').textContent !== {json.dumps(second_name)};",
        )
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
    found = wait_until(lambda: corrections_for(worker, "rv-"), worker, "the correction on the topic")
    assert len(found) == 1
    correction = found[0]
    assert correction["id"] == first["id"] and correction["label"] == "service" and correction["user"] == USER
    assert correction["comment"] == "прокладка — это изделие, s внутри комментария не ответ"
    assert correction["model_version"] == first["model_version"]
    assert correction["name"] == first["item"]["name"]
    # the corrections agent took it: the loop into retraining is closed
    wait_until(
        lambda: worker.get("/models")["corrections"]["accepted"] >= 1, worker, "the correction accepted"
    )
    body = call(worker, "/review/items")[1]
    assert first["id"] not in {i["id"] for i in body["items"]} and body["counts"]["reviewed"] >= 1


def test_bad_answers_are_refused_and_nothing_is_published(
    worker: Worker, queued: list[dict[str, Any]]
) -> None:
    target = queued[-1]
    version = target["model_version"]
    before = len(corrections_for(worker, "rv-"))
    cases = [
        ({"id": "rv-nope", "label": "product", "model_version": version}, 404, "not in the review queue"),
        ({"id": target["id"], "label": "goods", "model_version": version}, 422, "'product' or 'service'"),
        ({"id": target["id"], "label": "product", "model_version": "m-old"}, 409, "stale answer"),
        ({"label": "product", "model_version": version}, 400, "needs the item's id"),
    ]
    for body, status, message in cases:
        got, answer = call(worker, "/review/answer", body)
        assert got == status and message in answer["error"], (body, answer)
    assert call(worker, "/review/answer", cases[0][0], auth=False)[0] == 401
    assert call(worker, "/review/items", auth=False)[0] == 401
    time.sleep(1.0)
    assert len(corrections_for(worker, "rv-")) == before


def test_review_export_writes_the_answers(
    worker: Worker, queued: list[dict[str, Any]], tmp_path: Path
) -> None:
    target = queued[2]
    status, body = call(
        worker,
        "/review/answer",
        {"id": target["id"], "label": "product", "model_version": target["model_version"]},
    )
    assert status == 202 and body["reviewer"] == USER
    wait_until(
        lambda: any(c["id"] == target["id"] for c in corrections_for(worker, "rv-")), worker, "published"
    )
    env = {**os.environ, **worker.env()}
    for name in ("answers.csv", "answers.parquet"):
        output = tmp_path / name
        subprocess.run(
            [sys.executable, "-m", "tools.cli", "review", "export", "--output", str(output)],
            cwd=ROOT, env=env, check=True, capture_output=True,
        )  # fmt: skip
        frame = pd.read_csv(output) if name.endswith(".csv") else pd.read_parquet(output)
        row = frame[frame["id"] == target["id"]].iloc[0]
        assert (
            row["reviewer"] == USER
            and row["label"] == "product"
            and row["model_version"] == target["model_version"]
        )
        assert row["name"] == target["item"]["name"] and bool(row["agrees_with_model"]) == (
            target["label"] == "product"
        )
    refused = subprocess.run(
        [sys.executable, "-m", "tools.cli", "review", "export", "--output", str(tmp_path / "a.xlsx")],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1 and "must end in .csv or .parquet" in refused.stderr


def test_the_page_shows_the_agreement_of_two_reviewers(worker: Worker, queued: list[dict[str, Any]]) -> None:
    """anna answered two items (the key press and the export's answer); boris corrects both the other way
    (POST /corrections: a correction made any way answers a queued item), and the page shows their kappa."""
    answered = {}
    deadline = time.monotonic() + 30
    while len(answered) < 2 and time.monotonic() < deadline:  # the earlier tests' answers, from the topic
        answered = {c["id"]: c for c in corrections_for(worker, "rv-") if c["user"] == USER}
        time.sleep(0.5)
    assert len(answered) == 2, "the earlier tests' answers by anna"
    boris = {item_id: "product" if c["label"] == "service" else "service" for item_id, c in answered.items()}
    first = next(iter(boris))
    boris[first] = answered[first]["label"]  # boris agrees on one, not on the other
    status, body = call(
        worker,
        "/corrections",
        [
            {"id": i, "name": answered[i]["name"], "full_name": answered[i]["full_name"], "label": label,
             "user": "boris"}
            for i, label in boris.items()
        ],
    )  # fmt: skip
    assert status == 202, body
    anna_labels = [answered[i]["label"] for i in boris]
    expected = cohen_kappa_score(anna_labels, list(boris.values()), labels=["product", "service"])
    driver = chromium()
    try:
        driver.get(f"http://{USER}:{PASSWORD}@127.0.0.1:{worker.web_port}/review")
        shown = f"{expected:.2f}" if expected == expected else "n/a"
        wait_in_page(driver, f"return document.getElementById('kappa').textContent === {json.dumps(shown)};")
        assert "(2 items, 50% agreed)" in driver.find_element("id", "kappa-items").text
        assert "anna · boris" in driver.find_element("id", "pairs").text
    finally:
        driver.quit()

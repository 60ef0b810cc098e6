"""GET /dashboard end to end: a worker on a broker of this module's own classifies live traffic (valid items
and rejected ones), and headless Chromium (Debian's, through its chromedriver, driven by selenium) loads the
page and checks, through JavaScript in the page, that every plot drew its data points.

NOMENCLATURE_DASHBOARD_SCREENSHOT=docs/dashboard.png sends a few thousand items over about two minutes (the
last part with names in Latin script, so that drift shows), and writes the screenshot there too.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from models.registry import default_model
from models.registry.model_registry import ModelRegistry
from models.retraining.promotion import shadow_verdict
from streams.web.dashboard import plotly_js
from tests.browser import WINDOW, chromium, wait_in_page
from tests.support import Broker, Worker, make_item, new_worker, produce, produce_items, running, wait_for_ids
from tools.common import BUNDLED_DATA
from tools.drift_check import to_latin

# the web surface: its outcome does not depend on the broker (the Kafka suite leaves it out)
pytestmark = pytest.mark.surface

SCREENSHOT = os.environ.get("NOMENCLATURE_DASHBOARD_SCREENSHOT")
PLOTS = (
    "plot-throughput",
    "plot-latency",
    "plot-lag",
    "plot-batches",
    "plot-predict",
    "plot-confidence",
    "plot-models",
    "plot-drift-psi",
    "plot-drift-js",
)
ENV = {
    "NOMENCLATURE_DASHBOARD_REFRESH_SECONDS": "2" if SCREENSHOT else "1",
    "NOMENCLATURE_DRIFT_WINDOW_SECONDS": "10" if SCREENSHOT else "4",
    "NOMENCLATURE_DRIFT_MIN_SAMPLES": "20",
    "NOMENCLATURE_DRIFT_GRACE_SECONDS": "1",
    "NOMENCLATURE_DRIFT_IDLE_SECONDS": "3",
    "NOMENCLATURE_DRIFT_REPORT_SECONDS": "0.5",
}
# one of each: blank name, unknown ОКВЭД2 code, unknown country, a name without letters; and undecodable bytes
INVALID = (
    {"name": "   "},
    {"okved_code": "99.99.99"},
    {"country": "XX"},
    {"name": "1234567"},
)
REJECTION_CODES = {"blank", "okved_unknown", "country_unknown", "no_letters"}


@dataclass
class Traffic:
    worker: Worker
    sent: int
    rejected_ids: set[str]


def _get(worker: Worker, path: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{worker.web_port}{path}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def _with_model_history(models_dir: Path) -> None:
    """Alias events the models plot draws: the shipped model set as challenger, promoted, rolled back."""
    registry = ModelRegistry(models_dir)
    shipped = default_model.install(registry)
    if shipped is None:  # the featurizer changed since the shipped model was built: one version only
        return
    # a few seconds apart (the registry stamps each event with the time in seconds): apart on the plot too
    for change in (
        lambda: registry.set_alias("challenger", shipped.version),
        lambda: registry.promote("challenger"),
    ):
        time.sleep(2.0)
        change()
    time.sleep(2.0)
    registry.rollback()


@pytest.fixture(scope="module")
def worker(
    module_broker: Broker, trained_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("dashboard")
    started = new_worker(module_broker, tmp, trained_models)
    _with_model_history(started.data_dir / "models")
    started.extra_env.update(ENV)
    with running(started):
        yield started


def _rounds(names: list[str], prefix: str, rounds: int) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """Per round: items (the rate rises and falls, a tenth invalid) and undecodable records to send."""
    for r in range(rounds):
        count = int(80 + 60 * math.sin(r / 4)) if SCREENSHOT else 120
        latin = SCREENSHOT and r >= rounds * 2 // 3
        items = []
        for i in range(count):
            name = names[(r * 997 + i) % len(names)]
            item = make_item(f"{prefix}-{r}-{i}", to_latin(name) if latin else name, source="okpd2")
            if i % 10 == 9:
                item.update(INVALID[(i // 10) % len(INVALID)])
            items.append(item)
        yield items, 1 + r % 3


@pytest.fixture(scope="module")
def traffic(worker: Worker) -> Traffic:
    """Live traffic over several drift windows, until every item is classified or rejected."""
    names = pd.read_csv(BUNDLED_DATA)["name"].sample(frac=1.0, random_state=3).tolist()
    prefix = f"dash-{uuid.uuid4().hex[:6]}"
    expected, rejected_ids, sent = set(), set(), 0
    for r, (items, garbage) in enumerate(_rounds(names, prefix, 50 if SCREENSHOT else 8)):
        produce_items(worker.broker.bootstrap, items)
        undecodable = [(f"{prefix}-g{r}-{g}".encode(), b"\x00garbage") for g in range(garbage)]
        produce(worker.broker.bootstrap, undecodable)
        expected |= {item["id"] for item in items}
        rejected_ids |= {item["id"] for i, item in enumerate(items) if i % 10 == 9}
        sent += len(items) + garbage
        _predict(worker, items[: 6 + r % 5])  # request/response callers too (item 9 is invalid: a 422)
        time.sleep(2.0)
    _, rejected = wait_for_ids(worker.broker.bootstrap, prefix, expected, worker)
    assert rejected_ids <= {r["item_id"] for r in rejected}
    _wait_for(lambda: worker.get("/drift").get("windows_judged", 0) >= 2, worker, "two judged drift windows")
    return Traffic(worker, sent, rejected_ids)


def _predict(worker: Worker, items: list[dict[str, Any]]) -> int:
    """POST /predict with `items`: 200, or 422 when one of them is invalid."""
    body = json.dumps({"items": items}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.web_port}/predict",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        assert exc.code == 422, exc.read()
        return exc.code


def _wait_for(condition: Any, worker: Worker, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        worker.assert_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout}s; log:\n{worker.log_tail()}")
        time.sleep(0.5)


def test_dashboard_and_its_scripts_are_served_by_the_worker(worker: Worker) -> None:
    status, headers, body = _get(worker, "/dashboard")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode("utf-8")
    sources = re.findall(r'<script src="([^"]+)"', page)
    assert [s.split("?")[0] for s in sources] == ["/dashboard/plotly.min.js", "/dashboard/dashboard.js"]
    for path in sources:
        status, headers, script = _get(worker, path)
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert "max-age=31536000" in headers["Cache-Control"]
        if path.startswith("/dashboard/dashboard.js"):
            page += script.decode("utf-8")
        else:
            assert script == plotly_js()  # urllib asks for no gzip: the bundle as the plotly wheel has it
    itself = f"http://127.0.0.1:{worker.web_port}"  # the header names the worker's address
    urls = re.findall(r"https?://[^\s\"'<>)&]+", page)
    outside = [url for url in urls if url.rstrip("/") != itself]
    assert itself in urls
    assert not outside, f"the page loads from outside the worker: {outside}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.web_port}{sources[0]}", headers={"Accept-Encoding": "gzip"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert len(response.read()) < len(plotly_js()) // 2


# What the page drew, read in the page: per plot div its traces' points and the SVG marks Plotly made
DRAWN = """
const out = {};
for (const div of document.querySelectorAll('.plot')) {
  const traces = div.data || [];
  const points = traces.reduce((n, t) => n + ((t.orientation === 'h' ? t.x : t.y) || [])
    .filter((v) => typeof v === 'number' && Number.isFinite(v)).length, 0);
  const lines = [...div.querySelectorAll('.scatterlayer path.js-line')]
    .filter((p) => (p.getAttribute('d') || '').length > 2).length;
  const marks = div.querySelectorAll('.scatterlayer path.point, .barlayer .point path').length;
  out[div.id] = {points, lines, marks, attr: Number(div.dataset.points),
                 names: traces.map((t) => t.name), metas: traces.map((t) => t.meta || null),
                 note: div.classList.contains('empty') ? div.nextElementSibling.textContent : null};
}
return out;
"""


def test_dashboard_renders_every_plot_in_chromium(traffic: Traffic, tmp_path: Path) -> None:
    worker = traffic.worker
    champion = worker.get("/health")["model"]["version"]
    driver = chromium(WINDOW)
    try:
        driver.get(f"http://127.0.0.1:{worker.web_port}/dashboard")
        # --window-size is the window's, not the page's: make the viewport itself WINDOW
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
        size = driver.get_window_size()
        driver.set_window_size(size["width"] + WINDOW[0] - inner[0], size["height"] + WINDOW[1] - inner[1])
        deadline = time.monotonic() + 30
        drawn: dict[str, Any] = {}
        while time.monotonic() < deadline:
            drawn = driver.execute_script(DRAWN)
            if all(drawn[plot]["attr"] > 0 for plot in PLOTS):
                break
            time.sleep(0.5)
        time.sleep(1.5)  # Plotly's transitions settle before the screenshot
        screenshot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(screenshot))
        if SCREENSHOT:
            Path(SCREENSHOT).write_bytes(screenshot.read_bytes())
        for plot in PLOTS:
            seen = drawn[plot]
            assert seen["note"] is None, f"{plot} shows {seen['note']!r}"
            assert seen["points"] > 0 and seen["attr"] == seen["points"], (plot, seen)
            assert seen["lines"] + seen["marks"] > 0, f"{plot}: no line or bar in the SVG: {seen}"
        throughput = drawn["plot-throughput"]
        rejected = {n for n, meta in zip(throughput["names"], throughput["metas"], strict=True) if meta}
        assert throughput["names"][0] == "classified" and REJECTION_CODES <= rejected, throughput
        assert drawn["plot-confidence"]["marks"] > 0  # bars
        assert {"200", "422"} <= set(drawn["plot-predict"]["names"]), drawn["plot-predict"]
        if default_model.shipped() is not None and default_model.shipped().matches_code:
            assert {"promotion", "rollback"} <= set(drawn["plot-models"]["names"])
        assert drawn["plot-shadow"]["note"] == "no challenger in shadow"

        header = driver.find_element("id", "worker").text
        for part in (worker.app_id, f":{worker.web_port}", f"pid {worker.process.pid}", champion):
            assert part in header, header
        status = driver.find_element("id", "status").get_attribute("data-level")
        assert status == "ok", driver.find_element("id", "status-text").text

        # the page refreshes itself from JSON: more refreshes, and the same document (no reload)
        driver.execute_script("window.__same_document = true;")
        before = driver.execute_script("return window.dashboard.refreshes;")
        time.sleep(3 * float(ENV["NOMENCLATURE_DASHBOARD_REFRESH_SECONDS"]) + 1)
        after = driver.execute_script("return [window.dashboard.refreshes, window.__same_document === true];")
        assert after[0] > before and after[1], (before, after)
        errors = driver.execute_script("return window.dashboard.errors;")
        assert not errors, errors
    finally:
        driver.quit()
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000


# Draw the shadow panel from a /models body and read back what it drew, in one script (the page's own
# refresh, reading the real /models, must not come in between)
DRAW_SHADOW = """
window.dashboard.draw.shadow(arguments[0]);
const div = document.getElementById('plot-shadow');
const trace = (div.data || [])[0] || {};
return {points: Number(div.dataset.points), x: trace.x || [], y: trace.y || [],
        bars: div.querySelectorAll('.barlayer .point path').length,
        verdict: document.getElementById('shadow-verdict').textContent};
"""


def test_the_shadow_panel_draws_a_challenger_in_shadow_and_its_mcnemar_verdict(worker: Worker) -> None:
    """What the retraining coordinator reports while a challenger is in shadow (the verdict's summary made
    by `shadow_verdict` itself, as the coordinator makes it), drawn by the page's own code."""
    verdict = shadow_verdict(
        scored=640, agreed=600, b=3, c=17, both_right=70, both_wrong=10, min_items=500, alpha=0.05
    )
    models = {
        "lifecycle": {
            "in_shadow": "mlp-challenger",
            "cycles": [
                {"version": "mlp-older", "status": "rejected"},
                {
                    "version": "mlp-challenger",
                    "status": "shadow",
                    "shadow": {"champion": "mlp-champion", **verdict.summary()},
                    "decision": "in shadow: waiting",
                },
            ],
        }
    }
    driver = chromium(WINDOW)
    try:
        driver.get(f"http://127.0.0.1:{worker.web_port}/dashboard")
        wait_in_page(driver, "return window.dashboard.refreshes > 0 && !!window.Plotly;")
        drawn = driver.execute_script(DRAW_SHADOW, models)
        time.sleep(0.5)
        bars = driver.execute_script(
            "return document.querySelectorAll('#plot-shadow .barlayer .point path').length;"
        )
    finally:
        driver.quit()
    summary = verdict.summary()
    assert drawn["points"] == 3 and drawn["y"] == [
        "agreement rate",
        "champion accuracy",
        "challenger accuracy",
    ]
    expected = [summary["agreement_rate"], summary["champion_accuracy"], summary["challenger_accuracy"]]
    assert drawn["x"] == pytest.approx(expected)
    assert bars == 3
    text = drawn["verdict"]
    assert "on 3 champion-only vs 17 challenger-only right · 640 items scored by both (500 needed)" in text
    assert (
        "· significant" if verdict.significant else "not significant"
    ) in text and "in shadow: waiting" in text

"""GET /metrics and the dashboard's history: the Prometheus instruments, read back with prometheus_client's
own text parser from a real worker, and the series `WorkerMetrics` keeps."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from models.retraining.promotion import shadow_verdict
from streams.pipeline.messages import BatchResult, RawMessage, ShadowObservation
from streams.pipeline.micro_batch import Models
from streams.runtime.metrics import CONFIDENCE_EDGES, BulkHistogram, WorkerMetrics
from streams.web.metrics_views import live_families
from tests.support import Broker, make_item, new_worker, produce_items, wait_for_ids
from tests.test_drift import _Feed, _reference_items, _unit_shift
from tests.test_drift import _settings as drift_settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus_client."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_bulk_histogram_exposes_what_prometheus_clients_own_histogram_does() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [rng.exponential(0.2, 5000), [0.05, 0.1, 1.0, 0.0, 400.0]]
    )  # on bucket bounds too
    buckets = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = BulkHistogram("x_seconds", "x", buckets)
    ours_registry.register(ours)
    theirs = Histogram("x_seconds", "x", buckets=buckets, registry=theirs_registry)
    for chunk in np.array_split(values, 7):
        ours.observe_many(chunk)
    for value in values:
        theirs.observe(float(value))
    mine = {
        k: v for k, v in samples(generate_latest(ours_registry).decode()).items() if "_created" not in k[0]
    }
    reference = {
        k: v for k, v in samples(generate_latest(theirs_registry).decode()).items() if "_created" not in k[0]
    }
    assert mine.keys() == reference.keys()
    for key, value in reference.items():
        assert mine[key] == pytest.approx(value), key


def _message(topic: str, offset: int, timestamp_ms: int | None, replayed: bool = False) -> RawMessage:
    return RawMessage(topic, 0, offset, timestamp_ms, b"k", b"v", replayed)


def test_a_batch_counts_items_errors_latency_and_confidence_and_the_history_rates_them() -> None:
    metrics = WorkerMetrics(history_interval=5.0)
    metrics.sample({}, now=1000.0)
    messages = [_message("nomenclature.raw", i, 999_000) for i in range(4)] + [
        _message("nomenclature.raw", 4, 1, replayed=True)  # a replay's old timestamp is not a latency
    ]
    result = BatchResult()
    result.counts.extend(
        [("nomenclature.raw", "classified", "")] * 3
        + [("nomenclature.raw", "rejected", "okved_unknown"), ("nomenclature.raw", "rejected", "hs_unknown")]
    )
    result.shadow.extend(
        [ShadowObservation(0, True), ShadowObservation(0, False), ShadowObservation(0, True)]
    )
    metrics.batch(messages, result, [0.52, 0.97, 1.0], 0.25, 0.4, delivered_at=1000.5, challenger="c1")
    metrics.predict_answered(200, 10, 0)
    metrics.predict_answered(422, 3, 2)
    metrics.predict_answered(429, 0, 0)
    lag = {"nomenclature.raw:0": {"position": 5, "highwater": 12, "lag": 7}}
    metrics.sample(lag, now=1005.0)

    parsed = samples(generate_latest(metrics.registry).decode())
    topic = (("topic", "nomenclature.raw"),)
    assert parsed[("nomenclature_items_in_total", topic)] == 5
    assert parsed[("nomenclature_items_classified_total", topic)] == 3
    assert parsed[("nomenclature_items_rejected_total", topic)] == 2  # 5 in, 3 classified
    errors = (("code", "okved_unknown"), ("topic", "nomenclature.raw"))
    assert parsed[("nomenclature_rejected_errors_total", errors)] == 1
    assert parsed[("nomenclature_end_to_end_latency_seconds_count", ())] == 4
    assert parsed[("nomenclature_end_to_end_latency_seconds_sum", ())] == pytest.approx(4 * 1.5)
    assert parsed[("nomenclature_prediction_confidence_count", ())] == 3
    assert (
        parsed[("nomenclature_consumer_lag_records", (("partition", "0"), ("topic", "nomenclature.raw")))]
        == 7
    )
    assert parsed[("nomenclature_shadow_items_total", (("agreed", "true"), ("challenger", "c1")))] == 2
    assert metrics.shadow_agreement("c1") == (3, 2)
    assert parsed[("nomenclature_predict_requests_total", (("status", "429"),))] == 1
    assert parsed[("nomenclature_predict_items_total", (("outcome", "classified"),))] == 13
    assert parsed[("nomenclature_predict_items_total", (("outcome", "rejected"),))] == 2

    history = metrics.history.snapshot()
    assert history["t"] == [1000.0, 1005.0]
    assert history["classified_per_second"] == [0.0, 0.6]  # 3 items in 5 s
    assert history["rejected_per_second"] == {"hs_unknown": [0.0, 0.2], "okved_unknown": [0.0, 0.2]}
    assert history["latency_p50_seconds"] == [None, 1.5]
    assert history["batch_size_mean"] == [None, 5.0]
    assert history["scoring_seconds_mean"] == [None, 0.25]
    assert history["lag"] == {"nomenclature.raw:0": [None, 7]}
    assert history["predict_per_second"] == {"200": [0.0, 0.2], "422": [0.0, 0.2], "429": [0.0, 0.2]}

    histogram = metrics.confidence_histogram()
    assert histogram["edges"] == list(CONFIDENCE_EDGES)
    assert len(histogram["counts"]) == len(CONFIDENCE_EDGES) - 1
    assert histogram["counts"][0] == 1 and histogram["counts"][-1] == 2  # 0.52 | 0.97, 1.0


def test_the_history_keeps_one_hour() -> None:
    metrics = WorkerMetrics(history_interval=10.0)
    for i in range(500):
        metrics.sample({}, now=float(i * 10))
    t = metrics.history.snapshot()["t"]
    assert len(t) == 360 and t[-1] == 4990.0


def _get(port: int, path: str) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode("utf-8")


def test_metrics_of_a_worker_with_two_scoring_processes_count_every_item_once(
    broker: Broker, tmp_path: Path, models_dir: Path
) -> None:
    """Counted in the worker from what the scoring processes send back: with two of them, exactly the
    items produced; the model info names the champion /health names."""
    p = f"t{uuid.uuid4().hex[:8]}"
    topic = f"nomenclature.raw.{p}"
    good = [make_item(f"{p}-{i}", f"Болт М{i % 30 + 4} оцинкованный", unit="шт") for i in range(300)]
    good += [make_item(f"{p}-s{i}", f"Ремонт насоса №{i}", kind="service") for i in range(100)]
    bad = [make_item(f"{p}-bad-{i}", "Гайка", okved_code="99.99") for i in range(7)]
    bad += [make_item(f"{p}-badc-{i}", "Шайба", country="XX") for i in range(5)]
    produce_items(broker.bootstrap, good + bad, topic=topic)
    worker = new_worker(broker, tmp_path, models_dir)
    worker.extra_env.update(
        NOMENCLATURE_SCORING_PROCESSES="2",
        NOMENCLATURE_BATCH_SIZE="50",
        NOMENCLATURE_DASHBOARD_REFRESH_SECONDS="1",
    )
    worker.start()
    try:
        worker.wait_ready()
        wait_for_ids(broker.bootstrap, p, {i["id"] for i in good + bad}, worker)
        time.sleep(2.5)  # a history sample after the last batch
        # the dashboard's series first: the worker reads every raw topic, and other tests' items may still
        # be flowing, so what it has counted can only grow between the two answers
        data = worker.get("/dashboard/data")
        content_type, text = _get(worker.web_port, "/metrics")
        health = worker.get("/health")
    finally:
        worker.stop()

    assert content_type.startswith("text/plain; version=")
    parsed = samples(text)
    labels = (("topic", topic),)
    assert parsed[("nomenclature_items_in_total", labels)] == len(good) + len(bad)
    assert parsed[("nomenclature_items_classified_total", labels)] == len(good)
    assert parsed[("nomenclature_items_rejected_total", labels)] == len(bad)
    assert parsed[("nomenclature_rejected_errors_total", (("code", "okved_unknown"), *labels))] == 7
    assert parsed[("nomenclature_rejected_errors_total", (("code", "country_unknown"), *labels))] == 5
    # every item of every topic the worker read: at least ours, in batches of at most 50
    items_in = sum(v for (name, _), v in parsed.items() if name == "nomenclature_items_in_total")
    assert parsed[("nomenclature_micro_batch_items_sum", ())] == items_in
    assert parsed[("nomenclature_micro_batch_items_count", ())] >= items_in / 50
    assert (
        parsed[("nomenclature_scoring_duration_seconds_count", ())]
        == parsed[("nomenclature_micro_batch_items_count", ())]
    )
    assert parsed[("nomenclature_end_to_end_latency_seconds_count", ())] == items_in
    assert parsed[("nomenclature_prediction_confidence_count", ())] >= len(good)
    champion = health["model"]["version"]
    info = [k for k in parsed if k[0] == "nomenclature_model_info"]
    assert dict(info[0][1]) == {
        "role": "champion",
        "version": champion,
        "featurizer_version": health["model"]["featurizer_version"],
    }
    assert any(name == "process_cpu_seconds_total" for name, _ in parsed)
    # the dashboard's series say the same: the items classified over the samples, this worker named
    assert data["worker"]["url"].endswith(f":{worker.web_port}")
    history = data["history"]
    pairs = list(zip(history["classified_per_second"], history["seconds"], strict=True))
    classified = sum(r * s for r, s in pairs)
    # the series' rates and spans are rounded to 3 decimals (`streams.runtime.metrics.History`): their
    # products are each off by at most 0.0005 × (rate + span) (+ the product of the two roundings)
    rounding = sum(0.0005 * (r + s) + 0.0005**2 for r, s in pairs)
    total = sum(v for (name, _), v in parsed.items() if name == "nomenclature_items_classified_total")
    # the last sample may be older than the scrape, and other tests' topics may still be flowing
    assert len(good) - 1 - rounding <= classified <= total + 1 + rounding
    assert sum(data["confidence"]["counts"]) >= len(good)


def test_every_metric_is_in_the_docs() -> None:
    root = Path(__file__).resolve().parent.parent
    documented = set(re.findall(r"`(nomenclature_\w+)`", (root / "docs" / "metrics.md").read_text()))
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in WorkerMetrics().registry.collect()
        if family.name.startswith("nomenclature_")
    }
    live = (root / "streams" / "web" / "metrics_views.py").read_text()
    for kind, name in re.findall(r'(\w+)MetricFamily\(\s*"(nomenclature_\w+)"', live):
        exposed.add(name + ("_total" if kind == "Counter" else "_info" if kind == "Info" else ""))
    assert len(exposed) > 20
    assert exposed <= documented, sorted(exposed - documented)
    assert documented <= exposed, sorted(documented - exposed)


def test_live_metrics_read_the_models_the_drift_monitor_and_the_coordinators_verdict() -> None:
    """What /metrics reads at each scrape: the models served, the drift monitor's latest window (a real
    `DriftMonitor` fed a shifted window) and the coordinator's McNemar verdict (made by `shadow_verdict`)."""
    feed = _Feed(drift_settings())
    feed.window(0, _unit_shift(_reference_items(300, seed=1)))
    snapshot = feed.monitor.snapshot()
    verdict = shadow_verdict(
        scored=640, agreed=600, b=3, c=17, both_right=70, both_wrong=10, min_items=500, alpha=0.05
    )
    state = {
        "in_shadow": "m-2",
        "cycles": [
            {"version": "m-2", "shadow": {"champion": "m-1", **verdict.summary()}},
            {"version": "m-0"},
        ],
    }
    champion = SimpleNamespace(version="m-1", featurizer_version="f-1")
    challenger = SimpleNamespace(version="m-2", featurizer_version="f-1")
    review = SimpleNamespace(outcomes={"queued": 3, "already_queued": 1, "evicted": 0, "moved": 0})
    models = Models(champion, None, challenger)  # type: ignore[arg-type]
    runner = SimpleNamespace(models=models, metrics=WorkerMetrics(), review=review)
    result = BatchResult()
    result.shadow.extend([ShadowObservation(0, True)] * 3 + [ShadowObservation(0, False)])
    runner.metrics.batch([_message("nomenclature.raw", 0, None)], result, [], 0.1, 0.1, 1.0, "m-2")
    monitor = SimpleNamespace(current=lambda: feed.monitor, alerts_sent=2)
    lifecycle = SimpleNamespace(current=lambda: SimpleNamespace(snapshot=lambda: state))
    runner.metrics.add_live(live_families(runner, monitor, lifecycle))  # type: ignore[arg-type]

    parsed = samples(generate_latest(runner.metrics.registry).decode())
    info = {
        dict(labels)["role"]: dict(labels) for name, labels in parsed if name == "nomenclature_model_info"
    }
    assert info["champion"]["version"] == "m-1" and info["challenger"]["version"] == "m-2"
    unit = snapshot["features"]["unit"]
    assert unit["psi"] > snapshot["thresholds"]["psi"]  # the shifted feature
    assert parsed[("nomenclature_drift_psi", (("feature", "unit"),))] == pytest.approx(unit["psi"])
    assert parsed[("nomenclature_drift_js_distance", (("feature", "unit"),))] == pytest.approx(unit["js"])
    assert parsed[("nomenclature_drift_threshold", (("metric", "psi"),))] == snapshot["thresholds"]["psi"]
    assert parsed[("nomenclature_drift_alerts_total", ())] == 2
    pair = (("challenger", "m-2"), ("champion", "m-1"))
    assert parsed[("nomenclature_shadow_agreement_ratio", pair)] == 0.75
    assert parsed[("nomenclature_shadow_mcnemar_p_value", pair)] == pytest.approx(verdict.p_value)
    assert parsed[("nomenclature_review_items_total", (("outcome", "queued"),))] == 3
    assert parsed[("nomenclature_review_items_total", (("outcome", "already_queued"),))] == 1

    # another worker hosts the monitor and the coordinator: neither is exported here
    elsewhere = WorkerMetrics()
    none = SimpleNamespace(current=lambda: None)
    other = SimpleNamespace(models=Models(champion), metrics=elsewhere, review=review)
    elsewhere.add_live(live_families(other, none, none))  # type: ignore[arg-type]
    names = {name for name, _ in samples(generate_latest(elsewhere.registry).decode())}
    assert "nomenclature_model_info" in names
    assert not {n for n in names if n.startswith(("nomenclature_drift", "nomenclature_shadow_m"))}

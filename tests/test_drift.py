"""Drift without a broker: the metrics against scipy, the baseline, and the monitor's judging and episodes."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import power_divergence

from models.drift.baseline import (
    FEATURES,
    Baseline,
    CategoricalReference,
    NumericReference,
    build_baseline,
    measure,
    vocabulary_of,
)
from models.drift.metrics import SMOOTHING, g_test_p_value, js_distance, psi
from models.registry.model_registry import ChecksumError, ModelRegistry
from streams.drift.monitor import DriftMonitor
from streams.settings import Settings

REFERENCE = [1200, 900, 40, 0, 3]
WINDOWS = [[130, 90, 5, 0, 0], [10, 10, 10, 10, 10], [0, 0, 0, 0, 50], [300, 0, 0, 0, 0]]


@pytest.mark.parametrize("window", WINDOWS)
def test_psi_is_the_smoothed_sum_computed_directly(window: list[int]) -> None:
    q = (np.array(REFERENCE) + SMOOTHING) / (sum(REFERENCE) + SMOOTHING * len(REFERENCE))
    p = (np.array(window) + SMOOTHING) / (sum(window) + SMOOTHING * len(window))
    assert psi(REFERENCE, window) == pytest.approx(float(np.sum((p - q) * np.log(p / q))), rel=1e-12)
    assert np.isfinite(psi(REFERENCE, window))  # empty bins on either side stay finite


@pytest.mark.parametrize("window", WINDOWS)
def test_js_distance_matches_scipy_base_2(window: list[int]) -> None:
    expected = jensenshannon(np.array(REFERENCE, float), np.array(window, float), base=2)
    assert js_distance(REFERENCE, window) == pytest.approx(float(expected), abs=1e-12)
    assert 0.0 <= js_distance(REFERENCE, window) <= 1.0


def test_js_distance_is_one_for_disjoint_support() -> None:
    assert js_distance([10, 0], [0, 10]) == pytest.approx(1.0)
    assert js_distance([3, 5], [6, 10]) == pytest.approx(0.0)


@pytest.mark.parametrize("window", WINDOWS[:2])
def test_g_test_matches_scipy_log_likelihood_ratio(window: list[int]) -> None:
    expected_props = (np.array(REFERENCE) + SMOOTHING) / (sum(REFERENCE) + SMOOTHING * len(REFERENCE))
    observed = np.array(window, float)
    _, p = power_divergence(observed, expected_props * observed.sum(), lambda_="log-likelihood")
    assert g_test_p_value(REFERENCE, window) == pytest.approx(float(p), rel=1e-9)


def test_measure_reads_names_and_fields() -> None:
    values = measure(
        {
            "name": "Картридж HP CF226X",
            "unit": " Шт. ",
            "okved_code": "47.41",
            "hs_code": "8443 99",
            "country": "ru",
        },
        "product",
        0.93,
        frozenset({"картридж"}),
    )
    assert values["word_count"] == 3
    assert values["unseen_token_share"] == pytest.approx(2 / 3)
    assert values["latin_share"] == pytest.approx(5 / 13)
    assert values["digit_share"] == pytest.approx(3 / 16)
    assert (values["unit"], values["country"], values["okved_section"], values["hs_chapter"]) == (
        "шт",
        "RU",
        "G",
        "84",
    )
    assert values["kind"] is None and values["predicted_label"] == "product"


@pytest.mark.parametrize("name", ["Ⅻ ½ ² _x_ ١٢٣ é", "Ремонт ЦНС-38 2 шт", "___", "42", "Ab1 Бв2"])
def test_measure_counts_letters_latin_letters_and_digits_as_regex_classes_do(name: str) -> None:
    import re

    letters = len(re.findall(r"[^\W\d_]", name))
    latin = len(re.findall(r"[A-Za-z]", name))
    digits = len(re.findall(r"\d", name))
    values = measure({"name": name}, "product", 0.5, frozenset())
    assert values["latin_share"] == (latin / letters if letters else 0.0)
    assert values["digit_share"] == (digits / (letters + digits) if letters + digits else 0.0)


class _Fixed:
    """A stand-in classifier for baseline building: the label by a keyword, a fixed confidence."""

    version = "mlp-test"
    featurizer_version = "f-test"

    def predict(self, items: list[dict[str, Any]], top_k: int = 1, explain: int = 0) -> list[Any]:
        from models.classifier import Prediction

        out = []
        for item in items:
            label = "service" if "ремонт" in item["name"].lower() else "product"
            out.append(Prediction(label, 0.9, {label: 0.9}, [(label, 0.9)], []))
        return out


def _reference_items(n: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    words = ["ремонт", "насос", "труба", "монтаж", "кабель", "болт", "гайка", "шайба"]
    return [
        {
            "name": " ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) + f" {rng.randint(1, 99)}",
            "unit": rng.choice(["шт", "кг", "м"]),
        }
        for _ in range(n)
    ]


def test_baseline_bins_round_trip_and_version() -> None:
    items = _reference_items()
    baseline = build_baseline(_Fixed(), items, vocabulary_of(["ремонт насос"]), source="unit test")
    assert set(baseline.features) == set(FEATURES)
    for ref in baseline.features.values():
        assert sum(ref.counts) == len(items)
    again = Baseline.from_json(baseline.to_json())
    assert again.version == baseline.version and again.features == baseline.features
    assert replace(baseline, created_at="other").version == baseline.version  # content, not time
    bins = baseline.bins({"name": "Hammer Bosch GSB 13 RE", "unit": "рулон"}, "product", 0.9)
    unit = baseline.features["unit"]
    assert isinstance(unit, CategoricalReference) and bins[FEATURES.index("unit")] == len(unit.categories) - 1
    latin = baseline.features["latin_share"]
    assert isinstance(latin, NumericReference)
    # every reference name is Cyrillic: the Latin name must not share their bin
    assert bins[FEATURES.index("latin_share")] > latin.bin(0.0)
    assert not baseline.features["kind"].observed and baseline.features["unit"].observed  # type: ignore[union-attr]


def test_bins_are_each_features_bin_of_measure_with_names_and_fields_looked_up_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Baseline.bins` keeps the bins of names and of field values apart: whatever it has kept, an item's
    bins are those of `measure`, for names seen with other fields and fields seen with other names."""
    import models.drift.baseline as baseline_module

    vocabulary = vocabulary_of(["ремонт насос"])
    baseline = build_baseline(_Fixed(), _reference_items(), vocabulary, source="unit test")
    rng = random.Random(3)
    names = ["Ремонт насоса", "Hammer Bosch GSB 13 RE", "болт М8 2 шт", "", "монтаж кабеля 10 м", "Ⅻ ½ ²"]
    full = {"unit": " Кг. ", "kind": "Товар", "country": "ru", "okved_code": "43.21", "hs_code": "8413",
            "source": "ERP"}  # fmt: skip
    other = {"unit": "шт", "kind": "услуга", "country": "DE", "okved_code": "9", "hs_code": "x", "source": ""}
    # each field changed alone, left out alone, and one that does not hash (not kept, still binned)
    fields = [{}, full, *({**full, key: value} for key, value in other.items())]
    fields += [{k: v for k, v in full.items() if k != key} for key in full] + [{"unit": ["шт"]}]
    monkeypatch.setattr(baseline_module, "BINS_CACHE", 4)  # cleared again and again
    for _ in range(2000):
        item = {"name": rng.choice(names), **rng.choice(fields)}
        label, confidence = rng.choice(["product", "service", "other"]), rng.random()
        values = measure(item, label, confidence, baseline.vocabulary)
        expected = tuple(baseline.features[name].bin(values[name]) for name in FEATURES)
        assert baseline.bins(item, label, confidence) == expected


def test_registry_refuses_a_tampered_baseline(tmp_path: Path, trained_models: Path) -> None:
    import shutil

    root = tmp_path / "models"
    shutil.copytree(trained_models, root)
    registry = ModelRegistry(root)
    baseline = registry.load_baseline("champion")
    assert baseline is not None and baseline.model_version == registry.get("champion").version
    assert registry.baseline_by_version(baseline.version) == baseline
    path = root / registry.get("champion").baseline["file"]  # type: ignore[index]
    path.write_bytes(path.read_bytes().replace(b'"rows":', b'"rows":1'))
    with pytest.raises(ChecksumError):
        registry.load_baseline("champion")


# ---- the monitor --------------------------------------------------------------------------------

W = 30_000


def _settings(**overrides: Any) -> Settings:
    base = {
        "drift_window_seconds": 30,
        "drift_min_samples": 100,
        "drift_grace_seconds": 0,
        "drift_idle_seconds": 10,
        "drift_hopping_windows": 3,
    }
    return Settings(**{**base, **overrides})


def _baseline() -> Baseline:
    return build_baseline(_Fixed(), _reference_items(4000), vocabulary_of([]), source="unit test")


def _window(baseline: Baseline, items: list[dict[str, Any]]) -> list[list[int]]:
    counts = [[0] * size for size in baseline.sizes()]
    for item in items:
        label = "service" if "ремонт" in item["name"] else "product"
        for feature, index in enumerate(baseline.bins(item, label, 0.9)):
            counts[feature][index] += 1
    return counts


class _Feed:
    """Reports as workers send them: one partition, cumulative window counts, stream time."""

    def __init__(self, settings: Settings) -> None:
        self.baseline = _baseline()
        self.monitor = DriftMonitor(settings, lambda v: self.baseline if v == self.baseline.version else None)
        self.now = 0

    def window(self, w: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        counts = _window(self.baseline, items)
        report = {
            "partition": 0,
            "stream_time": (w + 1) * W,  # the window's end: closed by event time
            "caught_up": False,
            "windows": [
                {
                    "baseline_version": self.baseline.version,
                    "model_version": "mlp-test",
                    "start": w * W,
                    "closed": True,
                    "n": len(items),
                    "counts": counts,
                }
            ],
            "late_items": 0,
        }
        self.now += 1000
        self.monitor.ingest(report, self.now)
        return self.monitor.judge_ready(self.now)


def _unit_shift(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**item, "unit": "бухта"} for item in items]


def _tumbling(alerts: list[dict[str, Any]], feature: str) -> list[tuple[str, str]]:
    return [(a["metric"], a["state"]) for a in alerts if a["feature"] == feature and a["view"] == "tumbling"]


def test_one_alert_per_episode_and_one_when_it_ends() -> None:
    feed = _Feed(_settings(drift_clear_windows=2))
    seen: list[list[dict[str, Any]]] = []
    plan = [False, True, True, True, False, False, False, True]
    for w, shifted in enumerate(plan):
        items = _reference_items(300, seed=100 + w)
        seen.append(feed.window(w, _unit_shift(items) if shifted else items))
    assert _tumbling(seen[0], "unit") == []
    assert sorted(_tumbling(seen[1], "unit")) == [("js", "firing"), ("psi", "firing")]
    assert _tumbling(seen[2], "unit") == _tumbling(seen[3], "unit") == []  # same episode: silent
    assert _tumbling(seen[4], "unit") == []  # one window back to normal is not the end yet
    assert sorted(_tumbling(seen[5], "unit")) == [("js", "resolved"), ("psi", "resolved")]
    assert sorted(_tumbling(seen[7], "unit")) == [("js", "firing"), ("psi", "firing")]  # a new episode
    assert all(not _tumbling(alerts, "name_length") for alerts in seen)
    firing = next(a for a in seen[1] if a["feature"] == "unit" and a["view"] == "tumbling")
    assert firing["window_start"] == W and firing["window_end"] == 2 * W and firing["sample_size"] == 300
    assert firing["severity"] == "critical" and firing["top_shifts"][0]["bin"] == "(other)"


def test_k_of_n_persistence_waits_for_the_second_drifted_window() -> None:
    feed = _Feed(_settings(drift_persistence=2, drift_persistence_windows=3))
    first = feed.window(0, _unit_shift(_reference_items(300, seed=1)))
    second = feed.window(1, _reference_items(300, seed=2))
    third = feed.window(2, _unit_shift(_reference_items(300, seed=3)))
    assert _tumbling(first, "unit") == [] and _tumbling(second, "unit") == []
    assert sorted(_tumbling(third, "unit")) == [("js", "firing"), ("psi", "firing")]


def test_small_windows_are_not_judged_and_the_hopping_view_adds_them_up() -> None:
    feed = _Feed(_settings(drift_min_samples=100, drift_hopping_windows=3))
    alerts = [feed.window(w, _unit_shift(_reference_items(40, seed=w))) for w in range(3)]
    assert all(_tumbling(a, "unit") == [] for a in alerts)
    snapshot = feed.monitor.snapshot(feed.now)
    unit = snapshot["features"]["unit"]
    assert unit["history"][-1]["status"] == "insufficient_samples"
    hopping = [a for a in alerts[2] if a["feature"] == "unit" and a["view"] == "hopping"]
    assert {a["metric"] for a in hopping} == {"psi", "js"} and hopping[0]["sample_size"] == 120
    assert hopping[0]["window_start"] == 0 and hopping[0]["window_end"] == 3 * W


def test_a_lagging_partition_holds_the_window_and_an_idle_one_does_not() -> None:
    feed = _Feed(_settings(drift_idle_seconds=10))
    monitor, version = feed.monitor, feed.baseline.version
    counts = _window(feed.baseline, _reference_items(150))

    def report(
        partition: int, stream_time: int | None, caught_up: bool, windows: list[Any]
    ) -> dict[str, Any]:
        return {
            "partition": partition,
            "stream_time": stream_time,
            "caught_up": caught_up,
            "windows": windows,
        }

    window = {"baseline_version": version, "model_version": "m", "start": 0, "closed": False, "n": 150}
    monitor.ingest(report(0, 5 * W, False, [{**window, "counts": counts}]), 0)
    monitor.ingest(report(1, W // 2, False, []), 0)  # behind window 0's end, records left to read
    assert monitor.judge_ready(60_000) == [] and monitor.history == []  # lagging: wait, however long
    monitor.ingest(report(1, W // 2, True, []), 60_000)  # read to its end, then quiet
    assert monitor.judge_ready(65_000) == [] and monitor.history == []
    monitor.judge_ready(70_000)  # idle for 10 s: no longer holds the window
    assert [h["window_start"] for h in monitor.history] == [0]
    assert monitor.history[0]["views"]["tumbling"]["n"] == 150


def test_state_reloads_from_its_persisted_keys() -> None:
    feed = _Feed(_settings())
    feed.window(0, _unit_shift(_reference_items(300, seed=5)))
    persisted = {k: __import__("json").loads(v) for k, v in feed.monitor.take_dirty().items() if v}
    again = DriftMonitor(_settings(), lambda v: feed.baseline)
    again.load(persisted)
    assert again.snapshot(feed.now) == feed.monitor.snapshot(feed.now)
    assert again.episodes["unit|psi|tumbling"]["active"] is True


def test_baseline_rebuilds_from_parquet_keeping_the_training_vocabulary(
    tmp_path: Path, trained_models: Path
) -> None:
    import shutil

    import pandas as pd

    from tools.drift_commands import rebuild_baseline

    root = tmp_path / "models"
    shutil.copytree(trained_models, root)
    registry = ModelRegistry(root)
    before = registry.load_baseline("champion")
    assert before is not None
    rows = pd.DataFrame(
        {"name": [f"Болт М{i} оцинкованный" for i in range(1, 301)], "unit": ["шт", "кг", "упак"] * 100}
    )
    rows.to_parquet(tmp_path / "history.parquet")
    text = rebuild_baseline(registry, tmp_path / "history.parquet", "champion")
    after = registry.load_baseline("champion")
    assert after is not None and after.version in text and after.version != before.version
    assert after.rows == 300 and after.vocabulary == before.vocabulary
    unit = after.features["unit"]
    assert isinstance(unit, CategoricalReference)
    assert unit.categories == ("кг", "упак", "шт", "(none)", "(other)")
    assert registry.get("champion").baseline["source"] == "history.parquet"  # type: ignore[index]
    (tmp_path / "empty.csv").write_text("name\n")
    with pytest.raises(ValueError, match="no rows"):
        rebuild_baseline(registry, tmp_path / "empty.csv", "champion")


def test_drift_status_prints_every_feature() -> None:
    from tools.drift_commands import format_status

    feed = _Feed(_settings())
    for w in range(2):
        feed.window(w, _unit_shift(_reference_items(300, seed=w)))
    text = format_status(feed.monitor.snapshot(feed.now))
    lines = {line.split()[0]: line for line in text.splitlines() if line.split()[0] in FEATURES}
    assert set(lines) == set(FEATURES)
    assert " drift " in lines["unit"] and " ok " in lines["name_length"]
    assert "no_reference" in lines["kind"]
    assert "(natural log)" in text and "base 2" in text
    assert format_status({"status": "unavailable", "detail": "not yet"}) == "drift: unavailable: not yet"

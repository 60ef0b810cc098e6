from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.batch_prediction import predict_csv
from models.classifier import Classifier, Prediction
from models.datasets.augmentation import has_service_prefix, strip_service_prefix
from models.datasets.builder import DEFAULT_SOURCE
from models.features.featurizer import Featurizer
from models.features.lexical_cues import SERVICE_STEMS
from models.features.text_normalization import normalize_words
from models.registry.model_registry import (
    ChecksumError,
    FeaturizerMismatchError,
    ModelRegistry,
    UnknownModelError,
)
from models.training.epoch_loop import fit_keeping_best
from models.training.train import build_model, train
from models.word_products import WordProducts
from tests.support import checked_occlusion_weights

DATA = DEFAULT_SOURCE
NAMES = [
    "Услуги по ремонту",
    "Ремонт кровли",
    "Картридж HP CF226X",
    "Бумага офисная А4 500 л",
    "Аренда нежилого помещения",
    "Молоко пастеризованное 3,2%",
]


@pytest.fixture(scope="module")
def subset_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = pd.read_csv(DATA)
    subset = frame.groupby("label", group_keys=False).sample(frac=2000 / len(frame), random_state=7)
    path = tmp_path_factory.mktemp("data") / "subset.csv"
    subset.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(subset_csv: Path) -> tuple[Classifier, dict[str, Any]]:
    return train(subset_csv, seed=3, max_epochs=6, patience=3, progress=False)


@pytest.fixture(scope="module")
def classifier(trained: tuple[Classifier, dict[str, Any]]) -> Classifier:
    return trained[0]


# ---- augmentation -----------------------------------------------------------------------------


def test_prefix_stripping() -> None:
    assert strip_service_prefix("Услуги по ремонту компьютеров") == "Ремонт компьютеров"
    assert strip_service_prefix("Работы по монтажу систем вентиляции") == "Монтаж систем вентиляции"
    assert (
        strip_service_prefix("Услуги по ремонту и техническому обслуживанию кондиционеров")
        == "Ремонт и техническое обслуживание кондиционеров"
    )
    assert strip_service_prefix("Услуги по оптовой торговле мебелью") == "Оптовая торговля мебелью"
    assert strip_service_prefix("Услуги почтовой связи") is None  # no "по": left alone
    assert strip_service_prefix("Услуги по заграничным перевозкам") is None  # noun not in the table
    assert strip_service_prefix("Молоко сырое") is None
    assert has_service_prefix("Прочие услуги по ремонту") and not has_service_prefix("Ремонт кровли")


# ---- training ---------------------------------------------------------------------------------


def test_training_on_a_subset_reaches_high_macro_f1(trained: tuple[Classifier, dict[str, Any]]) -> None:
    classifier, metrics = trained
    assert metrics["macro_f1"] > 0.9
    assert metrics["accuracy"] > 0.9
    assert set(metrics["per_class"]) == {"product", "service"}
    for scores in metrics["per_class"].values():
        assert {"precision", "recall", "f1", "support"} <= set(scores)
    assert metrics["validation_size"] == pytest.approx(0.15 * 2000, abs=2)
    assert metrics["train_size"] + metrics["validation_size"] == pytest.approx(2000, abs=2)
    assert metrics["train_size_augmented"] > 0
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 6
    assert metrics["rows_per_s_per_epoch"] > 0
    assert 0.5 <= metrics["avg_confidence"] <= 1.0
    assert metrics["slices"]["services_prefix_stripped"]["n"] > 0
    history_scores = [h["val_macro_f1"] for h in metrics["history"]]
    assert max(history_scores) == history_scores[metrics["best_epoch"] - 1]
    assert re.fullmatch(r"mlp-\d{14}-[0-9a-f]{8}", classifier.version)
    assert classifier.featurizer_version == Featurizer().version
    assert not hasattr(classifier.model, "_optimizer") and not hasattr(classifier.model, "_best_coefs")
    # Input columns never seen in training (the structured-field block among them) carry no weight.
    field_block = classifier.model.coefs_[0][
        classifier.featurizer.n_text_features : classifier.featurizer.n_features
    ]
    assert not field_block.any()
    assert metrics["untrained_input_columns"] >= classifier.featurizer.n_field_features


def test_best_epoch_weights_are_restored() -> None:
    frame = pd.read_csv(DATA).sample(400, random_state=1)
    features = Featurizer().transform([{"name": n} for n in frame["name"]])
    targets = frame["label"].to_numpy()
    scripted = iter([0.50, 0.90, 0.70, 0.60, 0.95])
    snapshots: list[list[np.ndarray]] = []

    def evaluate(model: Any) -> float:
        snapshots.append([c.copy() for c in model.coefs_ + model.intercepts_])
        return next(scripted)

    model = build_model(seed=0).set_params(batch_size=128)
    history = fit_keeping_best(
        model, features, targets, evaluate, rng=np.random.default_rng(0), max_epochs=10, patience=2
    )
    assert history.best_epoch == 2
    assert len(history.epochs) == 4  # epochs 3 and 4 did not improve: stop before the scripted 0.95
    restored = model.coefs_ + model.intercepts_
    for current, best in zip(restored, snapshots[1], strict=True):
        np.testing.assert_array_equal(current, best)
    assert not np.array_equal(restored[0], snapshots[-1][0])


# ---- prediction and explanation ---------------------------------------------------------------


def test_predict_returns_consistent_predictions(classifier: Classifier) -> None:
    predictions = classifier.predict([{"id": str(i), "name": n} for i, n in enumerate(NAMES)])
    assert len(predictions) == len(NAMES)
    for prediction in predictions:
        assert isinstance(prediction, Prediction)
        assert prediction.label in {"product", "service"}
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert prediction.confidence == max(prediction.probabilities.values())
        assert prediction.top_k[0] == (prediction.label, prediction.confidence)
        assert [p for _, p in prediction.top_k] == sorted((p for _, p in prediction.top_k), reverse=True)
        assert len(prediction.top_k) == 2
    assert predictions[0].label == "service"
    assert classifier.predict([]) == []
    assert len(classifier.predict([{"name": "Ремонт кровли"}], top_k=1)[0].top_k) == 1


def test_outputs_do_not_depend_on_the_micro_batch(classifier: Classifier) -> None:
    # a re-delivered item is scored in another batch; its output must be identical (at-least-once)
    words = ["Ремонт насоса", "Бумага А4", "Аренда офиса", "Кабель"] * 60
    names = [f"{word} {i}" for i, word in enumerate(words)]
    items = [{"name": n, "full_name": n} for n in names]
    whole = classifier.predict(items, explain=3)
    for size in (1, 7, 100):
        for start in range(0, len(items), size):
            part = classifier.predict(items[start : start + size], explain=3)
            assert part == whole[start : start + size]


def test_outputs_do_not_depend_on_which_word_rows_are_kept(classifier: Classifier) -> None:
    """The first layer is summed from word rows (`models.word_products`): whether a word's row was kept
    from earlier batches or computed again after the table emptied, an item's output is the same bits, and
    it is the feature matrix's product to float32 precision."""
    items = [{"name": f"{name} {i}", "unit": "шт" if i % 2 else None} for i, name in enumerate(NAMES * 5)]
    whole = classifier.predict(items, explain=3)
    fresh = copy.deepcopy(classifier)
    fresh._explanations.clear()
    fresh.__dict__["_words"] = WordProducts(fresh.featurizer, fresh.net.first_weights, capacity=8)
    table = fresh._word_products.own
    one_by_one = [fresh.predict([item], explain=3)[0] for item in items[::-1]][::-1]
    assert len(table.index) <= 8  # emptied again and again
    assert one_by_one == whole
    expected = classifier.predict_proba(classifier.featurizer.transform(items))
    got = np.array([[p.probabilities[label] for label in classifier.labels] for p in whole])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_threads_sharing_a_classifier_get_what_each_would_alone(classifier: Classifier) -> None:
    """Where scoring runs in the worker's threads, micro-batches share one classifier and its word tables."""
    shared = copy.deepcopy(classifier)
    words = shared.__dict__["_words"] = WordProducts(shared.featurizer, shared.net.first_weights, capacity=16)
    for table in (words.own, words.head):
        assert table is not None
        compute = table.compute  # slowed down, so that another thread runs while a table is being filled
        table.compute = lambda new, compute=compute: (time.sleep(0.002), compute(new))[1]
    batches = [[{"name": f"{name} {t}-{i}"} for i, name in enumerate(NAMES * 3)] for t in range(4)]
    alone = [copy.deepcopy(classifier).predict(batch, explain=3) for batch in batches]
    found: dict[int, list[list[Prediction]]] = {t: [] for t in range(len(batches))}
    rounds = 8

    def score(t: int) -> None:
        for _ in range(rounds):
            found[t].append(shared.predict(batches[t], explain=3))
            shared._explanations.clear()

    threads = [threading.Thread(target=score, args=(t,)) for t in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for t, runs in found.items():
        assert runs == [alone[t]] * rounds


def test_predict_proba_matches_sklearn(classifier: Classifier) -> None:
    features = classifier.featurizer.transform([{"name": n} for n in NAMES])
    np.testing.assert_allclose(
        classifier.predict_proba(features), classifier.model.predict_proba(features), rtol=1e-5, atol=1e-6
    )


def test_explanation_shape(classifier: Classifier) -> None:
    items = [{"name": n} for n in NAMES] + [{"name": "Кабель силовой", "unit": "м", "hs_code": "8544"}]
    for k in (1, 3):
        for item, prediction in zip(items, classifier.predict(items, explain=k), strict=True):
            assert len(prediction.explanation) <= k
            parts = set(normalize_words(item["name"])) | {
                f"{field}={item[field]}" for field in ("unit", "hs_code") if field in item
            }
            weights = [w for _, w in prediction.explanation]
            assert all(token in parts for token, _ in prediction.explanation)
            assert all(math.isfinite(w) and 0 < w <= 1 for w in weights)
            assert weights == sorted(weights, reverse=True)
            assert len({t for t, _ in prediction.explanation}) == len(prediction.explanation)
    assert all(p.explanation == [] for p in classifier.predict(items, explain=0))


def test_top_explanation_token_of_a_service_is_a_service_cue(classifier: Classifier) -> None:
    (prediction,) = classifier.predict([{"name": "Ремонт кровли"}], explain=3)
    assert prediction.label == "service"
    top_token = prediction.explanation[0][0]
    assert top_token.startswith(SERVICE_STEMS)


def test_occlusion_weight_is_the_probability_drop_without_the_part(classifier: Classifier) -> None:
    """Each weight equals P(label | item) − P(label | the item's counts less the part's contribution),
    computed the direct way (`tests.support.checked_occlusion_weights`)."""
    items = [
        {"name": "Ремонт кровли здания"},
        {"name": "Картридж HP CF226X", "unit": "шт"},
        {"name": "Монтаж кондиционера", "full_name": "Монтаж кондиционера настенного", "okved_code": "43.22"},
    ]
    checked = checked_occlusion_weights(classifier, items)
    assert checked >= 3


def test_explanations_from_the_callers_composition_are_those_assembled_again(classifier: Classifier) -> None:
    """The stream hands its composition of the items to `predict`; explanations must not change for it."""
    featurizer = classifier.featurizer
    items = [
        {"name": "Замена тормозных колодок, регулировка ручника", "unit": "усл. ед."},
        {"name": "Кабель ВВГнг 3x2,5", "full_name": "Кабель силовой ВВГнг 3x2,5 и ВВГнг 3x1,5"},
    ]
    composed = featurizer.composed(items)
    assert (featurizer.occlusions(items).counts != composed.counts).nnz == 0
    classifier._explanations.clear()
    assembled = classifier.predict(items, explain=12)
    classifier._explanations.clear()
    handed = classifier.predict(items, explain=12, composed=composed)
    assert [p.explanation for p in handed] == [p.explanation for p in assembled]
    assert all(p.explanation for p in handed)


def test_explanations_are_cached_per_name_and_fields(classifier: Classifier) -> None:
    item = {"name": "Замена масла в двигателе", "unit": "усл. ед."}
    first = classifier.predict([item], explain=3)[0].explanation
    key = (classifier.featurizer.occlusion_key(item), 3)
    assert list(classifier._explanations[key]) == first
    assert classifier.predict([{**item, "id": "other"}], explain=3)[0].explanation == first
    other = {**item, "full_name": "Замена масла в двигателе и фильтра"}
    assert (classifier.featurizer.occlusion_key(other), 3) != key


# ---- registry ---------------------------------------------------------------------------------


def _renamed(classifier: Classifier, suffix: str) -> Classifier:
    clone = copy.copy(classifier)
    clone.version = classifier.version + suffix
    return clone


def test_registry_round_trip(tmp_path: Path, classifier: Classifier, subset_csv: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.champion() is None
    record = registry.register(classifier, {"macro_f1": np.float64(0.97)}, subset_csv, notes="test")
    assert record.version == classifier.version
    assert registry.champion() == record
    assert registry.get("champion") == registry.get(classifier.version) == record
    assert record.data_rows["total"] == 2000
    assert record.data_rows["product"] + record.data_rows["service"] == 2000
    assert record.metrics == {"macro_f1": 0.97}
    assert (tmp_path / "registry" / classifier.version / "model.npz").is_file()
    index = json.loads((tmp_path / "registry" / "registry.json").read_text())
    assert index["aliases"] == {"champion": classifier.version}
    assert index["versions"][classifier.version]["artifact_sha256"] == record.artifact_sha256

    loaded = registry.load()
    assert loaded.version == classifier.version
    items = [{"name": n} for n in NAMES]
    assert [p.probabilities for p in loaded.predict(items)] == [
        p.probabilities for p in classifier.predict(items)
    ]
    with pytest.raises(ValueError):
        registry.register(classifier, {}, subset_csv)
    with pytest.raises(UnknownModelError):
        registry.get("mlp-missing")


def test_registry_refuses_a_tampered_artifact(
    tmp_path: Path, classifier: Classifier, subset_csv: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    record = registry.register(classifier, {}, subset_csv)
    artifact = tmp_path / record.artifact
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(ChecksumError):
        registry.load(record.version)


def test_registry_refuses_a_model_of_another_featurizer(
    tmp_path: Path, classifier: Classifier, subset_csv: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    record = registry.register(classifier, {}, subset_csv)
    index = json.loads(registry.index_path.read_text())
    index["versions"][record.version]["featurizer_version"] = "000000000000"
    registry.index_path.write_text(json.dumps(index))
    with pytest.raises(FeaturizerMismatchError):
        registry.load()
    assert registry.load(check_featurizer=False).version == record.version


def test_promote_changes_champion(tmp_path: Path, classifier: Classifier, subset_csv: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first = registry.register(classifier, {}, subset_csv)
    second = registry.register(_renamed(classifier, "-b"), {}, subset_csv)
    assert registry.champion() == first  # registering does not replace the champion
    assert [r.version for r in registry.list()] == [first.version, second.version]
    registry.promote(second.version)
    assert registry.champion() == second
    assert registry.load("champion").version == second.version
    assert ModelRegistry(tmp_path).champion() == second  # persisted
    with pytest.raises(UnknownModelError):
        registry.promote("mlp-missing")
    assert not list(tmp_path.rglob("*.tmp"))


def test_readers_never_see_a_partial_registry(
    tmp_path: Path, classifier: Classifier, subset_csv: Path
) -> None:
    registry = ModelRegistry(tmp_path)
    versions = [registry.register(_renamed(classifier, s), {}, subset_csv).version for s in ("-a", "-b")]
    done = threading.Event()

    def toggle() -> None:
        for i in range(150):
            registry.promote(versions[i % 2])
        done.set()

    writer = threading.Thread(target=toggle)
    writer.start()
    seen = set()
    while not done.is_set():
        champion = ModelRegistry(tmp_path).champion()  # a separate reader, parsing the file each time
        assert champion is not None
        seen.add(champion.version)
    writer.join()
    assert seen <= set(versions)


# ---- batch ------------------------------------------------------------------------------------


def test_predict_csv_with_only_a_name_column(tmp_path: Path, classifier: Classifier) -> None:
    source = tmp_path / "in.csv"
    pd.DataFrame({"name": NAMES}).to_csv(source, index=False)
    target = tmp_path / "out.csv"
    assert predict_csv(source, target, classifier, explain=True) == len(NAMES)
    out = pd.read_csv(target, keep_default_na=False)
    assert list(out.columns) == [
        "name", "label", "confidence", "probability_product", "probability_service", "explanation",
        "model_version",
    ]  # fmt: skip
    assert out["name"].tolist() == NAMES
    assert set(out["label"]) <= {"product", "service"}
    np.testing.assert_allclose(out["probability_product"] + out["probability_service"], 1.0, atol=1e-5)
    assert (out["model_version"] == classifier.version).all()
    pattern = re.compile(r"(\S+:\+\d+\.\d\d)( \S+:\+\d+\.\d\d){0,2}")
    assert out["explanation"].map(lambda text: text == "" or bool(pattern.fullmatch(text))).all()
    assert out.loc[0, "explanation"] != ""


def test_predict_csv_keeps_ids_and_uses_fields(tmp_path: Path, classifier: Classifier) -> None:
    source = tmp_path / "in.csv"
    pd.DataFrame(
        {"id": ["a", "b"], "name": ["Ремонт кровли", "Кабель ВВГ"], "unit": ["", "м"], "extra": ["x", "y"]}
    ).to_csv(source, index=False)
    target = tmp_path / "out.csv"
    assert predict_csv(source, target, classifier, explain=False) == 2
    out = pd.read_csv(target, keep_default_na=False)
    assert out.columns[0] == "id" and out["id"].tolist() == ["a", "b"]
    assert (out["explanation"] == "").all()

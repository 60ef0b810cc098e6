"""Model files that load without unpickling, temperature calibration and the calibration metrics."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from models.classifier import Classifier
from models.datasets.builder import DEFAULT_SOURCE
from models.features.featurizer import Featurizer
from models.registry import model_files
from models.training.calibration import fit_temperature, logits
from models.training.metrics import confident_accuracy, expected_calibration_error
from models.training.train import build_model

ITEMS = [
    {"name": "Замена тормозных колодок"},
    {"name": "Кабель силовой ВВГ 3х2,5", "unit": "м"},
    {"name": "Окрашивание волос"},
    {"name": "Молоко пастеризованное 3,2%"},
]


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    frame = pd.read_csv(DEFAULT_SOURCE).sample(1500, random_state=5)
    featurizer = Featurizer()
    features = featurizer.transform([{"name": n} for n in frame["name"]])
    model = build_model(seed=1)
    for _ in range(3):
        model.partial_fit(features, frame["label"].to_numpy(), classes=["product", "service"])
    return Classifier(model, featurizer, version="mlp-test-1", temperature=1.7)


def test_round_trip_gives_the_same_predictions_and_explanations(classifier: Classifier) -> None:
    payload = model_files.dumps(classifier)
    loaded = model_files.loads(payload)
    assert (loaded.version, loaded.featurizer_version, loaded.temperature) == ("mlp-test-1", *(
        classifier.featurizer_version, 1.7))  # fmt: skip
    assert loaded.featurizer.version == classifier.featurizer.version
    assert loaded.predict(ITEMS, explain=3) == classifier.predict(ITEMS, explain=3)


def test_the_file_is_arrays_and_json_and_its_bytes_are_reproducible(classifier: Classifier) -> None:
    payload = model_files.dumps(classifier)
    assert payload == model_files.dumps(classifier)
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:  # nothing in it needs pickle
        assert archive["coefs_0"].shape == (classifier.featurizer.width, 512)
        assert archive["classes"].tolist() == ["product", "service"]
    names = zipfile.ZipFile(io.BytesIO(payload)).namelist()
    assert "meta.json" in names and all(n.endswith((".npy", ".json")) for n in names)


def test_garbage_is_refused() -> None:
    with pytest.raises(ValueError, match="not a model file"):
        model_files.loads(b"not a zip")


def test_a_loaded_model_can_be_trained_further(classifier: Classifier) -> None:
    loaded = model_files.loads(model_files.dumps(classifier))
    features = loaded.featurizer.transform(ITEMS)
    before = loaded.model.coefs_[-1].copy()
    loaded.model.partial_fit(features, np.array(["service", "product", "service", "product"]))
    assert not np.array_equal(before, loaded.model.coefs_[-1])


def test_temperature_divides_the_logit(classifier: Classifier) -> None:
    features = classifier.featurizer.transform(ITEMS)
    z = logits(classifier.model, features)[:, 1]
    np.testing.assert_allclose(classifier.predict_proba(features)[:, 1], expit(z / 1.7), atol=1e-6)
    sharp = Classifier(classifier.model, classifier.featurizer, "mlp-test-2")
    np.testing.assert_allclose(sharp.predict_proba(features)[:, 1], expit(z), atol=1e-6)
    assert [p.label for p in sharp.predict(ITEMS)] == [p.label for p in classifier.predict(ITEMS)]
    with pytest.raises(ValueError):
        Classifier(classifier.model, classifier.featurizer, "x", temperature=0)


def test_fitted_temperature_softens_an_overconfident_model(classifier: Classifier) -> None:
    frame = pd.read_csv(DEFAULT_SOURCE).sample(600, random_state=9)
    features = classifier.featurizer.transform([{"name": n} for n in frame["name"]])
    # labels flipped on a quarter of the rows: the model is right ~75% of the time, at high confidence
    labels = frame["label"].to_numpy().copy()
    flip = np.random.default_rng(0).random(len(labels)) < 0.25
    labels[flip] = np.where(labels[flip] == "product", "service", "product")
    temperature = fit_temperature(classifier.model, features, labels.tolist())
    assert temperature > 1.1
    # a model that is right on every row is never sharpened below T = 1
    predicted = classifier.model.classes_[logits(classifier.model, features).argmax(axis=1)]
    assert fit_temperature(classifier.model, features, predicted.tolist()) == 1.0


def test_expected_calibration_error() -> None:
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, True, True, False, True, False])
    # bin (0.9, 1]: accuracy 0.75 vs 0.95; bin (0.5, 0.6]: 0.5 vs 0.55
    assert expected_calibration_error(confidence, correct) == pytest.approx((4 * 0.2 + 2 * 0.05) / 6)
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0
    assert confident_accuracy(confidence, correct) == {"confident_share": 4 / 6, "confident_accuracy": 0.75}

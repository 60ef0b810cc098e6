"""The shipped default model (models/default/): it matches the featurizer code, loads without unpickling,
and a fresh registry starts with it instead of training."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from models.features.featurizer import Featurizer
from models.registry import default_model
from models.registry.model_registry import ChecksumError, ModelRegistry
from streams.settings import Settings
from tools.common import ensure_model
from tools.model_commands import show_model


@pytest.fixture(scope="module")
def shipped() -> default_model.ShippedModel:
    model = default_model.shipped()
    assert model is not None, "models/default/ holds no model: python -m tools.build_default_model"
    return model


def test_the_shipped_model_matches_the_featurizer_code(shipped: default_model.ShippedModel) -> None:
    """Fails when the featurizer's code, data or defaults change: rebuild with
    `python -m tools.build_default_model --extra ../shared/data/train`."""
    assert shipped.record["featurizer_version"] == Featurizer().version
    assert shipped.matches_code


def test_it_loads_and_is_what_its_record_says(shipped: default_model.ShippedModel) -> None:
    classifier = shipped.classifier()
    assert classifier.version == shipped.record["version"]
    assert classifier.featurizer_version == shipped.record["featurizer_version"]
    assert classifier.temperature == shipped.record["temperature"] >= 1.0
    assert classifier.model.hidden_layer_sizes == (512, 256, 128)
    assert classifier.model.batch_size == 1024 and classifier.model.solver == "adam"
    labels = [p.label for p in classifier.predict([{"name": "Ремонт кровли"}, {"name": "Кабель ВВГ 3х2,5"}])]
    assert labels == ["service", "product"]
    metrics = shipped.record["metrics"]
    assert metrics["macro_f1"] >= 0.98 and 0 <= metrics["ece"] <= 0.05
    extra = {s for s in metrics["slices"] if s.startswith("extra:")}
    assert extra == {"extra:gesnmr_fsnb2022", "extra:fsbc_machines_fsnb2022"}


def test_a_fresh_registry_starts_with_it_without_training(tmp_path: Path) -> None:
    settings = Settings.from_env(data_dir=tmp_path)
    started = time.perf_counter()
    version = ensure_model(settings)
    assert time.perf_counter() - started < 15  # no training (that takes about a minute)
    shipped = default_model.shipped()
    assert shipped is not None and version == shipped.record["version"]
    registry = ModelRegistry(settings.models_dir)
    record = registry.get("champion")
    assert record.artifact_sha256 == shipped.record["sha256"]
    assert registry.load_baseline() is not None
    shown = show_model(registry, "champion", as_json=False)
    assert "ECE" in shown and "temperature" in shown and "extra:gesnmr_fsnb2022" in shown
    assert ensure_model(settings) == version  # the second call finds it


def test_a_stale_or_tampered_copy_is_not_installed(tmp_path: Path) -> None:
    copy = tmp_path / "default"
    shutil.copytree(default_model.DEFAULT_DIR, copy)
    record = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**record, "featurizer_version": "0" * 12}))
    assert default_model.install(ModelRegistry(tmp_path / "a"), copy) is None
    (copy / "model.json").write_text(json.dumps(record))
    (copy / "model.npz").write_bytes((copy / "model.npz").read_bytes() + b"\0")
    with pytest.raises(ChecksumError):
        default_model.install(ModelRegistry(tmp_path / "b"), copy)


def test_a_champion_of_an_older_featurizer_is_replaced_by_it(tmp_path: Path) -> None:
    from models.classifier import Classifier

    settings = Settings.from_env(data_dir=tmp_path)
    shipped = default_model.shipped()
    assert shipped is not None
    current = shipped.classifier()
    stale = Classifier(current.model, current.featurizer, "mlp-old-1", featurizer_version="0" * 12)
    registry = ModelRegistry(settings.models_dir)
    registry.register(stale, {}, default_model.DEFAULT_DIR, data_sha256="x", data_rows={"total": 0})
    assert registry.get("champion").version == "mlp-old-1"
    assert ensure_model(settings) == shipped.record["version"]
    assert registry.get("champion").version == shipped.record["version"]
    assert {r.version for r in registry.list()} == {"mlp-old-1", shipped.record["version"]}
    assert registry.champion_history()[-2:] == ["mlp-old-1", shipped.record["version"]]

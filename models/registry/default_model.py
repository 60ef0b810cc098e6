"""The default champion shipped in the project (models/default/), so a fresh machine starts without training.

Files: ``model.npz`` (`models.registry.model_files`: loads without unpickling), ``model.json`` (its version,
sha256, featurizer version and parameters, training data identity, metrics and the command that made it) and
``baseline.json`` (its drift baseline). `python -m tools.build_default_model` rebuilds them from the bundled
dataset and ``../shared/data/train``; with ``--check`` it rebuilds into a scratch directory and compares
sha256s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.classifier import Classifier
from models.drift.baseline import BASELINE_METRIC
from models.features.featurizer import Featurizer
from models.registry import model_files
from models.registry.model_registry import ChecksumError, ModelRecord, ModelRegistry

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "default"
MODEL_FILE, RECORD_FILE, BASELINE_FILE = "model.npz", "model.json", "baseline.json"


@dataclass(frozen=True)
class ShippedModel:
    record: dict[str, Any]
    payload: bytes
    baseline: bytes | None

    @property
    def featurizer(self) -> Featurizer:
        params = dict(self.record["featurizer"])
        params["ngram_range"] = tuple(params["ngram_range"])
        return Featurizer(**params)

    @property
    def matches_code(self) -> bool:
        """Whether the running featurizer code makes the features the model was trained on."""
        return self.featurizer.version == self.record["featurizer_version"]

    def classifier(self) -> Classifier:
        return model_files.loads(self.payload)


def shipped(directory: Path = DEFAULT_DIR) -> ShippedModel | None:
    """The shipped model, sha256-checked (ChecksumError); None when the directory holds none."""
    if not (directory / RECORD_FILE).is_file():
        return None
    record = json.loads((directory / RECORD_FILE).read_text(encoding="utf-8"))
    payload = (directory / MODEL_FILE).read_bytes()
    if hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise ChecksumError(f"{directory / MODEL_FILE}: sha256 differs from {RECORD_FILE}")
    baseline_path = directory / BASELINE_FILE
    return ShippedModel(record, payload, baseline_path.read_bytes() if baseline_path.is_file() else None)


def install(registry: ModelRegistry, directory: Path = DEFAULT_DIR) -> ModelRecord | None:
    """Register the shipped model (champion of an empty registry); None when there is none or the
    featurizer code changed since it was built (then it would mean something else: train instead)."""
    model = shipped(directory)
    if model is None or not model.matches_code:
        return None
    metrics = dict(model.record["metrics"])
    if model.baseline is not None:
        metrics[BASELINE_METRIC] = model.baseline
    return registry.register(
        model.classifier(),
        metrics,
        directory,
        notes=f"shipped default model ({model.record['command']})",
        data_sha256=model.record["data_sha256"],
        data_rows=model.record["data_rows"],
    )

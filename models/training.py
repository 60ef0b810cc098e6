"""Train the product/service MLP on a labelled CSV (columns name,label[,…]) and report validation metrics."""

from __future__ import annotations

import hashlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from models.attribution import forward
from models.augmentation import augment_services, has_service_prefix, strip_service_prefix
from models.classifier import Classifier
from models.epoch_loop import EpochResult, FitHistory, fit_keeping_best
from models.featurizer import Featurizer
from models.metrics import classification_metrics, macro_f1, slice_metrics

HIDDEN_LAYER_SIZES = (512, 256, 128)


def load_labelled(csv_path: Path) -> pd.DataFrame:
    """Rows with a non-blank name and a label, as columns name,label (strings)."""
    frame = pd.read_csv(csv_path, usecols=["name", "label"], dtype=str, keep_default_na=False)
    frame["name"] = frame["name"].str.strip()
    frame["label"] = frame["label"].str.strip()
    return frame[(frame["name"] != "") & (frame["label"] != "")].reset_index(drop=True)


def build_model(seed: int) -> MLPClassifier:
    return MLPClassifier(
        hidden_layer_sizes=HIDDEN_LAYER_SIZES,
        activation="relu",
        solver="adam",
        batch_size=1024,
        learning_rate="adaptive",  # only used by the sgd solver; kept for the record of the configuration
        random_state=seed,
        shuffle=False,
    )


def train(
    csv_path: Path,
    *,
    seed: int = 42,
    max_epochs: int = 30,
    patience: int = 4,
    validation_fraction: float = 0.15,
    progress: bool = True,
    augment: bool = True,
) -> tuple[Classifier, dict[str, Any]]:
    """Train on a fixed stratified split; returns the classifier (best epoch's weights) and its metrics.

    With `augment`, training rows (never validation rows) get a prefix-stripped copy of each service name
    the rule in `models.augmentation` applies to.
    """
    started = time.perf_counter()
    frame = load_labelled(Path(csv_path))
    names = frame["name"].tolist()
    labels = np.asarray(frame["label"].tolist())
    train_idx, val_idx = train_test_split(
        np.arange(len(names)), test_size=validation_fraction, stratify=labels, random_state=seed
    )
    train_names = [names[i] for i in train_idx]
    train_labels = labels[train_idx].tolist()
    val_names = [names[i] for i in val_idx]
    val_labels = labels[val_idx]
    extra_names, extra_labels = augment_services(train_names, train_labels) if augment else ([], [])

    featurizer = Featurizer()
    train_features = featurizer.transform([{"name": n} for n in train_names + extra_names])
    train_targets = np.asarray(train_labels + extra_labels)
    val_features = featurizer.transform([{"name": n} for n in val_names])
    class_labels = sorted(set(train_targets.tolist()))

    def evaluate(model: MLPClassifier) -> float:
        proba = forward(model, val_features)[1]
        return macro_f1(val_labels, model.classes_[proba.argmax(axis=1)], class_labels)

    model = build_model(seed)
    history = fit_keeping_best(
        model,
        train_features,
        train_targets,
        evaluate,
        rng=np.random.default_rng(seed),
        max_epochs=max_epochs,
        patience=patience,
        on_epoch=_progress_printer(max_epochs, patience) if progress else None,
    )
    untrained_columns = _zero_untrained_inputs(model, train_features.getnnz(axis=0))
    _drop_training_state(model)

    classifier = Classifier(model, featurizer, version=_model_version(model, featurizer))
    metrics = _validation_metrics(classifier, val_names, val_labels, class_labels)
    metrics.update(
        {
            "best_epoch": history.best_epoch,
            "epochs_run": len(history.epochs),
            "rows_per_s_per_epoch": float(np.mean([e.rows_per_s for e in history.epochs])),
            "train_size": len(train_names),
            "train_size_augmented": len(extra_names),
            "validation_size": len(val_names),
            "untrained_input_columns": untrained_columns,
            "seed": seed,
            "train_seconds": round(time.perf_counter() - started, 2),
            "history": [
                {"epoch": e.epoch, "loss": e.loss, "val_macro_f1": e.score, "seconds": round(e.seconds, 3)}
                for e in history.epochs
            ],
        }
    )
    if progress:
        print(
            f"trained {classifier.version} in {metrics['train_seconds']:.1f}s: "
            f"best epoch {history.best_epoch}, val accuracy {metrics['accuracy']:.4f}, "
            f"macro-F1 {metrics['macro_f1']:.4f}",
            file=sys.stderr,
            flush=True,
        )
    return classifier, metrics


def _zero_untrained_inputs(model: MLPClassifier, column_counts: np.ndarray) -> int:
    """Zero first-layer weights of input columns never non-zero in training.

    Their weights are still the random initialisation: left in place they would add noise to any item that
    hits them (notably the structured-field block, absent from name-only training data).
    """
    unseen = np.flatnonzero(column_counts == 0)
    model.coefs_[0][unseen] = 0.0
    return len(unseen)


def _drop_training_state(model: MLPClassifier) -> None:
    """Drop state only needed to resume training, each as large as the weights.

    That is the Adam moments and sklearn's copy of the weights at the best training loss.
    """
    for attribute in ("_optimizer", "_best_coefs", "_best_intercepts"):
        if hasattr(model, attribute):
            delattr(model, attribute)


def _model_version(model: MLPClassifier, featurizer: Featurizer) -> str:
    digest = hashlib.sha256(featurizer.version.encode())
    for array in model.coefs_ + model.intercepts_:
        digest.update(np.ascontiguousarray(array).tobytes())
    return f"mlp-{datetime.now(UTC):%Y%m%d%H%M%S}-{digest.hexdigest()[:8]}"


def _validation_metrics(
    classifier: Classifier, val_names: list[str], val_labels: np.ndarray, class_labels: list[str]
) -> dict[str, Any]:
    labels = np.asarray(classifier.labels)

    def score(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        proba = classifier.predict_proba(classifier.featurizer.transform([{"name": n} for n in names]))
        return labels[proba.argmax(axis=1)], proba.max(axis=1)

    predicted, confidence = score(val_names)
    metrics = classification_metrics(val_labels, predicted, confidence, class_labels)

    slices: dict[str, Any] = {}
    services = [n for n, label in zip(val_names, val_labels, strict=True) if label == "service"]
    unprefixed = [n for n in services if not has_service_prefix(n)]
    if unprefixed:
        slices["services_without_prefix"] = slice_metrics(["service"] * len(unprefixed), *score(unprefixed))
    stripped = [s for n in services if (s := strip_service_prefix(n)) is not None]
    if stripped:
        slices["services_prefix_stripped"] = slice_metrics(["service"] * len(stripped), *score(stripped))
    metrics["slices"] = slices
    return metrics


def _progress_printer(max_epochs: int, patience: int) -> Any:
    def report(result: EpochResult, history: FitHistory) -> None:
        mean_seconds = float(np.mean([e.seconds for e in history.epochs]))
        stale = result.epoch - history.best_epoch
        soonest = max(0, min(patience - stale, max_epochs - result.epoch))
        latest = max_epochs - result.epoch
        print(
            f"epoch {result.epoch:>2}/{max_epochs}  loss {result.loss:.4f}  val macro-F1 {result.score:.4f}"
            f"{' *' if result.improved else '  '} (best {history.best_score:.4f} @{history.best_epoch})  "
            f"{result.rows_per_s:,.0f} rows/s  ETA {soonest * mean_seconds:.0f}-{latest * mean_seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    return report

"""Train the product/service MLP from a dataset directory (streamed from the feature store) or a labelled CSV.

`train_dataset` materialises the dataset's features once (`models.training.feature_store`), keeps the
validation split in memory (fixed), and streams the training split through `partial_fit` chunk by chunk, in
minibatches of 1024, in a seeded order that changes every epoch (`models.training.epoch_loop`); the weights of
the best validation epoch are kept. Memory does not grow with the number of training rows. `train` treats a
name,label CSV as a one-shard dataset with a seeded stratified validation split (plus prefix-stripped copies
of the training services) and trains on it the same way.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from models.attribution import forward
from models.classifier import Classifier
from models.datasets import augmentation, builder, catalogue_style, inflection, transforms
from models.datasets.augmentation import augment_services, has_service_prefix, strip_service_prefix
from models.datasets.builder import (
    DEFAULT_SEED,
    DEFAULT_SOURCE,
    MANIFEST,
    TRAIN,
    VALIDATION,
    build_dataset,
    file_sha256,
)
from models.drift.baseline import BASELINE_METRIC, Baseline, build_baseline, vocabulary_of
from models.features import text_normalization
from models.features.featurizer import Featurizer
from models.registry.atomic_files import atomic_write_text
from models.training.calibration import fit_temperature
from models.training.epoch_loop import Chunk, EpochResult, FitHistory, fit_chunks_keeping_best
from models.training.feature_store import (
    ITEM_FIELDS,
    FeatureChunk,
    FeatureStore,
    dataset_column,
    dataset_ref,
    locked,
    materialise,
)
from models.training.importance import permutation_importance
from models.training.metrics import (
    classification_metrics,
    expected_calibration_error,
    macro_f1,
    slice_metrics,
)
from models.training.progress import ProgressBar, format_duration

HIDDEN_LAYER_SIZES = (512, 256, 128)
DEFAULT_MAX_EPOCHS = 30
DEFAULT_PATIENCE = 4
# BLAS threads while training: on a small shared machine a second thread mostly waits for a busy core
# (measured 26k rows/s with one thread, 11-23k with two on 2 cores).
DEFAULT_BLAS_THREADS = 1
CSV_SLICE = "csv"
CSV_AUGMENTED_SLICE = "csv_prefix_stripped"
SERVICE = "service"
# Modules whose code decides the bundled dataset's rows (a change rebuilds it).
_DATASET_CODE = (builder, transforms, inflection, catalogue_style, augmentation, text_normalization)
_DATASET_SCHEMA = pa.schema([(c, pa.string()) for c in ("name", "label", "slice", "split")])


def load_labelled(csv_path: Path) -> pd.DataFrame:
    """Rows with a non-blank name and a label, as columns name,label (strings)."""
    frame = pd.read_csv(csv_path, usecols=["name", "label"], dtype=str, keep_default_na=False)
    frame["name"] = frame["name"].str.strip()
    frame["label"] = frame["label"].str.strip()
    return frame[(frame["name"] != "") & (frame["label"] != "")].reset_index(drop=True)


# MLP hyper-parameters a caller may set (`nomenclature tune`); the shape, activation and solver stay.
TUNABLE_MLP_PARAMS = ("alpha", "learning_rate_init", "batch_size")


def build_model(seed: int, mlp_params: Mapping[str, Any] | None = None) -> MLPClassifier:
    """The 512-256-128 MLP; `mlp_params` may set `TUNABLE_MLP_PARAMS` (default: sklearn's alpha and
    learning rate, batches of 1024)."""
    params: dict[str, Any] = {"batch_size": 1024, **(mlp_params or {})}
    unknown = sorted(set(params) - set(TUNABLE_MLP_PARAMS))
    if unknown:
        raise ValueError(f"MLP parameters {unknown} cannot be set; tunable: {', '.join(TUNABLE_MLP_PARAMS)}")
    return MLPClassifier(
        hidden_layer_sizes=HIDDEN_LAYER_SIZES,
        activation="relu",
        solver="adam",
        learning_rate="adaptive",  # only used by the sgd solver; kept for the record of the configuration
        random_state=seed,
        shuffle=False,
        **params,
    )


# ---- datasets -----------------------------------------------------------------------------------


def bundled_dataset(
    datasets_root: Path, seed: int = DEFAULT_SEED, source_path: Path = DEFAULT_SOURCE
) -> Path:
    """The dataset built from the bundled ОКПД2 file with `seed` under `datasets_root`, built if absent.

    A pointer file remembers which directory holds it for the current source file and dataset code, so a
    later call costs a few hashes instead of a rebuild.
    """
    key = _bundled_key(source_path, seed)
    pointer = Path(datasets_root) / f"bundled-seed{seed}.json"
    with locked(pointer):
        if pointer.is_file():
            known = json.loads(pointer.read_text(encoding="utf-8"))
            if known.get("key") == key and (Path(known["path"]) / MANIFEST).is_file():
                return Path(known["path"])
        manifest = build_dataset(datasets_root=Path(datasets_root), seed=seed, source_path=source_path)
        path = Path(manifest["path"]).resolve()
        atomic_write_text(
            pointer, json.dumps({"key": key, "path": str(path), "version": manifest["version"]})
        )
    return path


def _bundled_key(source_path: Path, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}\x1f{file_sha256(source_path)}".encode())
    for module in _DATASET_CODE:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def default_validation_dir(dataset_dir: Path, datasets_root: Path) -> Path | None:
    """For a scale set (training rows only): the bundled dataset it was sampled from, whose validation
    split it never saw. None for a dataset with its own validation split."""
    manifest = json.loads((Path(dataset_dir) / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("kind") != "scale":
        return None
    return bundled_dataset(datasets_root, seed=int(manifest.get("seed", DEFAULT_SEED)))


def csv_dataset(
    csv_path: Path,
    out_dir: Path,
    *,
    seed: int = DEFAULT_SEED,
    validation_fraction: float = 0.15,
    augment: bool = True,
) -> Path:
    """A name,label CSV as a one-shard dataset directory with a seeded stratified validation split.

    With `augment`, training rows (never validation rows) get a prefix-stripped copy of each service name
    the rule in `models.datasets.augmentation` applies to (slice `csv_prefix_stripped`).
    """
    frame = load_labelled(Path(csv_path))
    names, labels = frame["name"].tolist(), frame["label"].tolist()
    train_idx, val_idx = train_test_split(
        np.arange(len(names)), test_size=validation_fraction, stratify=labels, random_state=seed
    )
    rows = [(names[i], labels[i], CSV_SLICE, TRAIN) for i in train_idx]
    if augment:
        extra, extra_labels = augment_services([r[0] for r in rows], [r[1] for r in rows])
        rows += [(n, label, CSV_AUGMENTED_SLICE, TRAIN) for n, label in zip(extra, extra_labels, strict=True)]
    rows += [(names[i], labels[i], CSV_SLICE, VALIDATION) for i in val_idx]
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(list(map(list, zip(*rows, strict=True))), schema=_DATASET_SCHEMA),
        out_dir / "part-00000.parquet",
    )
    content = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
    manifest = {
        "kind": "csv",
        "version": f"csv-{content[:12]}",
        "content_sha256": content,
        "source": {"file": Path(csv_path).name, "sha256": file_sha256(Path(csv_path))},
        "seed": seed,
        "validation_fraction": validation_fraction,
        "augment": augment,
        "rows": len(rows),
        "shards": [{"file": "part-00000.parquet", "rows": len(rows)}],
    }
    (out_dir / MANIFEST).write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return out_dir


# ---- training -----------------------------------------------------------------------------------


def train(
    csv_path: Path,
    *,
    seed: int = 42,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    patience: int = DEFAULT_PATIENCE,
    validation_fraction: float = 0.15,
    progress: bool = True,
    augment: bool = True,
) -> tuple[Classifier, dict[str, Any]]:
    """Train on a labelled CSV (see `csv_dataset`); returns the classifier (best epoch) and its metrics."""
    with tempfile.TemporaryDirectory(prefix="nomenclature-train-") as scratch:
        dataset_dir = csv_dataset(
            Path(csv_path),
            Path(scratch) / "dataset",
            seed=seed,
            validation_fraction=validation_fraction,
            augment=augment,
        )
        classifier, metrics = train_dataset(
            dataset_dir,
            seed=seed,
            max_epochs=max_epochs,
            patience=patience,
            feature_root=Path(scratch) / "features",
            progress=progress,
        )
    slices = metrics["dataset"]["splits"][TRAIN]["slices"]
    metrics["train_size_augmented"] = slices.get(CSV_AUGMENTED_SLICE, 0)
    metrics["train_size"] -= metrics["train_size_augmented"]
    return classifier, metrics


IMPORTANCE_ROWS = 4000  # validation rows the global importance is measured on
VOCABULARY_ROWS = 1_000_000  # training names whose words make the drift baseline's vocabulary


def train_dataset(
    dataset_dir: Path,
    *,
    seed: int = 42,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    patience: int = DEFAULT_PATIENCE,
    feature_root: Path | None = None,
    progress: bool = True,
    validation_dir: Path | None = None,
    blas_threads: int | None = DEFAULT_BLAS_THREADS,
    featurizer: Featurizer | None = None,
    mlp_params: Mapping[str, Any] | None = None,
) -> tuple[Classifier, dict[str, Any]]:
    """Train on a dataset directory's `train` split, validating on its `validation` split (or, for a set
    without one such as a scale set, on `validation_dir`'s). Features are read from (and on first use
    written to) the feature store under `feature_root` (a temporary directory by default). `blas_threads`
    caps BLAS/OpenMP threads during the epochs (None: the library default). `featurizer`: the default one
    unless given (e.g. for an ablation). `mlp_params`: see `build_model` (e.g. from `nomenclature tune`)."""
    if feature_root is None:
        with tempfile.TemporaryDirectory(prefix="nomenclature-features-") as scratch:
            return train_dataset(
                dataset_dir,
                seed=seed,
                max_epochs=max_epochs,
                patience=patience,
                feature_root=Path(scratch),
                progress=progress,
                validation_dir=validation_dir,
                blas_threads=blas_threads,
                featurizer=featurizer,
                mlp_params=mlp_params,
            )
    started = time.perf_counter()
    featurizer = featurizer or Featurizer()
    store, val_store, val_dir = _stores(
        Path(dataset_dir), validation_dir, Path(feature_root), featurizer, progress
    )
    featurize_seconds = time.perf_counter() - started
    validation = val_store.read(VALIDATION)
    val_names = dataset_column(val_dir, "name", validation.row_ids)
    classifier, history, untrained_columns = fit_classifier(
        store,
        validation,
        featurizer,
        seed=seed,
        max_epochs=max_epochs,
        patience=patience,
        progress=progress,
        blas_threads=blas_threads,
        mlp_params=mlp_params,
    )
    metrics = validation_metrics(classifier, validation, val_names)
    metrics["calibration"] = calibration_report(classifier.model, classifier, validation)
    metrics.update(_training_report(store, val_store, history, featurize_seconds, started))
    metrics.update({"untrained_input_columns": untrained_columns, "seed": seed, "blas_threads": blas_threads})
    metrics["global_importance"] = global_importance(classifier, val_dir, validation, seed)
    metrics[BASELINE_METRIC] = training_baseline(classifier, Path(dataset_dir), val_dir, validation).to_json()
    if progress:
        _print_summary(classifier, metrics)
    return classifier, metrics


def fit_classifier(
    store: FeatureStore,
    validation: FeatureChunk,
    featurizer: Featurizer,
    *,
    seed: int,
    max_epochs: int,
    patience: int,
    progress: bool,
    blas_threads: int | None,
    mlp_params: Mapping[str, Any] | None = None,
) -> tuple[Classifier, FitHistory, int]:
    """The epochs over `store`'s train split (best `validation` epoch kept), untrained input columns
    zeroed, training state dropped and the temperature fitted on `validation`: (the classifier, the epoch
    history, how many input columns were zeroed)."""
    model, history = _fit(store, validation, seed, max_epochs, patience, progress, blas_threads, mlp_params)
    untrained_columns = _zero_untrained_inputs(model, store.column_nnz(TRAIN))
    drop_training_state(model)
    temperature = fit_temperature(model, validation.features, validation.labels.tolist())
    classifier = Classifier(
        model, featurizer, version=model_version(model, featurizer, temperature), temperature=temperature
    )
    return classifier, history, untrained_columns


def global_importance(
    classifier: Classifier, val_dir: Path, validation: FeatureChunk, seed: int
) -> dict[str, dict[str, Any]]:
    """Permutation importance of feature groups on (a seeded sample of) the validation rows."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.permutation(len(validation))[:IMPORTANCE_ROWS])
    items = dataset_items(val_dir, validation.row_ids[take])
    return permutation_importance(classifier, items, validation.labels[take].tolist(), seed=seed)


def dataset_items(dataset_dir: Path, row_ids: np.ndarray) -> list[dict[str, Any]]:
    """Rows of a dataset directory as stream-like items (the item fields it has)."""
    present = set(pq.ParquetFile(dataset_dir / dataset_ref(dataset_dir).shards[0]).schema_arrow.names)
    fields = [field for field in (*ITEM_FIELDS, "country", "source") if field in present]
    columns = {field: dataset_column(dataset_dir, field, row_ids) for field in fields}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def training_baseline(
    classifier: Classifier,
    train_dir: Path,
    val_dir: Path,
    validation: FeatureChunk,
    *,
    extra_names: Iterable[str] = (),
) -> Baseline:
    """The drift baseline (`models.drift.baseline`): the validation rows — unseen in training, as live
    items are — with the words of (up to VOCABULARY_ROWS of) the training split, and of `extra_names`
    (other rows trained on), as the vocabulary."""
    items = dataset_items(val_dir, validation.row_ids)
    source = f"validation split of {dataset_ref(val_dir).version}"
    vocabulary = vocabulary_of(itertools.chain(_training_names(train_dir), extra_names))
    return build_baseline(classifier, items, vocabulary, source=source)


def _training_names(dataset_dir: Path) -> Iterator[str]:
    ref = dataset_ref(dataset_dir)
    taken = 0
    for shard in ref.shards:
        parquet = pq.ParquetFile(ref.path / shard)
        columns = ["name", "split"] if "split" in parquet.schema_arrow.names else ["name"]
        for batch in parquet.iter_batches(columns=columns):
            names = batch.column(0).to_pylist()
            splits = batch.column(1).to_pylist() if len(columns) == 2 else [TRAIN] * len(names)
            for name, split in zip(names, splits, strict=True):
                if split == TRAIN:
                    yield name
                    taken += 1
                    if taken >= VOCABULARY_ROWS:
                        return


def _stores(
    dataset_dir: Path, validation_dir: Path | None, feature_root: Path, featurizer: Featurizer, progress: bool
) -> tuple[FeatureStore, FeatureStore, Path]:
    """(training store, validation store, the validation rows' dataset dir), materialised if needed."""
    store = materialise(dataset_dir, feature_root, featurizer, progress=progress)
    if store.rows(VALIDATION):
        return store, store, dataset_dir
    if validation_dir is None:
        raise ValueError(f"{dataset_dir} has no validation rows: pass validation_dir")
    val_store = materialise(Path(validation_dir), feature_root, featurizer, progress=progress)
    if not val_store.rows(VALIDATION):
        raise ValueError(f"{validation_dir} has no validation rows either")
    return store, val_store, Path(validation_dir)


def _fit(
    store: FeatureStore,
    validation: FeatureChunk,
    seed: int,
    max_epochs: int,
    patience: int,
    progress: bool,
    blas_threads: int | None,
    mlp_params: Mapping[str, Any] | None = None,
) -> tuple[MLPClassifier, FitHistory]:
    classes = np.asarray(store.labels(TRAIN))
    class_labels = classes.tolist()
    rng = np.random.default_rng(seed)
    reporter = _EpochReporter(store.rows(TRAIN), max_epochs, patience, enabled=progress)

    def epoch_chunks(epoch: int) -> Iterator[Chunk]:
        reporter.start(epoch)
        for chunk in store.iter_chunks(TRAIN, rng=rng, columns=("label", "indices", "values")):
            yield chunk.features, chunk.labels
            del chunk  # before the next chunk is read

    def evaluate(model: MLPClassifier) -> float:
        proba = forward(model, validation.features)[1]
        return macro_f1(validation.labels, model.classes_[proba.argmax(axis=1)], class_labels)

    model = build_model(seed, mlp_params)
    with threadpool_limits(limits=blas_threads):
        history = fit_chunks_keeping_best(
            model,
            epoch_chunks,
            classes,
            evaluate,
            max_epochs=max_epochs,
            patience=patience,
            on_epoch=reporter.end,
            on_chunk=reporter.update,
        )
    return model, history


class _EpochReporter:
    """A progress bar per epoch (rows, rows/s, ETA) and a summary line after it, on stderr."""

    def __init__(self, rows: int, max_epochs: int, patience: int, *, enabled: bool) -> None:
        self.rows, self.max_epochs, self.patience, self.enabled = rows, max_epochs, patience, enabled
        self.bar: ProgressBar | None = None

    def start(self, epoch: int) -> None:
        self.bar = ProgressBar(self.rows, f"epoch {epoch}/{self.max_epochs}", enabled=self.enabled)

    def update(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)

    def end(self, result: EpochResult, history: FitHistory) -> None:
        if self.bar is not None:
            self.bar.close()
        if not self.enabled:
            return
        mean_seconds = float(np.mean([e.seconds for e in history.epochs]))
        stale = result.epoch - history.best_epoch
        soonest = max(0, min(self.patience - stale, self.max_epochs - result.epoch))
        latest = self.max_epochs - result.epoch
        print(
            f"epoch {result.epoch:>2}/{self.max_epochs}  loss {result.loss:.4f}  "
            f"val macro-F1 {result.score:.4f}"
            f"{' *' if result.improved else '  '} (best {history.best_score:.4f} @{history.best_epoch})  "
            f"{result.rows_per_s:,.0f} rows/s  ETA {format_duration(soonest * mean_seconds)}"
            f"-{format_duration(latest * mean_seconds)}",
            file=sys.stderr,
            flush=True,
        )


def _zero_untrained_inputs(model: MLPClassifier, column_counts: np.ndarray) -> int:
    """Zero first-layer weights of input columns never non-zero in training.

    Their weights are still the random initialisation: left in place they would add noise to any item that
    hits them (notably the structured-field block, absent from name-only training data).
    """
    unseen = np.flatnonzero(column_counts == 0)
    model.coefs_[0][unseen] = 0.0
    return len(unseen)


def drop_training_state(model: MLPClassifier) -> None:
    """Drop state only needed to resume training, each as large as the weights.

    That is the Adam moments and sklearn's copy of the weights at the best training loss.
    """
    for attribute in ("_optimizer", "_best_coefs", "_best_intercepts"):
        if hasattr(model, attribute):
            delattr(model, attribute)


def weights_digest(model: MLPClassifier, featurizer: Featurizer, temperature: float = 1.0) -> str:
    """sha256 of the featurizer version, every weight and the calibration temperature: equal for equal
    models (seeded reruns)."""
    digest = hashlib.sha256(featurizer.version.encode())
    for array in model.coefs_ + model.intercepts_:
        digest.update(np.ascontiguousarray(array).tobytes())
    if temperature != 1.0:
        digest.update(f"T={temperature!r}".encode())
    return digest.hexdigest()


def model_version(model: MLPClassifier, featurizer: Featurizer, temperature: float = 1.0) -> str:
    return f"mlp-{datetime.now(UTC):%Y%m%d%H%M%S}-{weights_digest(model, featurizer, temperature)[:8]}"


def calibration_report(
    model: MLPClassifier, classifier: Classifier, validation: FeatureChunk
) -> dict[str, Any]:
    """The temperature and, on the validation rows it was fitted on, ECE before and after it."""
    labels = np.asarray(classifier.labels)
    raw = forward(model, validation.features)[1]
    calibrated = classifier.predict_proba(validation.features)
    correct = labels[raw.argmax(axis=1)] == validation.labels
    return {
        "temperature": classifier.temperature,
        "fitted_on": "validation split",
        "ece_before": expected_calibration_error(raw.max(axis=1), correct),
        "ece_after": expected_calibration_error(calibrated.max(axis=1), correct),
    }


# ---- reports ------------------------------------------------------------------------------------


def validation_metrics(classifier: Classifier, validation: FeatureChunk, names: list[str]) -> dict[str, Any]:
    """Overall metrics, per dataset slice, and two service slices: names without an Услуги/Работы prefix
    and prefix-stripped copies of the prefixed ones."""
    class_labels = list(classifier.labels)
    predicted, confidence = _score(classifier, validation.features)
    metrics = classification_metrics(validation.labels, predicted, confidence, class_labels)
    slices: dict[str, Any] = {}
    for name in sorted(set(validation.slices.tolist())):
        rows = np.flatnonzero(validation.slices == name)
        slices[name] = _slice_report(validation.labels[rows], predicted[rows], confidence[rows], class_labels)
    is_service = validation.labels == SERVICE
    unprefixed = np.flatnonzero(is_service & ~np.asarray([has_service_prefix(n) for n in names], dtype=bool))
    if len(unprefixed):
        slices["services_without_prefix"] = slice_metrics(
            validation.labels[unprefixed], predicted[unprefixed], confidence[unprefixed]
        )
    services = [n for n, service in zip(names, is_service, strict=True) if service]
    stripped = [s for n in services if (s := strip_service_prefix(n)) is not None]
    if stripped:
        features = classifier.featurizer.transform([{"name": n} for n in stripped])
        slices["services_prefix_stripped"] = slice_metrics(
            [SERVICE] * len(stripped), *_score(classifier, features)
        )
    metrics["slices"] = slices
    return metrics


def _score(classifier: Classifier, features: Any) -> tuple[np.ndarray, np.ndarray]:
    proba = classifier.predict_proba(features)
    return np.asarray(classifier.labels)[proba.argmax(axis=1)], proba.max(axis=1)


def _slice_report(
    y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray, class_labels: list[str]
) -> dict[str, Any]:
    report = slice_metrics(y_true, y_pred, confidence)
    present = sorted(set(y_true.tolist()))
    report["labels"] = {label: int((y_true == label).sum()) for label in present}
    if len(present) > 1:
        report["macro_f1"] = macro_f1(y_true, y_pred, class_labels)
    return report


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _training_report(
    store: FeatureStore,
    val_store: FeatureStore,
    history: FitHistory,
    featurize_seconds: float,
    started: float,
) -> dict[str, Any]:
    fit_seconds = sum(e.seconds for e in history.epochs)
    return {
        "best_epoch": history.best_epoch,
        "epochs_run": len(history.epochs),
        "rows_per_s_per_epoch": float(np.mean([e.rows_per_s for e in history.epochs])),
        "train_size": store.rows(TRAIN),
        "validation_size": val_store.rows(VALIDATION),
        "featurize_seconds": round(featurize_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "train_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "dataset": dataset_info(store, val_store),
        "history": [
            {
                "epoch": e.epoch,
                "loss": e.loss,
                "val_macro_f1": e.score,
                "seconds": round(e.seconds, 3),
                "rows_per_s": round(e.rows_per_s, 1),
            }
            for e in history.epochs
        ],
    }


def dataset_info(store: FeatureStore, val_store: FeatureStore) -> dict[str, Any]:
    """What the model was trained and validated on: dataset version/hash, rows per split, label and slice."""
    info = dict(store.manifest["dataset"])
    info["splits"] = dict(store.manifest["splits"])
    info["feature_store"] = str(store.path)
    info["featurizer_version"] = store.featurizer_version
    if val_store is not store:
        info["splits"][VALIDATION] = val_store.manifest["splits"][VALIDATION]
        info["validation_dataset"] = dict(val_store.manifest["dataset"])
    return info


def registry_data(metrics: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """(data sha256, row counts) for `ModelRegistry.register` of a model trained by `train_dataset`: the
    dataset's content hash (with the validation dataset's, when separate) and rows per split and label."""
    info = metrics["dataset"]
    sha = info["sha256"]
    if "validation_dataset" in info:
        sha = hashlib.sha256(f"{sha}\x1f{info['validation_dataset']['sha256']}".encode()).hexdigest()
    rows: dict[str, int] = {"total": 0}
    for split, split_info in info["splits"].items():
        rows["total"] += int(split_info["rows"])
        rows[f"{split}_rows"] = int(split_info["rows"])
        for label, count in split_info["labels"].items():
            rows[label] = rows.get(label, 0) + int(count)
    return sha, rows


def _print_summary(classifier: Classifier, metrics: dict[str, Any]) -> None:
    print(
        f"trained {classifier.version} in {metrics['train_seconds']:.1f}s "
        f"(features {metrics['featurize_seconds']:.1f}s, epochs {metrics['fit_seconds']:.1f}s, "
        f"{metrics['rows_per_s_per_epoch']:,.0f} rows/s/epoch, peak RSS {metrics['peak_rss_mb']:.0f} MB): "
        f"best epoch {metrics['best_epoch']}, val accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f}",
        file=sys.stderr,
        flush=True,
    )

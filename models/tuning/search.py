"""What `nomenclature tune` searches, how it measures a trial, and how the chosen trial becomes a challenger.

Free of Optuna (`tools.tune_commands` drives the study): the search space (`suggest`, `TrialConfig`), the
data a study uses (`prepare_data`), one trial (`run_trial`: train on a sample, macro-F1 on the selection
half of the reference validation split, scoring cost in CPU µs per item), the featurizer code fingerprint a
study is tied to, the default choice on the Pareto front (`choose_trial`) and the gate of a tuned
challenger (`holdout_gate`). docs/tuning.md explains the choices.

Data. The reference dataset (the bundled one unless `NOMENCLATURE_REFERENCE_DATASET` names another) has a
train and a validation split. Its validation split is cut in the same two halves as retraining cuts it
(`models.retraining.warm_start.validation_halves`, seed 42): the *selection* half chooses each trial's best
epoch and is the objective's data; the *holdout* half is never seen by a study and is what the gate of
`--register-best` scores the challenger and the champion on, as it does for a retrained challenger. Trials
train on a seeded sample of the training split, written once as a train-only dataset directory; the
selection half is a validation-only one. Both are ordinary dataset directories, so the feature store caches
their features per featurizer version.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

import models.features
from models.classifier import Classifier
from models.datasets.builder import MANIFEST, TRAIN, VALIDATION, read_dataset
from models.features.featurizer import Featurizer
from models.registry.atomic_files import atomic_write_text
from models.retraining.promotion import evaluate_gate
from models.retraining.warm_start import RetrainConfig, validation_halves
from models.training.feature_store import (
    FeatureChunk,
    dataset_ref,
    featurize,
    locked,
    materialise,
)
from models.training.metrics import macro_f1
from models.training.train import DEFAULT_BLAS_THREADS, dataset_items, fit_classifier, train_dataset

# ---- the search space ---------------------------------------------------------------------------------

FEATURES_LOG2 = (12, 16)  # hashed columns 2^12 … 2^16 (4,096 is the default featurizer's)
FIELD_FEATURES = 256  # the structured-field block: fixed, the reference data has names only
# Character n-grams of each word (and of the head word's lemma): the range of n, or none at all (an empty
# range: the featurizer loops over range(low, high + 1)).
CHAR_NGRAMS: dict[str, tuple[int, int]] = {
    "3-5": (3, 5),
    "3-4": (3, 4),
    "2-4": (2, 4),
    "4-6": (4, 6),
    "none": (1, 0),
}
BATCH_SIZES = (256, 512, 1024, 2048)
ALPHA = (1e-6, 1e-2)  # L2 penalty, log-uniform (sklearn's default 1e-4)
LEARNING_RATE = (1e-4, 1e-2)  # Adam's initial step, log-uniform (sklearn's default 1e-3)
DEFAULT_EPOCHS = (2, 10)  # range of the most epochs a trial trains (the best one is kept)
PATIENCE = 3  # epochs without improvement before a trial stops
# The halves of the validation split: the seed retraining cycles use (RetrainConfig's default).
HALVES_SEED: int = next(f.default for f in fields(RetrainConfig) if f.name == "seed")  # type: ignore[assignment]


class Suggester(Protocol):
    """What `suggest` needs of an Optuna trial."""

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space (the 512-256-128 shape is not part of it)."""

    features_log2: int
    morphology: bool
    embeddings: bool
    char_ngrams: str
    alpha: float
    learning_rate_init: float
    batch_size: int
    max_epochs: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrialConfig:
        """From a trial's parameters (as Optuna stores them)."""
        config = cls(
            features_log2=int(params["features_log2"]),
            morphology=bool(params["morphology"]),
            embeddings=bool(params["embeddings"]),
            char_ngrams=str(params["char_ngrams"]),
            alpha=float(params["alpha"]),
            learning_rate_init=float(params["learning_rate_init"]),
            batch_size=int(params["batch_size"]),
            max_epochs=int(params["max_epochs"]),
        )
        if config.char_ngrams not in CHAR_NGRAMS:
            raise ValueError(f"unknown char_ngrams {config.char_ngrams!r}; known: {', '.join(CHAR_NGRAMS)}")
        return config

    def params(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def n_features(self) -> int:
        return 2**self.features_log2

    def featurizer(self) -> Featurizer:
        return Featurizer(
            n_features=self.n_features,
            n_field_features=FIELD_FEATURES,
            ngram_range=CHAR_NGRAMS[self.char_ngrams],
            morphology=self.morphology,
            embeddings=self.embeddings,
        )

    def mlp_params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "learning_rate_init": self.learning_rate_init,
            "batch_size": self.batch_size,
        }

    def describe(self) -> dict[str, Any]:
        """The featurizer's and the MLP's arguments this point stands for (JSON-ready)."""
        return {
            "featurizer": self.featurizer().params(),
            "mlp": {"hidden_layer_sizes": [512, 256, 128], **self.mlp_params()},
            "max_epochs": self.max_epochs,
            "patience": PATIENCE,
        }


def suggest(trial: Suggester, epochs: tuple[int, int] = DEFAULT_EPOCHS) -> TrialConfig:
    """A point of the search space, asked of an Optuna trial."""
    return TrialConfig(
        features_log2=trial.suggest_int("features_log2", *FEATURES_LOG2),
        morphology=trial.suggest_categorical("morphology", [True, False]),
        embeddings=trial.suggest_categorical("embeddings", [True, False]),
        char_ngrams=trial.suggest_categorical("char_ngrams", list(CHAR_NGRAMS)),
        alpha=trial.suggest_float("alpha", *ALPHA, log=True),
        learning_rate_init=trial.suggest_float("learning_rate_init", *LEARNING_RATE, log=True),
        batch_size=trial.suggest_categorical("batch_size", list(BATCH_SIZES)),
        max_epochs=trial.suggest_int("max_epochs", *epochs),
    )


def default_params(epochs: tuple[int, int] = DEFAULT_EPOCHS) -> dict[str, Any]:
    """Today's configuration (the default featurizer, sklearn's alpha and learning rate, batches of 1,024),
    with the most epochs the range allows: a study's first trial, so the front shows what it improves on."""
    return TrialConfig(
        features_log2=12,
        morphology=True,
        embeddings=True,
        char_ngrams="3-5",
        alpha=1e-4,
        learning_rate_init=1e-3,
        batch_size=1024,
        max_epochs=epochs[1],
    ).params()


def search_space(epochs: tuple[int, int] = DEFAULT_EPOCHS) -> dict[str, Any]:
    """The search space, for the study's record."""
    return {
        "features_log2": {"int": list(FEATURES_LOG2), "n_features": "2^features_log2"},
        "morphology": [True, False],
        "embeddings": [True, False],
        "char_ngrams": {name: list(span) for name, span in CHAR_NGRAMS.items()},
        "alpha": {"log_uniform": list(ALPHA)},
        "learning_rate_init": {"log_uniform": list(LEARNING_RATE)},
        "batch_size": list(BATCH_SIZES),
        "max_epochs": {"int": list(epochs)},
        "fixed": {
            "hidden_layer_sizes": [512, 256, 128],
            "n_field_features": FIELD_FEATURES,
            "patience": PATIENCE,
        },
    }


def featurizer_fingerprint() -> str:
    """sha256 of the featurizer's code and data (models/features/*.py and data/*) and of the versions of the
    language packages it uses: a study's trials compare only under one fingerprint."""
    root = Path(models.features.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.glob("*.py")) + sorted(p for p in (root / "data").glob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for package in ("pymorphy3", "pymorphy3-dicts-ru", "navec"):
        digest.update(f"{package}={importlib.metadata.version(package)}\0".encode())
    return digest.hexdigest()


# ---- data ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuningData:
    """The dataset directories of a study (see the module docstring)."""

    reference: Path  # train + validation splits
    train: Path  # train-only: the seeded sample of the training split (all of it without a sample)
    selection: Path  # validation-only: the selection half of the validation split
    reference_version: str
    reference_sha256: str
    train_rows: int
    selection_rows: int
    holdout_rows: int
    seed: int

    def identity(self) -> dict[str, Any]:
        """What the study records of its data (and checks again when it resumes)."""
        return {
            "reference": {"version": self.reference_version, "sha256": self.reference_sha256},
            "train_rows": self.train_rows,
            "selection_rows": self.selection_rows,
            "holdout_rows": self.holdout_rows,
            "seed": self.seed,
            "objective_on": f"selection half of the validation split of {self.reference_version}",
        }


def validation_split(reference: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The reference dataset's validation rows (with their row ids, positions in the dataset) and, per row,
    whether it belongs to the holdout half (as retraining cuts it)."""
    frame = read_dataset(reference).to_pandas()
    frame.insert(0, "row_id", np.arange(len(frame), dtype=np.int64))
    rows = frame[frame["split"] == VALIDATION].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{reference} has no validation split: a study needs one (and a train split)")
    ids = rows["row_id"].to_numpy()
    empty = np.full(len(ids), "", dtype=object)
    chunk = FeatureChunk(sp.csr_matrix((len(ids), 1), dtype=np.float32), empty, empty, ids)
    return rows, validation_halves(reference, chunk, HALVES_SEED)


def prepare_data(reference: Path, root: Path, *, train_rows: int | None, seed: int) -> TuningData:
    """The train-only dataset of `train_rows` rows sampled with `seed` from the reference training split
    (None: all of them) and the validation-only dataset of the selection half, under `root`; each written
    once and reused."""
    ref = dataset_ref(reference)
    frame = read_dataset(reference).to_pandas()
    train = frame[frame["split"] == TRAIN].reset_index(drop=True)
    if train.empty:
        raise ValueError(f"{reference} has no train split")
    if train_rows is not None and train_rows < len(train):
        if train_rows < 2:
            raise ValueError("--sample must be at least 2 rows")
        take = np.sort(np.random.default_rng(seed).permutation(len(train))[:train_rows])
        train = train.iloc[take].reset_index(drop=True)
        train_key = f"sample={train_rows}|seed={seed}"
    else:
        train_key = "all"
    if train["label"].nunique() < 2:
        raise ValueError(f"the sample of {len(train)} training rows has one label only: take more rows")
    validation, holdout = validation_split(reference)
    selection = validation[~holdout].drop(columns="row_id").reset_index(drop=True)
    train_dir = _derived_dataset(root, "tune-train", ref.sha256, train_key, train, TRAIN)
    selection_dir = _derived_dataset(
        root, "tune-selection", ref.sha256, f"halves-seed={HALVES_SEED}", selection, VALIDATION
    )
    return TuningData(
        reference=Path(reference),
        train=train_dir,
        selection=selection_dir,
        reference_version=ref.version,
        reference_sha256=ref.sha256,
        train_rows=len(train),
        selection_rows=len(selection),
        holdout_rows=int(holdout.sum()),
        seed=seed,
    )


def _derived_dataset(
    root: Path, kind: str, source_sha256: str, key: str, frame: pd.DataFrame, split: str
) -> Path:
    """A one-shard dataset directory of `frame`'s rows (all in `split`), named by what decides them."""
    content = hashlib.sha256(f"{kind}\x1f{source_sha256}\x1f{key}".encode()).hexdigest()
    version = f"{kind}-{content[:12]}"
    path = Path(root) / version
    with locked(path):
        if (path / MANIFEST).is_file():
            return path
        partial = path.with_name(f".{version}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        frame = frame.assign(split=split)
        columns = [c for c in frame.columns if c != "row_id"]
        pq.write_table(
            pa.Table.from_pandas(frame[columns], preserve_index=False), partial / "part-00000.parquet"
        )
        labels = frame["label"].value_counts().sort_index()
        manifest = {
            "kind": kind,
            "version": version,
            "content_sha256": content,
            "source_sha256": source_sha256,
            "selection": key,
            "rows": len(frame),
            "splits": {split: {"rows": len(frame), **{str(k): int(v) for k, v in labels.items()}}},
            "shards": [{"file": "part-00000.parquet", "rows": len(frame)}],
        }
        atomic_write_text(partial / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
        os.replace(partial, path)
    return path


def cost_items(data: TuningData, count: int, seed: int) -> list[dict[str, Any]]:
    """A fixed seeded sample of `count` selection rows as stream items (what the cost is measured on)."""
    rows = dataset_ref(data.selection).rows
    take = np.sort(np.random.default_rng(seed).permutation(rows)[: max(1, count)])
    return dataset_items(data.selection, take)


# ---- one trial -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostSettings:
    """How the scoring cost is measured: micro-batches of `batch_size` items, scored with `top_k` classes
    and `explain` explanation parts as the stream does, best of `repeats` timed passes."""

    batch_size: int = 1000
    top_k: int = 2
    explain: int = 3
    repeats: int = 3


def scoring_cost(classifier: Classifier, items: Sequence[Mapping[str, Any]], cost: CostSettings) -> float:
    """CPU µs per item to featurize, score and explain `items` in micro-batches, as a worker's scoring
    process does (one BLAS thread): best of `cost.repeats` passes after one warm-up pass.

    The clock is this process's CPU time: scoring is single-threaded and CPU-bound, so it is what an item
    costs a scoring process, and unlike the wall clock it does not grow when other processes share the
    cores (measured here with both cores busy: wall time +30-45 %, CPU time within 5 %). The garbage
    collector runs before each pass, not inside it (as `timeit` does): its pauses depend on what else the
    process holds, not on the model, and varied one model's cost by a third.

    The warm-up leaves the featurizer's word caches as a running worker has them (the words of the
    traffic are known); before each timed pass the per-item caches are emptied (the featurized items'
    segments, the explanations), since an item the stream scores is new.
    """
    featurizer = classifier.featurizer
    batches = [items[i : i + cost.batch_size] for i in range(0, len(items), cost.batch_size)]

    def one_pass(scorer: Classifier) -> float:
        gc.collect()  # as timeit does: no collection of the trial's garbage inside the clock
        gc.disable()
        try:
            started = time.process_time()
            for batch in batches:
                composed = featurizer.composed(batch)
                featurizer.normalize_counts(composed.counts)  # the stream's feature digests need them
                scorer.predict(batch, cost.top_k, cost.explain, composed)
            return time.process_time() - started
        finally:
            gc.enable()

    best = math.inf
    with threadpool_limits(limits=1):
        for repetition in range(cost.repeats + 1):
            featurizer.forget_items()
            scorer = Classifier(
                classifier.model, featurizer, classifier.version, temperature=classifier.temperature
            )
            _ = scorer.net  # built before the clock starts, as a loaded model has it
            seconds = one_pass(scorer)
            if repetition:  # the first pass warms the word caches
                best = min(best, seconds)
    return best / len(items) * 1e6


@dataclass(frozen=True)
class TrialResult:
    macro_f1: float  # on the selection half, of the calibrated classifier (what would be served)
    us_per_item: float
    best_epoch: int
    epochs_run: int
    featurize_seconds: float
    fit_seconds: float
    cost_seconds: float
    featurizer_version: str
    width: int

    def attrs(self) -> dict[str, Any]:
        """Everything but the two objectives (a trial's user attributes)."""
        return {k: v for k, v in asdict(self).items() if k not in ("macro_f1", "us_per_item")}


def run_trial(
    config: TrialConfig,
    data: TuningData,
    feature_root: Path,
    items: Sequence[Mapping[str, Any]],
    *,
    seed: int,
    cost: CostSettings,
) -> TrialResult:
    """Train `config` on the study's training sample (epochs chosen on the selection half) and measure it:
    macro-F1 on the selection half and the scoring cost on `items`."""
    started = time.perf_counter()
    featurizer = config.featurizer()
    store = materialise(data.train, feature_root, featurizer)
    validation = materialise(data.selection, feature_root, featurizer).read(VALIDATION)
    featurized = time.perf_counter()
    classifier, history, _ = fit_classifier(
        store,
        validation,
        featurizer,
        seed=seed,
        max_epochs=config.max_epochs,
        patience=PATIENCE,
        progress=False,
        blas_threads=DEFAULT_BLAS_THREADS,
        mlp_params=config.mlp_params(),
    )
    trained = time.perf_counter()
    f1 = macro_f1(validation.labels, predicted_labels(classifier, validation.features), classifier.labels)
    us_per_item = scoring_cost(classifier, items, cost)
    return TrialResult(
        macro_f1=f1,
        us_per_item=us_per_item,
        best_epoch=history.best_epoch,
        epochs_run=len(history.epochs),
        featurize_seconds=round(featurized - started, 2),
        fit_seconds=round(trained - featurized, 2),
        cost_seconds=round(time.perf_counter() - trained, 2),
        featurizer_version=featurizer.version,
        width=featurizer.width,
    )


def predicted_labels(classifier: Classifier, features: sp.csr_matrix) -> np.ndarray:
    return np.asarray(classifier.labels)[classifier.predict_proba(features).argmax(axis=1)]


# ---- the front, and the chosen trial as a challenger ----------------------------------------------------


def choose_trial(front: Sequence[Mapping[str, Any]], tolerance_points: float) -> Mapping[str, Any]:
    """The default pick on the front: the fastest trial whose macro-F1 is within `tolerance_points`
    percentage points of the front's best (ties: the higher macro-F1, then the lower trial number)."""
    if not front:
        raise ValueError("the study's Pareto front is empty: run trials first")
    best = max(float(t["macro_f1"]) for t in front)
    close = [t for t in front if float(t["macro_f1"]) >= best - tolerance_points / 100.0]
    return min(close, key=lambda t: (float(t["us_per_item"]), -float(t["macro_f1"]), int(t["trial"])))


def train_tuned(
    config: TrialConfig, data: TuningData, feature_root: Path, *, seed: int, progress: bool
) -> tuple[Classifier, dict[str, Any]]:
    """`config` trained as `nomenclature train` trains (`train_dataset`: features from the store, best
    epoch kept, temperature, importance, drift baseline) on `data.train`, validated on the selection half."""
    classifier, metrics = train_dataset(
        data.train,
        seed=seed,
        max_epochs=config.max_epochs,
        patience=PATIENCE,
        feature_root=feature_root,
        progress=progress,
        validation_dir=data.selection,
        featurizer=config.featurizer(),
        mlp_params=config.mlp_params(),
    )
    metrics["validated_on"] = f"selection half of the validation split of {data.reference_version}"
    return classifier, metrics


CORRECTIONS_DO_NOT_APPLY = (
    "the corrections part of the gate does not apply: a tuned challenger is trained on the reference "
    "data alone, so there are no held-back corrections it could have learnt from"
)


def holdout_gate(
    champion: Classifier, challenger: Classifier, reference: Path, *, delta_points: float
) -> dict[str, Any]:
    """The retraining gate's reference part (`models.retraining.promotion.evaluate_gate`): macro-F1 of both
    models on the holdout half of the reference validation split, each through its own featurizer; the
    challenger is eligible if it loses at most `delta_points` points. The corrections part does not apply
    (`CORRECTIONS_DO_NOT_APPLY`) and is recorded as such."""
    validation, holdout = validation_split(reference)
    rows = validation[holdout].reset_index(drop=True)
    items = dataset_items(reference, rows["row_id"].to_numpy())
    labels = rows["label"].to_numpy(dtype=object)

    def f1(classifier: Classifier) -> float:
        features = featurize(classifier.featurizer, items)
        return macro_f1(labels, predicted_labels(classifier, features), classifier.labels)

    champion_f1, challenger_f1 = f1(champion), f1(challenger)
    result = evaluate_gate(
        reference_rows=len(rows),
        champion_reference_f1=champion_f1,
        challenger_reference_f1=challenger_f1,
        correction_rows=0,
        champion_correction_accuracy=0.0,
        challenger_correction_accuracy=0.0,
        delta_points=delta_points,
    )
    keeps = challenger_f1 >= champion_f1 - delta_points / 100.0
    reference_text = (
        f"macro-F1 on the reference holdout ({len(rows)} rows) {champion_f1:.4f} → {challenger_f1:.4f} "
        f"({result.reference['change_points']:+.2f} points): "
        + (
            f"within the allowed loss of {delta_points} points"
            if keeps
            else f"loses more than the allowed {delta_points} points"
        )
    )
    gate = result.as_dict()
    gate.update(
        eligible=keeps,
        reasons=[reference_text, CORRECTIONS_DO_NOT_APPLY],
        corrections={**gate["corrections"], "applies": False},
        champion=champion.version,
    )
    return gate

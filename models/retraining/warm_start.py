"""Retraining from user corrections: warm-start a challenger from the champion, gate it, register it.

`retrain` runs in a child process of the coordinator (ProcessPoolExecutor, "spawn"): its arguments and
its return value are plain data. It lowers its own CPU priority once (``os.nice(10)``) and trains with one
BLAS thread, as `nomenclature train` does, so that the stream workers on the same machine keep their cores.

One cycle:

1. The cycle's corrections are the snapshot's rows not yet in the reference set (`ReferenceSet`: same id,
   corrected_at and label); none -> `NoNewCorrectionsError` (before anything costly is loaded).
2. The champion is loaded from the registry (sha256-checked).
3. The corrections are split by item id (`held_back_mask`): a stable share `holdback` is held back for the
   gate, the rest is trained on. An id lands on the same side in every cycle, so a correction held back
   in one cycle is not trained on in the next while it is still new.
4. Training rows = the correction train rows, replicated (below), plus a class-balanced seeded sample of the
   reference pool: the reference dataset's train split plus the accepted corrections (minus the ids
   corrected again in this cycle: the newer label wins). The sample has
   ``max(reference_rows, ceil(s / (1 - s) * correction rows))`` rows (s = `reference_share`, correction
   rows counted after replication), so the reference is at least that share of the training rows; a pool
   smaller than that is replicated (whole copies plus a sample).
5. The champion's network is deep-copied and trained further (`partial_fit` through
   `models.training.epoch_loop.fit_keeping_best`: seeded shuffles, best epoch kept, patience). The saved
   champion has no Adam state (`models.training.train.drop_training_state`), so the first `partial_fit` starts
   a fresh Adam optimizer at the champion's learning rate.
6. Epoch selection and the gate use disjoint data. The reference dataset's validation split is cut in two
   halves by a seeded hash of each row's ОКПД2 group (of its name when there is no group column): stable
   for a dataset version, and the variants of one name stay in one half. Each epoch is scored on the
   `selection` half: the mean of its macro-F1 there and the accuracy on the correction train rows (each
   once). The frozen `holdout` half and the held-back corrections are used only by the gate
   (`models.retraining.promotion.evaluate_gate`) and the reported metrics.

Correction replication. Corrections are few (tens to thousands) against a reference sample of about
20,000 rows. Each correction train row is repeated

    k = clip(round(CORRECTION_SHARE / (1 - CORRECTION_SHARE) * reference_rows / correction rows), 1,
             MAX_REPLICATION)

times, so that the corrections make up about CORRECTION_SHARE (5 %) of the training rows, never fewer
than once each and never more than MAX_REPLICATION (10) copies of a row; the reference sample is sized
after replication, so it stays >= reference_share of the rows. Measured on the bundled dataset with a
champion trained on it (`tests/lifecycle_data.py` corrections, 20,000 reference rows):

- corrections that contradict nothing in the reference are learnt without replication. Removal services
  the champion calls products (10, 25 and 80 corrections, a fifth held back): k = 1 gives 100 % on the
  train rows and on the held-back ones after one or two epochs, and 97-100 % on the rest of the generated
  family; k = 5, 20 or 77 the same. 122 diverse ones (21 service verbs, 30 % held back): 100 % held back
  at k = 1. With the reference sample alone (no corrections) the held-back accuracy stays at 13-33 %.
  Adam's per-weight step sizes let the weights of a rare word move as fast as those of a frequent one.
- corrections that contradict reference rows (bundled product names relabelled as services) are not: at
  k = 1 the challenger gets 81 % of 58 train rows and 86 % of 235 right at its best epoch, at k = 2-3
  99-100 %. The user's newer label should win over the reference's, hence a few copies.
- more copies bought nothing: holdout macro-F1 stayed within 0.4 points across k = 1...77 (run-to-run
  noise), while the epochs grow with the rows.

Learning rate: the champion's (sklearn's default 1e-3, for a fresh Adam); 3e-4 gave the same holdout
macro-F1 and held-back accuracy. The first epoch loses 1-2 points of selection macro-F1 (Adam restarting
with large steps) and the next ones win them back, which is why the best epoch is kept.

The challenger's record gets the holdout's validation metrics (`models.training.train.validation_metrics`),
the epoch history, a drift baseline (from the whole validation split, as training builds it) and
``metrics["gate"]`` / ``metrics["retraining"]``, and the global importance on the holdout (permutation
importance of the feature groups, ~2 s). No alias is set: the coordinator decides what happens to the
challenger. A cycle on 80 corrections takes about 12 s on two cores (epochs ~1.4 s each).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from models.attribution import forward
from models.classifier import Classifier
from models.datasets.builder import TRAIN, VALIDATION
from models.drift.baseline import BASELINE_METRIC
from models.features.featurizer import Featurizer
from models.registry.model_registry import CHAMPION, ModelRecord, ModelRegistry
from models.retraining.corrections_log import (
    ReferenceSet,
    content_sha256,
    items_of,
    label_counts,
    new_corrections,
    read_parquet_frame,
)
from models.retraining.promotion import GateResult, evaluate_gate
from models.training.calibration import fit_temperature
from models.training.epoch_loop import FitHistory, fit_keeping_best
from models.training.feature_store import FeatureChunk, FeatureStore, dataset_column, dataset_ref, materialise
from models.training.metrics import macro_f1
from models.training.train import (
    DEFAULT_BLAS_THREADS,
    dataset_info,
    drop_training_state,
    global_importance,
    model_version,
    peak_rss_mb,
    training_baseline,
    validation_metrics,
)

# Share of the training rows the replicated correction rows aim at, and the most copies of one row
# (see "Correction replication" in the module docstring).
CORRECTION_SHARE = 0.05
MAX_REPLICATION = 10
NICENESS = 10
_niced = False


class NoNewCorrectionsError(ValueError):
    """Every correction of the snapshot is already part of the reference data."""


@dataclass(frozen=True)
class RetrainConfig:
    models_dir: Path  # the registry root (shared)
    corrections_root: Path  # CorrectionsLog/ReferenceSet root
    reference_dataset: Path  # a built dataset dir with train + validation splits
    feature_root: Path  # feature store cache root (local)
    reference_rows: int = 20_000  # floor of the class-balanced reference sample
    reference_share: float = 0.10  # reference rows >= this share of the training rows
    holdback: float = 0.2  # share of new corrections held back for the gate
    delta_points: float = 0.5
    max_epochs: int = 10
    patience: int = 3
    seed: int = 42


# ---- corrections ----------------------------------------------------------------------------------


def id_position(item_id: str) -> float:
    """A stable position of an item id in [0, 1): its blake2b (8 bytes) as a fraction of 2**64."""
    return int(hashlib.blake2b(str(item_id).encode("utf-8"), digest_size=8).hexdigest(), 16) / 2**64


def held_back_mask(ids: list[str], holdback: float) -> np.ndarray:
    """Which ids are held back: position < holdback; with none held back and two or more ids, the one of
    smallest position is; with all held back, the one of largest position is trained on."""
    positions = np.asarray([id_position(i) for i in ids], dtype=np.float64)
    mask = positions < holdback
    if len(ids) >= 2 and not mask.any():
        mask[int(np.argmin(positions))] = True
    if len(ids) and mask.all():
        mask[int(np.argmax(positions))] = False
    return mask


@dataclass
class CycleCorrections:
    snapshot: pd.DataFrame
    sha256: str
    new: pd.DataFrame
    train: pd.DataFrame
    heldback: pd.DataFrame
    accepted: pd.DataFrame  # accepted corrections that stay in the reference pool

    def report(self, snapshot_path: Path) -> dict[str, Any]:
        return {
            "snapshot": str(snapshot_path),
            "sha256": self.sha256,
            "new": len(self.new),
            "train": len(self.train),
            "heldback": len(self.heldback),
            "labels": label_counts(self.new),
        }


def cycle_corrections(snapshot_path: Path, corrections_root: Path, holdback: float) -> CycleCorrections:
    snapshot = read_parquet_frame(snapshot_path)
    accepted = ReferenceSet(corrections_root).frame()
    new = new_corrections(snapshot, accepted)
    if new.empty:
        raise NoNewCorrectionsError(f"all {len(snapshot)} corrections of {snapshot_path.name} are accepted")
    mask = held_back_mask(new["id"].tolist(), holdback)
    return CycleCorrections(
        snapshot=snapshot,
        sha256=content_sha256(snapshot),
        new=new,
        train=new[~mask].reset_index(drop=True),
        heldback=new[mask].reset_index(drop=True),
        accepted=accepted[~accepted["id"].isin(set(new["id"]))].reset_index(drop=True),
    )


# ---- reference data -------------------------------------------------------------------------------


@dataclass
class Labelled:
    """Feature rows with their labels."""

    features: sp.csr_matrix
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])


def labelled_corrections(frame: pd.DataFrame, featurizer: Featurizer) -> Labelled:
    items = items_of(frame)
    return Labelled(featurizer.transform(items), np.asarray(frame["label"].tolist(), dtype=object))


@dataclass
class Reference:
    dataset: Path
    store: FeatureStore
    train: FeatureChunk
    validation: FeatureChunk  # the whole validation split (the drift baseline's rows)
    selection: FeatureChunk
    holdout: FeatureChunk
    holdout_names: list[str]


def validation_halves(dataset_dir: Path, validation: FeatureChunk, seed: int) -> np.ndarray:
    """True for the validation rows of the holdout half: a seeded hash of the row's ОКПД2 group (of its
    name when the dataset has no group column) below 0.5."""
    ref = dataset_ref(dataset_dir)
    columns = pq.ParquetFile(ref.path / ref.shards[0]).schema_arrow.names
    keys = dataset_column(dataset_dir, "group" if "group" in columns else "name", validation.row_ids)
    return np.asarray([id_position(f"{seed}\x1f{key}") < 0.5 for key in keys], dtype=bool)


def reference_data(dataset_dir: Path, feature_root: Path, featurizer: Featurizer, seed: int) -> Reference:
    store = materialise(dataset_dir, feature_root, featurizer)
    train, validation = store.read(TRAIN), store.read(VALIDATION)
    if not len(train) or not len(validation):
        raise ValueError(f"{dataset_dir} needs both a train and a validation split")
    holdout = validation_halves(dataset_dir, validation, seed)
    holdout_chunk = validation.take(np.flatnonzero(holdout))
    return Reference(
        dataset=Path(dataset_dir),
        store=store,
        train=train,
        validation=validation,
        selection=validation.take(np.flatnonzero(~holdout)),
        holdout=holdout_chunk,
        holdout_names=dataset_column(dataset_dir, "name", holdout_chunk.row_ids),
    )


def balanced_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `n` rows of `labels`, equally many per label as far as each label has rows (a label
    short of its share leaves the rest to the others); beyond len(labels), whole copies plus a sample."""
    if n >= len(labels):
        copies, rest = divmod(n, len(labels))
        return np.concatenate([np.tile(np.arange(len(labels)), copies), balanced_sample(labels, rest, rng)])
    by_label = {label: np.flatnonzero(labels == label) for label in sorted(set(labels.tolist()))}
    taken, remaining = [], n
    for position, (_, rows) in enumerate(sorted(by_label.items(), key=lambda kv: (len(kv[1]), kv[0]))):
        quota = min(len(rows), remaining // (len(by_label) - position))
        taken.append(rng.choice(rows, size=quota, replace=False))
        remaining -= quota
    return np.sort(np.concatenate(taken))


# ---- training rows --------------------------------------------------------------------------------


@dataclass
class TrainingRows:
    features: sp.csr_matrix
    labels: np.ndarray
    reference_rows: int
    reference_replicated: bool
    correction_rows: int  # after replication
    replication: int
    accepted_in_pool: int


def replication_factor(correction_rows: int, reference_rows: int) -> int:
    """Copies of each correction train row (see the module docstring)."""
    if correction_rows == 0:
        return 1
    wanted = CORRECTION_SHARE / (1 - CORRECTION_SHARE) * reference_rows / correction_rows
    return int(min(max(round(wanted), 1), MAX_REPLICATION))


def training_rows(
    config: RetrainConfig, corrections: Labelled, accepted: Labelled, reference: Reference
) -> TrainingRows:
    """The correction train rows, replicated, then the class-balanced reference sample (module docstring,
    steps 4 and "Correction replication")."""
    replication = replication_factor(len(corrections), config.reference_rows)
    correction_rows = replication * len(corrections)
    share = config.reference_share
    n_ref = max(config.reference_rows, math.ceil(share / (1 - share) * correction_rows))
    pool_features = sp.vstack([reference.train.features, accepted.features], format="csr")
    pool_labels = np.concatenate([reference.train.labels, accepted.labels])
    rng = np.random.default_rng(config.seed)
    sample = balanced_sample(pool_labels, n_ref, rng)
    repeated = np.tile(np.arange(len(corrections)), replication)
    return TrainingRows(
        features=sp.vstack([corrections.features[repeated], pool_features[sample]], format="csr"),
        labels=np.concatenate([corrections.labels[repeated], pool_labels[sample]]),
        reference_rows=n_ref,
        reference_replicated=n_ref > len(pool_labels),
        correction_rows=correction_rows,
        replication=replication,
        accepted_in_pool=len(accepted),
    )


# ---- fitting --------------------------------------------------------------------------------------


def predicted(model: Any, features: sp.csr_matrix) -> np.ndarray:
    """Labels by `models.attribution.forward` (a network or anything with its attributes)."""
    return np.asarray(model.classes_)[forward(model, features)[1].argmax(axis=1)]


def accuracy(model: Any, data: Labelled) -> float:
    return float(np.mean(predicted(model, data.features) == data.labels)) if len(data) else 0.0


@dataclass
class EpochScores:
    selection_macro_f1: list[float]
    correction_train_accuracy: list[float]


def warm_start(
    champion: MLPClassifier,
    rows: TrainingRows,
    selection: FeatureChunk,
    correction_train: Labelled,
    config: RetrainConfig,
) -> tuple[MLPClassifier, FitHistory, EpochScores]:
    """The champion's network trained further on `rows`, best selection-score epoch kept."""
    model = copy.deepcopy(champion)
    drop_training_state(model)  # a fresh Adam optimizer on the first partial_fit
    labels = [str(label) for label in model.classes_]
    scores = EpochScores([], [])

    def evaluate(candidate: MLPClassifier) -> float:
        f1 = macro_f1(selection.labels, predicted(candidate, selection.features), labels)
        correct = accuracy(candidate, correction_train) if len(correction_train) else f1
        scores.selection_macro_f1.append(f1)
        scores.correction_train_accuracy.append(correct)
        return (f1 + correct) / 2

    history = fit_keeping_best(
        model,
        rows.features,
        rows.labels,
        evaluate,
        rng=np.random.default_rng(config.seed),
        max_epochs=config.max_epochs,
        patience=config.patience,
    )
    drop_training_state(model)
    return model, history, scores


# ---- the gate and the record ----------------------------------------------------------------------


def classifier_labels(classifier: Classifier, features: sp.csr_matrix) -> np.ndarray:
    """Predicted labels as the stream computes them (`Classifier.predict_proba`)."""
    return np.asarray(classifier.labels)[classifier.predict_proba(features).argmax(axis=1)]


def gate_of(
    champion: Classifier,
    challenger: Classifier,
    holdout: FeatureChunk,
    heldback: Labelled,
    delta_points: float,
) -> GateResult:
    def reference_f1(classifier: Classifier) -> float:
        return macro_f1(holdout.labels, classifier_labels(classifier, holdout.features), classifier.labels)

    def heldback_accuracy(classifier: Classifier) -> float:
        if not len(heldback):
            return 0.0
        return float(np.mean(classifier_labels(classifier, heldback.features) == heldback.labels))

    return evaluate_gate(
        reference_rows=len(holdout),
        champion_reference_f1=reference_f1(champion),
        challenger_reference_f1=reference_f1(challenger),
        correction_rows=len(heldback),
        champion_correction_accuracy=heldback_accuracy(champion),
        challenger_correction_accuracy=heldback_accuracy(challenger),
        delta_points=delta_points,
    )


def epoch_history(history: FitHistory, scores: EpochScores) -> list[dict[str, Any]]:
    return [
        {
            "epoch": e.epoch,
            "loss": e.loss,
            "score": e.score,
            "val_macro_f1": f1,  # on the selection half of the validation split
            "correction_train_accuracy": correct,
            "seconds": round(e.seconds, 3),
            "rows_per_s": round(e.rows_per_s, 1),
        }
        for e, f1, correct in zip(
            history.epochs, scores.selection_macro_f1, scores.correction_train_accuracy, strict=True
        )
    ]


class Phases:
    """Wall-clock seconds per phase of a cycle."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


@dataclass
class Cycle:
    """Everything one retraining produced, for the record and the summary."""

    config: RetrainConfig
    champion: Classifier
    challenger: Classifier
    corrections: CycleCorrections
    reference: Reference
    rows: TrainingRows
    history: FitHistory
    scores: EpochScores
    gate: GateResult
    reason: str
    cycle: str
    snapshot_path: Path
    phases: Phases  # seconds per phase, filled in as the cycle goes


def cycle_metrics(cycle: Cycle) -> dict[str, Any]:
    """The challenger's record metrics: holdout metrics, history, importance, drift baseline, gate and
    the retraining report."""
    reference, history, rows, config = cycle.reference, cycle.history, cycle.rows, cycle.config
    metrics = validation_metrics(cycle.challenger, reference.holdout, reference.holdout_names)
    metrics["global_importance"] = global_importance(
        cycle.challenger, reference.dataset, reference.holdout, config.seed
    )
    baseline = training_baseline(
        cycle.challenger,
        reference.dataset,
        reference.dataset,
        reference.validation,
        extra_names=cycle.corrections.train["name"].dropna().tolist(),
    )
    metrics.update(
        {
            "validated_on": f"holdout half of the validation split of {reference.store.dataset_version}",
            "best_epoch": history.best_epoch,
            "epochs_run": len(history.epochs),
            "rows_per_s_per_epoch": float(np.mean([e.rows_per_s for e in history.epochs])),
            "train_size": len(rows.labels),
            "validation_size": len(reference.holdout),
            "selection_size": len(reference.selection),
            "fit_seconds": round(sum(e.seconds for e in history.epochs), 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "seed": config.seed,
            "blas_threads": DEFAULT_BLAS_THREADS,
            "untrained_input_columns": int((~cycle.challenger.model.coefs_[0].any(axis=1)).sum()),
            "dataset": dataset_info(reference.store, reference.store),
            "history": epoch_history(history, cycle.scores),
            "gate": cycle.gate.as_dict(),
            BASELINE_METRIC: baseline.to_json(),
        }
    )
    return metrics


def retraining_report(cycle: Cycle) -> dict[str, Any]:
    rows = cycle.rows
    return {
        "champion": cycle.champion.version,
        "reason": cycle.reason,
        "cycle": cycle.cycle,
        "corrections": cycle.corrections.report(cycle.snapshot_path),
        "reference": {
            "dataset": cycle.reference.store.dataset_version,
            "sampled_rows": rows.reference_rows,
            "replicated": rows.reference_replicated,
            "accepted_corrections_in_pool": rows.accepted_in_pool,
        },
        "correction_replication": rows.replication,
        "correction_rows": rows.correction_rows,
        "train_rows": len(rows.labels),
        "seconds": round(sum(cycle.phases.seconds.values()), 2),
        "phase_seconds": {phase: round(seconds, 2) for phase, seconds in cycle.phases.seconds.items()},
    }


def data_identity(cycle: Cycle) -> tuple[str, dict[str, int]]:
    """(data sha256, row counts) for the registry: the snapshot's and the reference dataset's content."""
    dataset_sha = str(cycle.reference.store.manifest["dataset"]["sha256"])
    sha = combined_sha256(cycle.corrections.sha256, dataset_sha)
    rows: dict[str, int] = {
        "total": len(cycle.rows.labels),
        "reference_rows": cycle.rows.reference_rows,
        "correction_rows": cycle.rows.correction_rows,
        "corrections_train": len(cycle.corrections.train),
        "corrections_heldback": len(cycle.corrections.heldback),
        "selection_rows": len(cycle.reference.selection),
        "holdout_rows": len(cycle.reference.holdout),
    }
    labels, counts = np.unique(cycle.rows.labels.astype(str), return_counts=True)
    rows.update({str(label): int(count) for label, count in zip(labels, counts, strict=True)})
    return sha, rows


def combined_sha256(snapshot_sha256: str, dataset_sha256: str) -> str:
    """The training data's identity: the corrections snapshot's content hash and the reference dataset's."""
    return hashlib.sha256(f"{snapshot_sha256}\x1f{dataset_sha256}".encode()).hexdigest()


# ---- the cycle ------------------------------------------------------------------------------------


def lower_priority() -> None:
    """os.nice(NICENESS), once per process (a pool worker may run several cycles)."""
    global _niced
    if not _niced:
        os.nice(NICENESS)
        _niced = True


def retrain(config: RetrainConfig, snapshot_path: Path, reason: str, cycle: str) -> dict[str, Any]:
    """Retrain from the snapshot's new corrections (see the module docstring); a JSON-ready summary:
    version, artifact, sha256, champion, training_seconds, corrections, gate, best_epoch, epochs_run,
    train_rows, reference_rows.

    Raises NoNewCorrectionsError when every correction of the snapshot is already accepted.
    """
    lower_priority()
    with threadpool_limits(limits=DEFAULT_BLAS_THREADS):
        result = _train(config, Path(snapshot_path), reason, cycle)
        record = _register(config, result)
    print(
        f"retrained {record.version} from {result.champion.version} on {len(result.corrections.new)} "
        f"corrections in {record.training_seconds:.1f}s ("
        + ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in result.phases.seconds.items())
        + f"): gate {'eligible' if result.gate.eligible else 'not eligible'}",
        file=sys.stderr,
        flush=True,
    )
    return {
        "version": record.version,
        "artifact": record.artifact,
        "sha256": record.artifact_sha256,
        "champion": result.champion.version,
        "training_seconds": record.training_seconds,
        "corrections": result.corrections.report(result.snapshot_path),
        "gate": result.gate.as_dict(),
        "best_epoch": result.history.best_epoch,
        "epochs_run": len(result.history.epochs),
        "train_rows": len(result.rows.labels),
        "reference_rows": result.rows.reference_rows,
    }


def _train(config: RetrainConfig, snapshot_path: Path, reason: str, cycle: str) -> Cycle:
    phases = Phases()
    corrections = cycle_corrections(snapshot_path, config.corrections_root, config.holdback)
    registry = ModelRegistry(config.models_dir)
    champion = registry.load(registry.get(CHAMPION).version)
    unknown = sorted(set(corrections.new["label"]) - set(champion.labels))
    if unknown:
        raise ValueError(f"corrections with labels {unknown}: {champion.version} knows {champion.labels}")
    # the champion's own featurizer: its weights expect those columns (a tuned champion's differ)
    featurizer = champion.featurizer
    reference = reference_data(config.reference_dataset, config.feature_root, featurizer, config.seed)
    correction_train = labelled_corrections(corrections.train, featurizer)
    accepted = labelled_corrections(corrections.accepted, featurizer)
    rows = training_rows(config, correction_train, accepted, reference)
    phases.done("prepare")
    model, history, scores = warm_start(champion.model, rows, reference.selection, correction_train, config)
    # calibrated like a first model, on the selection half (the gate's holdout half stays unseen)
    temperature = fit_temperature(model, reference.selection.features, reference.selection.labels.tolist())
    challenger = Classifier(
        model, featurizer, version=model_version(model, featurizer, temperature), temperature=temperature
    )
    phases.done("epochs")
    heldback = labelled_corrections(corrections.heldback, featurizer)
    gate = gate_of(champion, challenger, reference.holdout, heldback, config.delta_points)
    phases.done("gate")
    return Cycle(
        config=config,
        champion=champion,
        challenger=challenger,
        corrections=corrections,
        reference=reference,
        rows=rows,
        history=history,
        scores=scores,
        gate=gate,
        reason=reason,
        cycle=cycle,
        snapshot_path=snapshot_path,
        phases=phases,
    )


def _register(config: RetrainConfig, cycle: Cycle) -> ModelRecord:
    """Register the challenger with its metrics (no alias is set)."""
    metrics = cycle_metrics(cycle)
    cycle.phases.done("metrics")
    metrics["train_seconds"] = round(sum(cycle.phases.seconds.values()), 2)
    metrics["retraining"] = retraining_report(cycle)
    sha, rows = data_identity(cycle)
    notes = (
        f"retrained from {cycle.champion.version} on {len(cycle.corrections.new)} corrections "
        f"({cycle.reason})"
    )
    return ModelRegistry(config.models_dir).register(
        cycle.challenger, metrics, cycle.snapshot_path, notes=notes, data_sha256=sha, data_rows=rows
    )

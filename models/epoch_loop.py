"""Epoch loop over MLPClassifier.partial_fit that keeps the best weights on a fixed validation score."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier


@dataclass
class EpochResult:
    epoch: int
    loss: float
    score: float
    seconds: float
    rows_per_s: float
    improved: bool


@dataclass
class FitHistory:
    epochs: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    best_coefs: list[np.ndarray] = field(default_factory=list)
    best_intercepts: list[np.ndarray] = field(default_factory=list)


def fit_keeping_best(
    model: MLPClassifier,
    features: sp.csr_matrix,
    targets: np.ndarray,
    evaluate: Callable[[MLPClassifier], float],
    *,
    rng: np.random.Generator,
    max_epochs: int,
    patience: int,
    on_epoch: Callable[[EpochResult, FitHistory], None] | None = None,
) -> FitHistory:
    """Train one `partial_fit` pass per epoch on a freshly shuffled copy of the data.

    After each epoch `evaluate(model)` scores the model (higher is better). The weights of the best epoch are
    snapshotted; training stops after `patience` epochs without a strict improvement or at `max_epochs`,
    and the best snapshot is copied back into the model's arrays.
    """
    if model.shuffle:
        raise ValueError("the model must have shuffle=False: the loop shuffles with its own seeded RNG")
    classes = np.unique(targets)
    history = FitHistory()
    stale = 0
    for epoch in range(1, max_epochs + 1):
        order = rng.permutation(features.shape[0])
        started = time.perf_counter()
        model.partial_fit(features[order], targets[order], classes=classes)
        seconds = time.perf_counter() - started
        score = evaluate(model)
        improved = score > history.best_score
        if improved:
            history.best_epoch, history.best_score, stale = epoch, score, 0
            history.best_coefs = copy.deepcopy(model.coefs_)
            history.best_intercepts = copy.deepcopy(model.intercepts_)
        else:
            stale += 1
        result = EpochResult(epoch, float(model.loss_), score, seconds, features.shape[0] / seconds, improved)
        history.epochs.append(result)
        if on_epoch is not None:
            on_epoch(result, history)
        if stale >= patience:
            break
    # In place, so the arrays the optimizer holds stay the model's arrays.
    for current, best in zip(
        model.coefs_ + model.intercepts_, history.best_coefs + history.best_intercepts, strict=True
    ):
        current[...] = best
    return history

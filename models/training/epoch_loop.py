"""Epoch loop over MLPClassifier.partial_fit that keeps the best weights on a fixed validation score.

`fit_chunks_keeping_best` takes, for each epoch, an iterable of (features, targets) chunks (e.g. streamed from
the feature store) and feeds them to `partial_fit` in whole minibatches of `model.batch_size`: the rows left
over at the end of a chunk are carried into the next one, so every minibatch but the epoch's last is full
and the weights do not depend on how the data is cut into chunks. `fit_keeping_best` is the same loop over
one in-memory matrix, shuffled each epoch.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier

Chunk = tuple[sp.csr_matrix, np.ndarray]


@dataclass
class EpochResult:
    epoch: int
    loss: float
    score: float
    seconds: float  # reading, shuffling and partial_fit of the epoch's rows (not the evaluation)
    rows_per_s: float
    improved: bool
    rows: int = 0


@dataclass
class FitHistory:
    epochs: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    best_coefs: list[np.ndarray] = field(default_factory=list)
    best_intercepts: list[np.ndarray] = field(default_factory=list)


def whole_batches(chunks: Iterable[Chunk], batch_size: int) -> Iterator[Chunk]:
    """Re-cut chunks so each yielded one holds a multiple of `batch_size` rows, except the last.

    The rows after the last whole minibatch of a chunk are carried over: the first rows of the next chunk
    complete them into one minibatch (yielded on its own), and what is left at the end is yielded last.
    `partial_fit` on the pieces updates the weights exactly as on all rows in one call would. Only views of
    a chunk and copies of fewer than `batch_size` rows are made, and no chunk is held beyond its use.
    """
    carry: Chunk | None = None
    for features, targets in chunks:
        if carry is not None:
            need = batch_size - len(carry[1])
            if len(targets) < need:
                carry = (sp.vstack([carry[0], features], format="csr"), np.concatenate([carry[1], targets]))
                continue
            yield (
                sp.vstack([carry[0], _head_rows(features, need)], format="csr"),
                np.concatenate([carry[1], targets[:need]]),
            )
            carry = None
            features, targets = _tail_rows(features, need), targets[need:]
        cut = len(targets) - len(targets) % batch_size
        if cut < len(targets):
            carry = (features[cut:], targets[cut:].copy())  # fewer than batch_size rows: a small copy
        if cut:
            yield (features, targets) if cut == len(targets) else (_head_rows(features, cut), targets[:cut])
        del features, targets
    if carry is not None:
        yield carry


def _head_rows(matrix: sp.csr_matrix, rows: int) -> sp.csr_matrix:
    """The first `rows` rows as a CSR matrix over views of the same arrays (no copy of a large chunk)."""
    end = matrix.indptr[rows]
    return sp.csr_matrix(
        (matrix.data[:end], matrix.indices[:end], matrix.indptr[: rows + 1]),
        shape=(rows, matrix.shape[1]),
        copy=False,
    )


def _tail_rows(matrix: sp.csr_matrix, start: int) -> sp.csr_matrix:
    """The rows from `start` on, over views of the same data and indices."""
    begin = matrix.indptr[start]
    return sp.csr_matrix(
        (matrix.data[begin:], matrix.indices[begin:], matrix.indptr[start:] - begin),
        shape=(matrix.shape[0] - start, matrix.shape[1]),
        copy=False,
    )


def fit_chunks_keeping_best(
    model: MLPClassifier,
    epoch_chunks: Callable[[int], Iterable[Chunk]],
    classes: np.ndarray,
    evaluate: Callable[[MLPClassifier], float],
    *,
    max_epochs: int,
    patience: int,
    on_epoch: Callable[[EpochResult, FitHistory], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> FitHistory:
    """One pass of `partial_fit` over `epoch_chunks(epoch)` per epoch (epochs count from 1).

    After each epoch `evaluate(model)` scores the model (higher is better). The weights of the best epoch are
    snapshotted; training stops after `patience` epochs without a strict improvement or at `max_epochs`,
    and the best snapshot is copied back into the model's arrays. `on_chunk(rows)` is called after each
    `partial_fit` call (progress bars).
    """
    if model.shuffle:
        raise ValueError("the model must have shuffle=False: the loop shuffles with its own seeded RNG")
    history = FitHistory()
    stale = 0
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        rows, loss = _run_epoch(model, epoch_chunks(epoch), classes, on_chunk)
        seconds = time.perf_counter() - started
        score = evaluate(model)
        improved = score > history.best_score
        if improved:
            history.best_epoch, history.best_score, stale = epoch, score, 0
            history.best_coefs = copy.deepcopy(model.coefs_)
            history.best_intercepts = copy.deepcopy(model.intercepts_)
        else:
            stale += 1
        result = EpochResult(
            epoch, loss, score, seconds, rows / seconds if seconds > 0 else 0.0, improved, rows
        )
        history.epochs.append(result)
        if on_epoch is not None:
            on_epoch(result, history)
        if stale >= patience:
            break
    _restore(model, history)
    return history


def _run_epoch(
    model: MLPClassifier,
    chunks: Iterable[Chunk],
    classes: np.ndarray,
    on_chunk: Callable[[int], None] | None,
) -> tuple[int, float]:
    """(rows seen, mean training loss over them)."""
    rows, weighted_loss = 0, 0.0
    for features, targets in whole_batches(chunks, int(model.batch_size)):
        with warnings.catch_warnings():
            # The epoch's last minibatch may be short; sklearn warns that it "clips" the batch size to it.
            warnings.filterwarnings("ignore", message="Got `batch_size`", category=UserWarning)
            model.partial_fit(features, targets, classes=classes)
        rows += len(targets)
        weighted_loss += float(model.loss_) * len(targets)
        if on_chunk is not None:
            on_chunk(len(targets))
        del features, targets  # before the next chunk is read
    if rows == 0:
        raise ValueError("an epoch had no training rows")
    return rows, weighted_loss / rows


def _restore(model: MLPClassifier, history: FitHistory) -> None:
    """Copy the best snapshot back in place, so the arrays the optimizer holds stay the model's arrays."""
    for current, best in zip(
        model.coefs_ + model.intercepts_, history.best_coefs + history.best_intercepts, strict=True
    ):
        current[...] = best


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
    """`fit_chunks_keeping_best` over one in-memory matrix, in a fresh `rng` permutation each epoch."""

    def epoch_chunks(epoch: int) -> Iterator[Chunk]:
        order = rng.permutation(features.shape[0])
        yield features[order], targets[order]

    return fit_chunks_keeping_best(
        model,
        epoch_chunks,
        np.unique(targets),
        evaluate,
        max_epochs=max_epochs,
        patience=patience,
        on_epoch=on_epoch,
    )

"""Validation metrics for the classifier, as plain JSON-friendly dicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def macro_f1(
    y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray, labels: list[str]
) -> float:
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def classification_metrics(
    y_true: Sequence[str] | np.ndarray,
    y_pred: Sequence[str] | np.ndarray,
    confidence: np.ndarray,
    labels: list[str],
) -> dict[str, Any]:
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": macro_f1(y_true, y_pred, labels),
        "avg_confidence": float(np.mean(confidence)) if len(confidence) else 0.0,
        "ece": expected_calibration_error(confidence, np.asarray(y_true) == np.asarray(y_pred)),
        **confident_accuracy(confidence, np.asarray(y_true) == np.asarray(y_pred)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
    }


def slice_metrics(
    y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray, confidence: np.ndarray
) -> dict[str, Any]:
    """For a one-class slice (e.g. services only): accuracy there is that class's recall."""
    n = len(y_true)
    return {
        "n": n,
        "accuracy": float(accuracy_score(y_true, y_pred)) if n else None,
        "avg_confidence": float(np.mean(confidence)) if n else None,
    }


ECE_BINS = 10
CONFIDENT = 0.95


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: over `bins` equal-width confidence bins, the row-weighted mean |accuracy − mean confidence|."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if not len(confidence):
        return 0.0
    correct = np.asarray(correct, dtype=np.float64)
    # the bins are (0, 0.1], (0.1, 0.2], …; a confidence of exactly 1 falls in the last
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in np.unique(which):
        rows = which == b
        total += rows.sum() * abs(correct[rows].mean() - confidence[rows].mean())
    return float(total / len(confidence))


def confident_accuracy(confidence: np.ndarray, correct: np.ndarray, at: float = CONFIDENT) -> dict[str, Any]:
    """The share of predictions with confidence ≥ `at`, and their accuracy (None when there are none)."""
    confident = np.asarray(confidence) >= at
    n = int(confident.sum())
    return {
        "confident_share": float(confident.mean()) if len(confident) else 0.0,
        "confident_accuracy": float(np.asarray(correct)[confident].mean()) if n else None,
    }

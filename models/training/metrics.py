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

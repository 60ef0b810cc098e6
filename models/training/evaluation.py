"""`nomenclature evaluate`: score a labelled CSV (name,label[,item fields][,source]) with a registered model.

The report is one JSON-friendly dict: accuracy, macro-F1 and per-class metrics (models/training/metrics.py),
the same per value of the `source` column when there is one, a confusion matrix (rows: true label, columns:
predicted label) and the worst errors (wrong predictions with the highest confidence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from models.batch_prediction import items_from_frame, read_item_chunks
from models.classifier import Classifier
from models.training.metrics import classification_metrics

SOURCE = "source"
BLANK_SOURCE = "(blank)"
DEFAULT_WORST = 10


@dataclass
class Scored:
    """Rows kept for evaluation (non-blank name and label) with their predictions, in input order."""

    row: list[int] = field(default_factory=list)  # 1-based data row number (the header is not counted)
    name: list[str] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    source: list[str] | None = None
    skipped: int = 0

    def extend(self, chunk: pd.DataFrame, classifier: Classifier) -> None:
        keep = (chunk["name"].str.strip() != "") & (chunk["label"].str.strip() != "")
        self.skipped += int((~keep).sum())
        kept = chunk[keep]
        predictions = classifier.predict(items_from_frame(kept), top_k=2, explain=0)
        self.row.extend(int(i) + 1 for i in kept.index)
        self.name.extend(kept["name"].tolist())
        self.label.extend(kept["label"].str.strip().tolist())
        self.predicted.extend(p.label for p in predictions)
        self.confidence.extend(float(p.confidence) for p in predictions)
        if SOURCE in kept.columns:
            if self.source is None:
                self.source = []
            self.source.extend(s.strip() or BLANK_SOURCE for s in kept[SOURCE])


def score_csv(input_csv: Path, classifier: Classifier) -> Scored:
    """Predict every labelled row of `input_csv` (needs columns name and label)."""
    scored = Scored()
    for chunk in read_item_chunks(input_csv, required=("name", "label")):
        scored.extend(chunk, classifier)
    return scored


def evaluate_csv(input_csv: Path, classifier: Classifier, worst: int = DEFAULT_WORST) -> dict[str, Any]:
    report = evaluate(score_csv(input_csv, classifier), classifier, worst)
    return {"input": str(input_csv), **report}


def evaluate(scored: Scored, classifier: Classifier, worst: int = DEFAULT_WORST) -> dict[str, Any]:
    """The report for already scored rows."""
    labels = label_set(classifier.labels, scored.label)
    y_true, y_pred = np.asarray(scored.label), np.asarray(scored.predicted)
    confidence = np.asarray(scored.confidence, dtype=np.float64)
    report: dict[str, Any] = {
        "model_version": classifier.version,
        "featurizer_version": classifier.featurizer_version,
        "rows": len(scored.label),
        "skipped_rows": scored.skipped,
        "labels": labels,
        "unknown_labels": [label for label in labels if label not in classifier.labels],
        **classification_metrics(y_true, y_pred, confidence, labels),
    }
    if scored.source is not None:
        report["per_source"] = per_source_metrics(
            y_true, y_pred, confidence, np.asarray(scored.source), labels
        )
    report["confusion_matrix"] = {
        "labels": labels,
        "matrix": confusion(y_true, y_pred, labels),
    }
    report["worst_errors"] = worst_errors(scored, worst)
    return report


def label_set(model_labels: list[str], true_labels: list[str]) -> list[str]:
    """The model's classes, then labels only the input has (a model can never predict those)."""
    return list(model_labels) + sorted(set(true_labels) - set(model_labels))


def per_source_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray, sources: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    return {
        source: classification_metrics(
            y_true[sources == source], y_pred[sources == source], confidence[sources == source], labels
        )
        for source in sorted(set(sources.tolist()))
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> list[list[int]]:
    if len(y_true) == 0:
        return [[0] * len(labels) for _ in labels]
    return confusion_matrix(y_true, y_pred, labels=labels).tolist()


def worst_errors(scored: Scored, limit: int) -> list[dict[str, Any]]:
    """Wrong predictions, most confident first (ties: input order)."""
    wrong = [i for i, (t, p) in enumerate(zip(scored.label, scored.predicted, strict=True)) if t != p]
    wrong.sort(key=lambda i: (-scored.confidence[i], i))
    return [_error(scored, i) for i in wrong[: max(0, limit)]]


def _error(scored: Scored, i: int) -> dict[str, Any]:
    error = {
        "row": scored.row[i],
        "name": scored.name[i],
        "label": scored.label[i],
        "predicted": scored.predicted[i],
        "confidence": round(scored.confidence[i], 6),
    }
    if scored.source is not None:
        error[SOURCE] = scored.source[i]
    return error


# ---- text report ---------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    parts = [
        _format_header(report),
        format_per_class(report["per_class"]),
        _format_per_source(report.get("per_source")),
        _format_confusion(report["confusion_matrix"]),
        _format_worst(report["worst_errors"]),
    ]
    return "\n\n".join(part for part in parts if part)


def _format_header(report: dict[str, Any]) -> str:
    lines = [
        f"model {report['model_version']} (featurizer {report['featurizer_version']}), "
        f"{report['rows']} rows from {report.get('input', '?')}"
        + (f" ({report['skipped_rows']} skipped: blank name or label)" if report["skipped_rows"] else ""),
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
        f"avg confidence {report['avg_confidence']:.4f}   ECE {report['ece']:.4f}",
        f"confidence ≥ 0.95: {report['confident_share']:.1%} of rows, accuracy "
        + ("-" if report["confident_accuracy"] is None else f"{report['confident_accuracy']:.4f}"),
    ]
    if report["unknown_labels"]:
        lines.append(f"labels the model does not know: {', '.join(report['unknown_labels'])}")
    return "\n".join(lines)


def format_per_class(per_class: dict[str, Any]) -> str:
    rows = [
        [label, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"])]
        for label, m in per_class.items()
    ]
    return table(["class", "precision", "recall", "f1", "support"], rows)


def _format_per_source(per_source: dict[str, Any] | None) -> str:
    if not per_source:
        return ""
    rows = [
        [
            source,
            str(m["n"]),
            f"{m['accuracy']:.4f}",
            f"{m['macro_f1']:.4f}",
            f"{m['avg_confidence']:.4f}",
            f"{m['ece']:.4f}",
        ]
        for source, m in per_source.items()
    ]
    return "per source\n" + table(["source", "n", "accuracy", "macro-F1", "avg conf", "ECE"], rows)


def _format_confusion(confusion_data: dict[str, Any]) -> str:
    labels = confusion_data["labels"]
    rows = [
        [label, *map(str, counts)] for label, counts in zip(labels, confusion_data["matrix"], strict=True)
    ]
    return "confusion matrix (rows: true label, columns: predicted)\n" + table(
        ["true \\ predicted", *labels], rows
    )


def _format_worst(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "no errors"
    with_source = SOURCE in errors[0]
    header = ["row", "confidence", "label", "predicted", *([SOURCE] if with_source else []), "name"]
    rows = [
        [
            str(e["row"]),
            f"{e['confidence']:.4f}",
            e["label"],
            e["predicted"],
            *([e[SOURCE]] if with_source else []),
            e["name"],
        ]
        for e in errors
    ]
    return f"worst errors ({len(errors)}, most confident first)\n" + table(header, rows)


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces (the last column is not padded)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for cells in [header, *rows]:
        padded = [str(cell).ljust(width) for cell, width in zip(cells[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, str(cells[-1])]))
    return "\n".join(lines)

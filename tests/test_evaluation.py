"""`nomenclature evaluate` and `models/training/evaluation.py`: the numbers are sklearn's on the same
predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from models.batch_prediction import ITEM_FIELDS
from models.classifier import Classifier
from models.datasets.builder import DEFAULT_SOURCE
from models.registry.model_registry import ModelRegistry
from models.training.evaluation import evaluate_csv, format_report
from models.training.train import train
from tests.support import labelled_sample_csv
from tools.cli import main

DATA = DEFAULT_SOURCE
SOURCES = ("erp", "catalogue", "")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    path = labelled_sample_csv(tmp_path_factory.mktemp("evaluation-data"), per_label=500, seed=3)
    return train(path, seed=3, max_epochs=4, progress=False)[0]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """120 labelled items with a source column (one blank), a unit on some, and rows to skip."""
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    sample = frame.groupby("label", group_keys=False).sample(n=60, random_state=9).reset_index(drop=True)
    sample = sample[["name", "label"]].copy()
    sample["source"] = [SOURCES[i % 3] for i in range(len(sample))]
    sample["unit"] = ["шт" if i % 4 == 0 else "" for i in range(len(sample))]
    sample["id"] = [f"item-{i}" for i in range(len(sample))]
    skipped = pd.DataFrame(
        {"name": ["", "Кабель ВВГ"], "label": ["product", ""], "source": ["erp"] * 2, "unit": [""] * 2}
    )
    skipped["id"] = ["blank-name", "blank-label"]
    return pd.concat([sample, skipped], ignore_index=True)


def _direct(classifier: Classifier, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same rows predicted directly: (true labels, predicted labels, confidences)."""
    kept = frame[(frame["name"] != "") & (frame["label"] != "")]
    fields = [f for f in ITEM_FIELDS if f in kept.columns]
    items = [{k: (v or None) for k, v in row.items()} for row in kept[fields].to_dict("records")]
    predictions = classifier.predict(items, top_k=2, explain=0)
    predicted = np.asarray([p.label for p in predictions])
    confidence = np.asarray([p.confidence for p in predictions])
    return kept["label"].to_numpy(), predicted, confidence


def test_numbers_equal_sklearn_on_the_same_predictions(
    tmp_path: Path, classifier: Classifier, labelled: pd.DataFrame
) -> None:
    path = tmp_path / "eval.csv"
    labelled.to_csv(path, index=False)
    report = evaluate_csv(path, classifier, worst=5)
    y_true, y_pred, confidence = _direct(classifier, labelled)
    labels = classifier.labels

    assert report["rows"] == len(y_true) == 120 and report["skipped_rows"] == 2
    assert (y_true != y_pred).sum() > 0  # there are errors to rank
    assert report["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert report["avg_confidence"] == pytest.approx(confidence.mean())
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels)
    for i, label in enumerate(labels):
        assert report["per_class"][label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        )
    assert report["confusion_matrix"] == {
        "labels": labels,
        "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def test_per_source_metrics(tmp_path: Path, classifier: Classifier, labelled: pd.DataFrame) -> None:
    path = tmp_path / "eval.csv"
    labelled.to_csv(path, index=False)
    report = evaluate_csv(path, classifier)
    y_true, y_pred, _ = _direct(classifier, labelled)
    sources = labelled[(labelled["name"] != "") & (labelled["label"] != "")]["source"].to_numpy()
    assert set(report["per_source"]) == {"erp", "catalogue", "(blank)"}
    assert sum(m["n"] for m in report["per_source"].values()) == report["rows"]
    for source, name in (("erp", "erp"), ("catalogue", "catalogue"), ("", "(blank)")):
        mask = sources == source
        metrics = report["per_source"][name]
        assert metrics["n"] == mask.sum() == 40
        assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true[mask], y_pred[mask]))
        expected_f1 = f1_score(y_true[mask], y_pred[mask], labels=classifier.labels, average="macro")
        assert metrics["macro_f1"] == pytest.approx(expected_f1)


def test_worst_errors_are_the_most_confident_wrong_predictions(
    tmp_path: Path, classifier: Classifier, labelled: pd.DataFrame
) -> None:
    path = tmp_path / "eval.csv"
    labelled.to_csv(path, index=False)
    y_true, y_pred, confidence = _direct(classifier, labelled)
    wrong = np.flatnonzero(y_true != y_pred)
    limit = min(3, len(wrong))
    report = evaluate_csv(path, classifier, worst=limit)
    errors = report["worst_errors"]
    assert len(errors) == limit
    expected = sorted(confidence[wrong].tolist(), reverse=True)[:limit]
    assert [e["confidence"] for e in errors] == pytest.approx(expected, abs=1e-6)
    for error in errors:
        row = labelled.iloc[error["row"] - 1]  # 1-based data row of the input
        assert (error["name"], error["label"], error["source"]) == (
            row["name"], row["label"], row["source"] or "(blank)",
        )  # fmt: skip
        assert error["predicted"] != error["label"]
    assert len(evaluate_csv(path, classifier, worst=1000)["worst_errors"]) == len(wrong)


def test_a_label_the_model_does_not_know_counts_as_an_error(tmp_path: Path, classifier: Classifier) -> None:
    path = tmp_path / "eval.csv"
    frame = pd.DataFrame({"name": ["Ремонт кровли", "Кабель ВВГ"], "label": ["работа", "product"]})
    frame.to_csv(path, index=False)
    report = evaluate_csv(path, classifier)
    assert report["labels"] == [*classifier.labels, "работа"]
    assert report["unknown_labels"] == ["работа"]
    assert report["per_class"]["работа"]["recall"] == 0.0
    assert report["per_class"]["работа"]["support"] == 1
    assert "per_source" not in report
    assert report["worst_errors"][0]["label"] == "работа"
    assert "labels the model does not know: работа" in format_report(report)


def test_missing_label_column_is_an_error(tmp_path: Path, classifier: Classifier) -> None:
    path = tmp_path / "names.csv"
    pd.DataFrame({"name": ["Ремонт кровли"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="'label' required"):
        evaluate_csv(path, classifier)


# ---- the commands --------------------------------------------------------------------------------


@pytest.fixture
def registered(tmp_path: Path, classifier: Classifier, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NOMENCLATURE_DATA_DIR with `classifier` registered as the champion."""
    monkeypatch.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path))
    data = tmp_path / "train.csv"
    pd.DataFrame({"name": ["x"], "label": ["product"]}).to_csv(data, index=False)
    ModelRegistry(tmp_path / "models").register(classifier, {}, data)
    return tmp_path


def test_evaluate_command_json_and_text(
    registered: Path, classifier: Classifier, labelled: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    path = registered / "eval.csv"
    labelled.to_csv(path, index=False)
    main(["evaluate", "--input", str(path), "--json", "--worst", "2"])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report == json.loads(json.dumps(evaluate_csv(path, classifier, worst=2)))
    wrong = round((1 - report["accuracy"]) * report["rows"])
    assert report["model_version"] == classifier.version and len(report["worst_errors"]) == min(2, wrong)

    main(["evaluate", "--input", str(path), "--model", classifier.version])
    text = capsys.readouterr().out
    assert f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}" in text
    assert "120 rows" in text and "2 skipped" in text
    sections = ("class    precision", "per source", "confusion matrix", f"worst errors ({min(10, wrong)},")
    for section in sections:
        assert section in text
    confusion = text.split("confusion matrix")[1].split("\n\n")[0].splitlines()
    assert confusion[1].split()[-2:] == classifier.labels
    printed = [[int(cell) for cell in line.split()[1:]] for line in confusion[2:]]
    assert printed == report["confusion_matrix"]["matrix"]


def test_evaluate_command_errors(registered: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--input", str(tmp_path / "missing.csv")])
    assert "missing.csv" in str(exc.value.code)
    names = tmp_path / "names.csv"
    names.write_text("name\nРемонт кровли\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--input", str(names)])
    assert "'label' required" in str(exc.value.code)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--input", str(names), "--model", "challenger"])
    assert "no model version or alias 'challenger'" in str(exc.value.code)


def test_predict_command_on_a_name_only_csv(registered: Path, classifier: Classifier) -> None:
    source = registered / "names.csv"
    names = ["Ремонт кровли", "Кабель ВВГ 3x2,5", "Услуги по уборке помещений"]
    pd.DataFrame({"name": names}).to_csv(source, index=False)
    target = registered / "out.csv"
    main(["predict", "--input", str(source), "--output", str(target)])
    out = pd.read_csv(target, keep_default_na=False)
    assert out["name"].tolist() == names
    assert list(out.columns) == [
        "name", "label", "confidence", "probability_product", "probability_service", "explanation",
        "model_version",
    ]  # fmt: skip
    expected = classifier.predict([{"name": n} for n in names], top_k=2, explain=0)
    assert out["label"].tolist() == [p.label for p in expected]
    assert out["confidence"].tolist() == pytest.approx([p.confidence for p in expected], abs=1e-6)
    assert (out["model_version"] == classifier.version).all()

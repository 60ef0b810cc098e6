"""Offline batch prediction: CSV of items in, CSV of predictions out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from models.classifier import Classifier, Prediction

# Item fields (schemas/nomenclature_item.avsc) the featurizer can use; other input columns are ignored.
ITEM_FIELDS = ("id", "name", "full_name", "kind", "unit", "type_hint", "okved_code", "hs_code")
CHUNK_ROWS = 20_000
EXPLAIN_TOKENS = 3


def format_explanation(explanation: list[tuple[str, float]]) -> str:
    return " ".join(f"{token}:{weight:+.2f}" for token, weight in explanation)


def predict_csv(input_csv: Path, output_csv: Path, classifier: Classifier, explain: bool) -> int:
    """Classify every row of `input_csv` (needs a `name` column) into `output_csv`; returns the row count.

    Output columns: id (when the input has one), name, label, confidence, probability_<label> per class,
    explanation ('token:+0.42 token2:+0.10', empty without `explain`), model_version.
    """
    written = 0
    output_csv = Path(output_csv)
    for number, chunk in enumerate(read_item_chunks(input_csv)):
        items = items_from_frame(chunk)
        predictions = classifier.predict(
            items, top_k=len(classifier.labels), explain=EXPLAIN_TOKENS if explain else 0
        )
        out = _output_frame(chunk, predictions, classifier)
        out.to_csv(output_csv, mode="w" if number == 0 else "a", header=number == 0, index=False)
        written += len(out)
    if written == 0:
        columns = ["name", "label", "confidence", *(f"probability_{label}" for label in classifier.labels)]
        pd.DataFrame(columns=[*columns, "explanation", "model_version"]).to_csv(output_csv, index=False)
    return written


def read_item_chunks(
    input_csv: Path, required: tuple[str, ...] = ("name",), chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The CSV's rows in chunks, every cell a string (blank cells ''); checks the `required` columns."""
    chunks = pd.read_csv(input_csv, dtype=str, keep_default_na=False, chunksize=chunk_rows)
    for chunk in chunks:
        missing = [column for column in required if column not in chunk.columns]
        if missing:
            raise ValueError(
                f"{input_csv}: column(s) {', '.join(repr(c) for c in missing)} required, "
                f"found {list(chunk.columns)}"
            )
        yield chunk


def items_from_frame(chunk: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as stream-like items: the ITEM_FIELDS columns present, blank cells as None."""
    fields = [field for field in ITEM_FIELDS if field in chunk.columns]
    records = chunk[fields].to_dict("records")
    # Blank cells mean "not given", as None does in the stream's items.
    return [{key: (value if value != "" else None) for key, value in record.items()} for record in records]


def _output_frame(chunk: pd.DataFrame, predictions: list[Prediction], classifier: Classifier) -> pd.DataFrame:
    out = pd.DataFrame(index=chunk.index)
    if "id" in chunk.columns:
        out["id"] = chunk["id"]
    out["name"] = chunk["name"]
    out["label"] = [p.label for p in predictions]
    out["confidence"] = [round(p.confidence, 6) for p in predictions]
    for label in classifier.labels:
        out[f"probability_{label}"] = [round(p.probabilities[label], 6) for p in predictions]
    out["explanation"] = [format_explanation(p.explanation) for p in predictions]
    out["model_version"] = classifier.version
    return out

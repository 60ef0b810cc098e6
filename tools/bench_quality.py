"""Benchmark: classification quality per source of real names, and of the bundled validation split.

    python -m tools.bench_quality [--dev ../shared/data/dev/dev_items.csv] [--models new=shipped old=VERSION]
                                  [--registry DIR] [--json]

Each model is scored on every row of the dev set (id,name,label,source: real price lists and catalogues,
never trained or selected on) and on the bundled dataset's validation split. Per `source` of the dev set,
for the whole dev set and for the validation split: rows, accuracy, macro-F1, service recall, product
precision, ECE (10 bins), the share of predictions with confidence ≥ 0.95 and their accuracy. Then, on the
dev set, the share of names holding a word whose explanation's top entry is one of its words (not a number
or a unit), and the scoring cost in µs per item with explanations (featurize + MLP + occlusion, one
process, no cache).

Models: ``shipped`` (models/default/), ``champion`` / ``challenger`` / a version of the registry at
``--registry`` (default: <NOMENCLATURE_DATA_DIR>/models), or a model file (``.npz``). By default the shipped
model and, when the registry has one, the champion's predecessor ("previous champion"). A model the running
featurizer cannot load (a release before a featurizer change) is compared through its predictions:
``--write-validation val.csv``, then with that release ``nomenclature predict --explain`` on the dev set and
on val.csv, then ``--predictions previous=dev_pred.csv:val_pred.csv``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.classifier import Classifier
from models.features.lexical_cues import UNIT_TOKENS
from models.features.text_normalization import normalize_words
from models.training.metrics import confident_accuracy, expected_calibration_error, macro_f1

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEV = ROOT.parent / "shared" / "data" / "dev" / "dev_items.csv"
LABELS = ["product", "service"]
_NUMBER_OR_UNIT = re.compile(r"[\d.,x×х*/-]*\d[\d.,x×х*/-]*[a-zа-я]{0,4}")


def load_model(spec: str, registry_dir: Path) -> Classifier:
    from models.registry import default_model, model_files
    from models.registry.model_registry import ModelRegistry

    if spec == "shipped":
        model = default_model.shipped()
        if model is None:
            raise SystemExit("no shipped model in models/default/")
        return model.classifier()
    if spec.endswith(".npz"):
        return model_files.loads(Path(spec).read_bytes())
    return ModelRegistry(registry_dir).load(spec)


def default_models(registry_dir: Path) -> dict[str, str]:
    from models.registry.model_registry import ModelRegistry

    models = {"shipped": "shipped"}
    registry = ModelRegistry(registry_dir)
    history = registry.champion_history() if registry.index_path.is_file() else []
    if len(history) >= 2:
        models["previous champion"] = history[-2]
    return models


def metrics(y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray) -> dict[str, Any]:
    correct = y_true == y_pred
    services, said_product = y_true == "service", y_pred == "product"
    return {
        "n": len(y_true),
        "accuracy": float(correct.mean()),
        "macro_f1": macro_f1(y_true, y_pred, LABELS) if len(set(y_true.tolist())) > 1 else None,
        "service_recall": float(correct[services].mean()) if services.any() else None,
        # None where it says nothing: no product predicted, or a source of services only
        "product_precision": (
            float((y_true[said_product] == "product").mean())
            if said_product.any() and (y_true == "product").any()
            else None
        ),
        "ece": expected_calibration_error(confidence, correct),
        **confident_accuracy(confidence, correct),
    }


def score(classifier: Classifier, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    proba = classifier.predict_proba(classifier.featurizer.transform([{"name": n} for n in names]))
    return np.asarray(classifier.labels)[proba.argmax(axis=1)], proba.max(axis=1)


def explanation_report(classifier: Classifier, names: list[str]) -> dict[str, Any]:
    """Names with a word: share whose explanation's top entry is a word of the name; and µs per item."""
    items = [{"name": n} for n in names]
    fresh = Classifier(
        classifier.model, classifier.featurizer, classifier.version, temperature=classifier.temperature
    )
    fresh.featurizer._reset_caches()
    started = time.perf_counter()
    predictions = fresh.predict(items, explain=3)
    seconds = time.perf_counter() - started
    with_word = named = 0
    for name, prediction in zip(names, predictions, strict=True):
        words = [w for w in normalize_words(name) if _is_word(w)]
        if not words:
            continue
        with_word += 1
        top = prediction.explanation[0][0] if prediction.explanation else None
        named += top in words
    return {
        "names_with_a_word": with_word,
        "top_entry_is_a_word": named / with_word if with_word else None,
        "us_per_item_with_explanations": seconds / len(items) * 1e6,
    }


def _is_word(word: str) -> bool:
    return (
        any(ch.isalpha() for ch in word) and word not in UNIT_TOKENS and not _NUMBER_OR_UNIT.fullmatch(word)
    )


def validation_rows(data_dir: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    from models.training.train import bundled_dataset

    dataset = bundled_dataset(data_dir / "datasets")
    frames = [
        pq.read_table(p, columns=["name", "label", "split"]).to_pandas()
        for p in sorted(dataset.glob("*.parquet"))
    ]
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame["split"] == "validation"].reset_index(drop=True)


def report(classifier: Classifier, dev: pd.DataFrame, validation: pd.DataFrame) -> dict[str, Any]:
    result = summary(
        dev,
        *score(classifier, dev["name"].tolist()),
        validation,
        *score(classifier, validation["name"].tolist()),
    )
    result.update({"version": classifier.version, "temperature": classifier.temperature})
    result["explanations"] = explanation_report(classifier, dev["name"].tolist())
    return result


def summary(
    dev: pd.DataFrame,
    predicted: np.ndarray,
    confidence: np.ndarray,
    validation: pd.DataFrame,
    val_predicted: np.ndarray,
    val_confidence: np.ndarray,
) -> dict[str, Any]:
    truth = dev["label"].to_numpy()
    sources = {}
    for source in sorted(dev["source"].unique()):
        rows = (dev["source"] == source).to_numpy()
        sources[source] = metrics(truth[rows], predicted[rows], confidence[rows])
    return {
        "sources": sources,
        "dev": metrics(truth, predicted, confidence),
        "bundled_validation": metrics(validation["label"].to_numpy(), val_predicted, val_confidence),
    }


def report_of_predictions(spec: str, dev: pd.DataFrame, validation: pd.DataFrame) -> dict[str, Any]:
    """The report of predictions another release wrote (`nomenclature predict --explain`): DEV.csv:VAL.csv,
    row for row the dev set and the `--write-validation` file. For a model the running featurizer cannot
    load, such as the champion of a release before a featurizer change."""
    dev_file, _, val_file = spec.partition(":")
    dev_pred, val_pred = (
        pd.read_csv(dev_file, keep_default_na=False),
        pd.read_csv(val_file, keep_default_na=False),
    )
    for frame, truth, file in ((dev_pred, dev, dev_file), (val_pred, validation, val_file)):
        if frame["name"].tolist() != truth["name"].tolist():
            raise SystemExit(f"{file}: its rows are not those of the dev set / validation split, in order")
    result = summary(
        dev, dev_pred["label"].to_numpy(), dev_pred["confidence"].to_numpy(float),
        validation, val_pred["label"].to_numpy(), val_pred["confidence"].to_numpy(float),
    )  # fmt: skip
    result.update({"version": str(dev_pred["model_version"].iloc[0]), "temperature": None})
    with_word = named = 0
    for name, explanation in zip(dev["name"], dev_pred["explanation"], strict=True):
        words = [w for w in normalize_words(name) if _is_word(w)]
        if words:
            with_word += 1
            named += bool(explanation) and explanation.split()[0].rsplit(":", 1)[0] in words
    result["explanations"] = {
        "names_with_a_word": with_word,
        "top_entry_is_a_word": named / with_word if with_word else None,
        "us_per_item_with_explanations": None,
    }
    return result


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    columns = (
        "n",
        "accuracy",
        "macro_f1",
        "service_recall",
        "product_precision",
        "ece",
        "confident_accuracy",
    )
    names = list(results)
    print(f"{'rows':<28} {'model':<18} " + " ".join(f"{c[:12]:>12}" for c in columns))
    first = results[names[0]]
    for group in [*first["sources"], "dev", "bundled_validation"]:
        for name in names:
            r = results[name]
            row = r["sources"].get(group) if group in r["sources"] else r[group]
            print(f"{group[:28]:<28} {name[:18]:<18} " + " ".join(f"{_fmt(row.get(c)):>12}" for c in columns))
    print()
    for name in names:
        e, r = results[name]["explanations"], results[name]
        cost = e["us_per_item_with_explanations"]
        print(
            f"{name}: {r['version']} (T={_fmt(r['temperature'])})  explanations name a word for "
            f"{_fmt(e['top_entry_is_a_word'])} of {e['names_with_a_word']} names"
            + (f", {cost:.0f} µs/item with explanations (cold caches)" if cost is not None else "")
        )


def main(argv: list[str] | None = None) -> None:
    from streams.settings import Settings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV)
    parser.add_argument(
        "--models", nargs="+", metavar="NAME=SPEC", help="default: shipped (+ previous champion)"
    )
    parser.add_argument("--registry", type=Path)
    parser.add_argument(
        "--predictions",
        nargs="+",
        default=[],
        metavar="NAME=DEV.csv:VAL.csv",
        help="also report predictions an older release wrote with `nomenclature predict --explain`",
    )
    parser.add_argument(
        "--write-validation",
        type=Path,
        metavar="CSV",
        help="write the bundled validation split (name,label) and stop",
    )
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    registry_dir = args.registry or settings.models_dir
    if not args.dev.is_file():
        raise SystemExit(f"{args.dev}: no such file (the dev set lives in ../shared/data/dev/)")
    specs = (
        dict(s.split("=", 1) if "=" in s else (s, s) for s in args.models)
        if args.models
        else default_models(registry_dir)
    )
    validation = validation_rows(settings.data_dir)
    if args.write_validation:
        validation[["name", "label"]].to_csv(args.write_validation, index=False)
        print(f"wrote {len(validation)} rows to {args.write_validation}")
        return
    dev = pd.read_csv(args.dev, dtype=str, keep_default_na=False)
    results = {name: report(load_model(spec, registry_dir), dev, validation) for name, spec in specs.items()}
    for item in args.predictions:
        name, _, spec = item.partition("=")
        results[name] = report_of_predictions(spec, dev, validation)
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    else:
        print_table(results)
        print(
            json.dumps(
                {
                    name: {"dev_macro_f1": r["dev"]["macro_f1"], "dev_ece": r["dev"]["ece"]}
                    for name, r in results.items()
                }
            )
        )


if __name__ == "__main__":
    main()

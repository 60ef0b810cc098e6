"""Build the shipped default champion (models/default/) from the bundled dataset and ../shared/data/train.

    python -m tools.build_default_model [--extra ../shared/data/train] [--output models/default] [--check]

Trains like `nomenclature train --extra …` (seed 42, one BLAS thread) in a scratch data directory, then
writes ``model.npz``, ``model.json`` and ``baseline.json`` (see `models.registry.default_model`). The
model's version is ``mlp-default-<first 8 hex of its weights digest>``, not a timestamp, so the same code
and data give the same bytes. ``--check`` builds into a scratch directory and compares the new
``model.npz``'s sha256 with the shipped one (exit 1 when they differ).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from models.registry.default_model import BASELINE_FILE, DEFAULT_DIR, MODEL_FILE, RECORD_FILE, shipped

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXTRA = ROOT.parent / "shared" / "data" / "train"
COMMAND = "python -m tools.build_default_model --extra ../shared/data/train"
SEED = 42
# Figures that differ from run to run (timings, paths): left out of model.json so it is reproducible too.
_VOLATILE = (
    "featurize_seconds", "fit_seconds", "train_seconds", "peak_rss_mb", "rows_per_s_per_epoch",
    "blas_threads",
)  # fmt: skip


def build(extra: list[Path], output: Path, scratch: Path) -> dict[str, Any]:
    from models.classifier import Classifier
    from models.datasets.extra_sources import extended_dataset
    from models.drift.baseline import BASELINE_METRIC
    from models.registry import model_files
    from models.training.train import bundled_dataset, registry_data, train_dataset, weights_digest

    datasets = scratch / "datasets"
    dataset = extended_dataset(bundled_dataset(datasets), extra, datasets, seed=SEED)
    trained, metrics = train_dataset(dataset, seed=SEED, feature_root=scratch / "features", blas_threads=1)
    digest = weights_digest(trained.model, trained.featurizer, trained.temperature)
    classifier = Classifier(
        trained.model, trained.featurizer, f"mlp-default-{digest[:8]}", temperature=trained.temperature
    )
    payload = model_files.dumps(classifier)
    data_sha256, data_rows = registry_data(metrics)
    baseline = metrics.pop(BASELINE_METRIC)
    record = {
        "version": classifier.version,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "featurizer_version": classifier.featurizer_version,
        "featurizer": classifier.featurizer.params(),
        "temperature": classifier.temperature,
        "data_sha256": data_sha256,
        "data_rows": data_rows,
        "command": COMMAND,
        "metrics": _portable(metrics),
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / MODEL_FILE).write_bytes(payload)
    (output / BASELINE_FILE).write_bytes(baseline if isinstance(baseline, bytes) else baseline.encode())
    (output / RECORD_FILE).write_text(
        json.dumps(record, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return record


def _portable(metrics: dict[str, Any]) -> dict[str, Any]:
    metrics = {k: v for k, v in metrics.items() if k not in _VOLATILE}
    dataset = dict(metrics.get("dataset") or {})
    for key in ("feature_store", "path"):
        dataset.pop(key, None)
    metrics["dataset"] = dataset
    metrics["history"] = [
        {k: e[k] for k in ("epoch", "loss", "val_macro_f1")} for e in metrics.get("history", [])
    ]
    return json.loads(json.dumps(metrics, default=_plain))


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", type=Path, help=f"default: {DEFAULT_EXTRA}")
    parser.add_argument("--output", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--check", action="store_true", help="rebuild in a scratch dir and compare sha256")
    args = parser.parse_args(argv)
    extra = args.extra or [DEFAULT_EXTRA]
    with tempfile.TemporaryDirectory(prefix="nomenclature-default-") as scratch:
        output = Path(scratch) / "out" if args.check else args.output
        record = build(extra, output, Path(scratch))
    print(json.dumps({k: record[k] for k in ("version", "sha256", "featurizer_version", "temperature")}))
    if args.check:
        current = shipped(args.output)
        if current is None or current.record["sha256"] != record["sha256"]:
            found = current.record["sha256"] if current else "nothing"
            print(f"differs: shipped {found}, rebuilt {record['sha256']}", file=sys.stderr)
            raise SystemExit(1)
        print(f"identical to the shipped {current.record['version']}")


if __name__ == "__main__":
    main()

"""Ablation: what each part of the featurizer and of the training data brings, and what it costs.

    python -m tools.ablation [--extra ../shared/data/train] [--dev ../shared/data/dev/dev_items.csv]
                             [--variants NAME ...] [--max-epochs 30]

Each variant is trained like the default model (`models.training.train.train_dataset`, seed 42, one BLAS
thread, epoch chosen on the validation split, temperature fitted there), in a scratch data directory, and
measured by `tools.bench_quality` on the dev set (which only measures: nothing is chosen on it here
either, the table is for people) and on the bundled validation split. Cost: µs per item to featurize,
score and explain with cold caches in one process, and the training time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tools.bench_quality import DEFAULT_DEV, report, validation_rows
from tools.build_default_model import DEFAULT_EXTRA

# name: (morphology, embeddings, extra data)
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "hashed words only": (False, False, False),
    "+ extra data": (False, False, True),
    "+ extra, morphology": (True, False, True),
    "+ extra, embeddings": (False, True, True),
    "+ extra, both (default)": (True, True, True),
}


def run(name: str, extra: list[Path], dev: pd.DataFrame, max_epochs: int, scratch: Path) -> dict[str, Any]:
    from models.datasets.extra_sources import extended_dataset
    from models.features.featurizer import Featurizer
    from models.training.train import bundled_dataset, train_dataset

    morphology, embeddings, with_extra = VARIANTS[name]
    datasets = scratch / "datasets"
    dataset = bundled_dataset(datasets)
    if with_extra:
        dataset = extended_dataset(dataset, extra, datasets)
    started = time.perf_counter()
    classifier, metrics = train_dataset(
        dataset,
        seed=42,
        max_epochs=max_epochs,
        feature_root=scratch / "features",
        progress=False,
        blas_threads=1,
        featurizer=Featurizer(morphology=morphology, embeddings=embeddings),
    )
    result = report(classifier, dev, validation_rows(scratch))
    result["train_seconds"] = time.perf_counter() - started
    result["best_epoch"] = metrics["best_epoch"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--extra", action="append", type=Path)
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--max-epochs", type=int, default=30)
    args = parser.parse_args(argv)
    dev = pd.read_csv(args.dev, dtype=str, keep_default_na=False)
    results = {}
    with tempfile.TemporaryDirectory(prefix="nomenclature-ablation-") as scratch:
        for name in args.variants:
            results[name] = run(name, args.extra or [DEFAULT_EXTRA], dev, args.max_epochs, Path(scratch))
            r = results[name]
            print(
                f"{name:<26} dev macro-F1 {r['dev']['macro_f1']:.4f}  dev ECE {r['dev']['ece']:.3f}  "
                f"bundled val macro-F1 {r['bundled_validation']['macro_f1']:.4f}  "
                f"{r['explanations']['us_per_item_with_explanations']:.0f} µs/item  "
                f"train {r['train_seconds']:.0f}s (best epoch {r['best_epoch']})",
                flush=True,
            )
    header = ["variant", "dev macro-F1", "dev accuracy", "service recall", "dev ECE", "bundled val macro-F1",
              "explained by a word", "µs/item", "train s"]  # fmt: skip
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, r in results.items():
        cells = [
            name, r["dev"]["macro_f1"], r["dev"]["accuracy"], r["dev"]["service_recall"], r["dev"]["ece"],
            r["bundled_validation"]["macro_f1"], r["explanations"]["top_entry_is_a_word"],
            r["explanations"]["us_per_item_with_explanations"], r["train_seconds"],
        ]  # fmt: skip
        print(
            "| "
            + " | ".join(c if isinstance(c, str) else f"{c:.3f}" if c < 10 else f"{c:.0f}" for c in cells)
            + " |"
        )
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()

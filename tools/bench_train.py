"""Benchmark: training throughput and memory at scale, from parquet shards through the feature store.

    python -m tools.bench_train [--rows 1000000 10000000] [--epochs 1] [--cache DIR] [--seed 42]

For each size:

1. a synthetic scale set of that many rows (`models.datasets.scale_set`, sampled and perturbed training names)
   in ``<cache>/scale-<rows>-seed<seed>``, reused when present;
2. its features materialised to the feature store (``<cache>/features``) in a child process, reused when
   already complete: featurisation rows/s (parquet read + featurize + parquet write) and peak RSS;
3. training for ``--epochs`` epochs in another child process (`models.training.train.train_dataset`, validated
   on the bundled dataset's validation split): rows/s per epoch (reading chunks from the store, shuffling
   and ``partial_fit``; not the validation pass) and the child's peak RSS (``ru_maxrss`` from ``wait4``).

Then the peak-RSS ratio between the largest and smallest size: ≈ 1 when memory does not grow with rows.
Output: a table, then one JSON line with every figure. Cache default: ``<NOMENCLATURE_DATA_DIR>/bench-train``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# ---- child processes ----------------------------------------------------------------------------


def child_featurise(dataset: Path, features: Path, validation: Path | None) -> dict[str, Any]:
    from models.features.featurizer import Featurizer
    from models.training.feature_store import dataset_ref, is_complete, materialise, store_path

    featurizer = Featurizer()
    ref = dataset_ref(dataset)
    reused = is_complete(store_path(features, featurizer.version, ref.version), featurizer, ref)
    started = time.perf_counter()
    store = materialise(dataset, features, featurizer, progress=True)
    seconds = time.perf_counter() - started
    if validation is not None:
        materialise(validation, features, featurizer, progress=True)
    return {
        "rows": ref.rows,
        "reused": reused,
        "seconds": round(seconds, 2),
        "rows_per_s": None if reused else round(ref.rows / seconds, 1),
        "store": str(store.path),
        "store_bytes": sum(p.stat().st_size for p in store.path.glob("part-*.parquet")),
    }


def child_train(
    dataset: Path, features: Path, validation: Path | None, epochs: int, seed: int
) -> dict[str, Any]:
    from models.training.train import train_dataset

    _, metrics = train_dataset(
        dataset,
        seed=seed,
        max_epochs=epochs,
        patience=epochs,
        feature_root=features,
        validation_dir=validation,
        progress=True,
    )
    return {
        "rows": metrics["train_size"],
        "epochs": [
            {"epoch": h["epoch"], "seconds": h["seconds"], "rows_per_s": h["rows_per_s"]}
            for h in metrics["history"]
        ],
        "rows_per_s_per_epoch": round(metrics["rows_per_s_per_epoch"], 1),
        "val_macro_f1": metrics["macro_f1"],
        "val_accuracy": metrics["accuracy"],
        "peak_rss_mb_self": metrics["peak_rss_mb"],
    }


def run_child(args: list[str]) -> tuple[dict[str, Any], float]:
    """Run `python -m tools.bench_train --child …`; (its JSON result, its peak RSS in MB from wait4)."""
    command = [sys.executable, "-m", "tools.bench_train", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed with exit code {process.returncode}")
    return json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


# ---- the benchmark ------------------------------------------------------------------------------


def ensure_scale_set(cache: Path, rows: int, seed: int) -> Path:
    from models.datasets.scale_set import build_scale_set

    out = cache / f"scale-{rows}-seed{seed}"
    manifest = out / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["rows"] == rows:
        print(f"scale set of {rows:,} rows: reusing {out}", file=sys.stderr, flush=True)
        return out
    started = time.perf_counter()
    print(f"scale set of {rows:,} rows: building {out}", file=sys.stderr, flush=True)
    build_scale_set(rows, out, seed=seed)
    print(f"  built in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    return out


def bench_size(cache: Path, rows: int, epochs: int, seed: int, validation: Path) -> dict[str, Any]:
    dataset = ensure_scale_set(cache, rows, seed)
    common = [
        "--dataset",
        str(dataset),
        "--features",
        str(cache / "features"),
        "--validation",
        str(validation),
    ]
    featurise, featurise_rss = run_child(["--child", "featurise", *common])
    trained, train_rss = run_child(
        ["--child", "train", *common, "--epochs", str(epochs), "--seed", str(seed)]
    )
    return {
        "rows": rows,
        "featurise": featurise | {"peak_rss_mb": round(featurise_rss, 1)},
        "train": trained | {"peak_rss_mb": round(train_rss, 1)},
    }


def report(results: list[dict[str, Any]]) -> dict[str, Any]:
    print(
        f"\n{'rows':>12} {'featurise rows/s':>17} {'featurise RSS':>14} "
        f"{'train rows/s/epoch':>19} {'train RSS':>10} {'val macro-F1':>13}"
    )
    for r in results:
        f, t = r["featurise"], r["train"]
        featurise_rate = f"{f['rows_per_s']:,.0f}" if f["rows_per_s"] else "(cached)"
        print(
            f"{r['rows']:>12,} {featurise_rate:>17} {f['peak_rss_mb']:>11,.0f} MB "
            f"{t['rows_per_s_per_epoch']:>19,.0f} {t['peak_rss_mb']:>7,.0f} MB {t['val_macro_f1']:>13.4f}"
        )
    summary: dict[str, Any] = {"sizes": results}
    if len(results) > 1:
        small, large = min(results, key=lambda r: r["rows"]), max(results, key=lambda r: r["rows"])
        summary["train_peak_rss_ratio"] = round(
            large["train"]["peak_rss_mb"] / small["train"]["peak_rss_mb"], 3
        )
        if not (small["featurise"]["reused"] or large["featurise"]["reused"]):
            ratio = large["featurise"]["peak_rss_mb"] / small["featurise"]["peak_rss_mb"]
            summary["featurise_peak_rss_ratio"] = round(ratio, 3)
        print(
            f"\npeak RSS {large['rows']:,} rows / {small['rows']:,} rows: training "
            f"{summary['train_peak_rss_ratio']:.3f}"
            + (
                f", featurisation {summary['featurise_peak_rss_ratio']:.3f}"
                if "featurise_peak_rss_ratio" in summary
                else ""
            )
        )
    print(json.dumps(summary, ensure_ascii=False))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache", help="default: <NOMENCLATURE_DATA_DIR>/bench-train")
    parser.add_argument("--child", choices=["featurise", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--features", help=argparse.SUPPRESS)
    parser.add_argument("--validation", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        validation = Path(args.validation) if args.validation else None
        if args.child == "featurise":
            result = child_featurise(Path(args.dataset), Path(args.features), validation)
        else:
            result = child_train(Path(args.dataset), Path(args.features), validation, args.epochs, args.seed)
        print(json.dumps(result, ensure_ascii=False), flush=True)
        return

    from models.training.train import bundled_dataset
    from streams.settings import Settings

    cache = (Path(args.cache) if args.cache else Settings.from_env().data_dir / "bench-train").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    validation = bundled_dataset(cache / "datasets", seed=args.seed)
    results = [bench_size(cache, rows, args.epochs, args.seed, validation) for rows in sorted(args.rows)]
    report(results)


if __name__ == "__main__":
    main()

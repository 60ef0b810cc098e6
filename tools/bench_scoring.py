"""Benchmark: the scoring process's work per item, in this process, without a broker.

    python -m tools.bench_scoring [--items 10000] [--batch 500] [--cold] [--profile]

`Pipeline.score` (decode, validation, featurizer, MLP, occlusion explanations, Avro encode, drift bins) on
`tools.bench`'s records, micro-batch after micro-batch, with one BLAS thread and the garbage collector settled
(`streams.pipeline.gc_pauses`) as in the scoring processes.
By default the model has already scored one cycle of the records' names without explanations (a running
worker's word caches) and the measured items are ones the explanation cache has not (their units differ);
``--cold`` starts with empty caches. Prints CPU µs per item; ``--profile`` also prints where they go
(cProfile, cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import pstats
import tempfile
import time
from pathlib import Path

from models.registry.model_registry import ModelRegistry
from streams.pipeline import gc_pauses
from streams.pipeline.messages import RawMessage
from streams.pipeline.micro_batch import Models
from streams.pipeline.scoring import build_pipeline, limit_native_threads
from streams.settings import Settings
from streams.topics import RAW
from tools.bench import make_records
from tools.common import BUNDLED_DATA, ensure_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--cold", action="store_true", help="empty word caches (every name new)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the measured run")
    args = parser.parse_args()

    limit_native_threads()
    settings = Settings.from_env(data_dir=Path(tempfile.mkdtemp(prefix="nomenclature-bench-scoring-")))
    ensure_model(settings)
    registry = ModelRegistry(settings.models_dir)
    models = Models(registry.load(), registry.load_baseline())
    pipeline = build_pipeline(settings)
    with BUNDLED_DATA.open(encoding="utf-8") as handle:
        cycle = sum(1 for _ in csv.DictReader(handle))  # make_records repeats the names with this period
    skip = 0 if args.cold else cycle
    records = make_records(skip + args.items)
    messages = [RawMessage(RAW, 0, i, None, key, value) for i, (key, value) in enumerate(records)]
    warm = [pipeline.item_serde.decode(m.value) for m in messages[:skip]]
    for start in range(0, len(warm), args.batch):  # the word caches and word rows, not the explanations
        models.champion.predict(warm[start : start + args.batch], explain=0)
    measured = messages[skip:]
    gc_pauses.settle()  # as a scoring process does once it has loaded

    profile = cProfile.Profile() if args.profile else None
    started = time.process_time()
    if profile is not None:
        profile.enable()
    for start in range(0, len(measured), args.batch):
        pipeline.score(measured[start : start + args.batch], models)
    if profile is not None:
        profile.disable()
    cpu = time.process_time() - started
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    caches = "cold caches" if args.cold else "warm word cache"
    print(
        f"scoring: {cpu / len(measured) * 1e6:.0f} µs CPU per item ({len(measured):,} items in micro-batches "
        f"of {args.batch}, {caches}, explanations {settings.explain_tokens or 'off'})"
    )


if __name__ == "__main__":
    main()

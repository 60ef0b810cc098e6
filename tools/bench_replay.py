"""Benchmark of `nomenclature replay`: planning by time, republishing and reclassifying, in one run.

    python -m tools.bench_replay [--items 100000] [--partitions 8] [--processes <cores>]
                                 [--broker tansu|kafka]

``--items`` items with timestamps spread over one hour are published to ``nomenclature.raw`` of a fresh
broker of ``--broker``'s flavour, the embedded Tansu (default) or Apache Kafka (KRaft, `make kafka`), or of
KAFKA_BOOTSTRAP_SERVERS (NOMENCLATURE_BROKER_FLAVOR says which kind). Then, each timed: a time-bounded
plan of the middle half (checked against the timestamps the benchmark wrote), a republish of the whole
topic to another topic, and a reclassification of it with the champion (trained on the bundled data into a
temporary registry if NOMENCLATURE_MODELS_DIR has none) in ``--processes`` scoring processes, with
explanations and without.
Prints records/s of each and their ratios to the republish rate (the cost of reading and writing alone).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from connectors.kafka_io import ensure_topic
from connectors.replay import RECLASSIFY, REPUBLISH, ReplayPlan, run_replay
from connectors.topic_range import Bound, plan_ranges
from models.registry.model_registry import ModelRegistry
from schemas import AvroSerde, LocalCatalogue
from streams.pipeline.micro_batch import Models
from streams.pipeline.scoring import Scorer, build_pipeline
from streams.settings import Settings
from streams.topics import RAW, REJECTED, TOPICS
from tools.broker import FLAVORS, local_broker
from tools.common import BUNDLED_DATA, ensure_model, run_sync

SPAN_MS = 3_600_000
START_MS = 1_790_000_000_000


def stamp(i: int, n: int) -> int:
    return START_MS + i * SPAN_MS // n


async def publish(bootstrap: str, n: int, partitions: int) -> None:
    with BUNDLED_DATA.open(encoding="utf-8") as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    serde = AvroSerde(LocalCatalogue(), TOPICS[RAW].subject, TOPICS[RAW].schema)
    await ensure_topic(bootstrap, RAW, partitions, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = []
        for i in range(n):
            name = names[i % len(names)]
            item = {"id": f"r-{i}", "name": f"{name} {i}", "full_name": name}
            futures.append(
                await producer.send(
                    RAW, serde.encode(item), key=item["id"].encode(), partition=i % partitions,
                    timestamp_ms=stamp(i, n),
                )
            )  # fmt: skip
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="scoring processes")
    parser.add_argument("--broker", choices=FLAVORS, default="tansu", help="the broker this run starts")
    args = parser.parse_args()
    n = args.items
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as scratch:
        broker = None
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            broker = local_broker(args.broker).start()
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
            os.environ["NOMENCLATURE_BROKER_FLAVOR"] = broker.flavor
        os.environ.setdefault("NOMENCLATURE_DATA_DIR", str(Path(scratch) / "data"))
        try:
            run(Settings.from_env(), n, args.partitions, args.processes)
        finally:
            if broker is not None:
                broker.stop()


def run(settings: Settings, n: int, partitions: int, processes: int) -> None:
    bootstrap = settings.bootstrap_servers
    flavor = "tansu" if settings.is_tansu else "kafka"
    print(f"broker: {flavor} at {bootstrap}")
    ensure_model(settings)
    classifier = ModelRegistry(settings.models_dir).load()
    started = time.perf_counter()
    run_sync(publish(bootstrap, n, partitions))
    print(f"published {n:,} items in {time.perf_counter() - started:.1f} s")

    low, high = stamp(n // 4, n), stamp(3 * n // 4, n)
    started = time.perf_counter()
    ranges = run_sync(plan_ranges(bootstrap, RAW, start=Bound(time_ms=low), stop=Bound(time_ms=high)))
    plan_seconds = time.perf_counter() - started
    selected = sum(r.records for r in ranges)
    expected = sum(1 for i in range(n) if low <= stamp(i, n) < high)
    assert selected == expected, (selected, expected)
    print(
        f"time-bounded plan: {selected:,} of {n:,} records selected (expected {expected:,}) in "
        f"{plan_seconds:.2f} s; bounds {ranges[0].found_by}"
    )

    whole = run_sync(plan_ranges(bootstrap, RAW))
    results = {}
    copy = ReplayPlan(REPUBLISH, RAW, "bench.replay.copy", whole)
    run_sync(ensure_topic(bootstrap, copy.target, partitions, 1))
    results["republish"] = run_sync(run_replay(bootstrap, copy, progress=False)).as_dict()
    for label, tokens in (("reclassify", settings.explain_tokens), ("reclassify, no explanations", 0)):
        target = f"nomenclature.backfill.bench{tokens}"
        for topic in (target, REJECTED):
            run_sync(ensure_topic(bootstrap, topic, partitions, 1))
        scoring = dataclasses.replace(settings, explain_tokens=tokens, scoring_processes=processes)
        plan = ReplayPlan(RECLASSIFY, RAW, target, whole, classifier.version)
        models = Models(classifier)
        scorer = Scorer(scoring, build_pipeline(scoring), models)
        summary = run_sync(run_replay(bootstrap, plan, scorer=scorer, models=models, progress=False))
        results[label] = summary.as_dict()
        assert summary.written.get(target) == n, summary.as_dict()
    base = results["republish"]["records_per_s"]
    for label, summary in results.items():
        rate = summary["records_per_s"]
        print(f"{label:<28} {summary['records_read']:>9,} records {summary['seconds']:>8.2f} s "
              f"{rate:>10,.0f} records/s  ratio to republish {rate / base:.3f}")  # fmt: skip
    report = {"items": n, "broker": flavor, "plan_seconds": round(plan_seconds, 3), "runs": results}
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()

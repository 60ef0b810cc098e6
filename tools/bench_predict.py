"""Benchmark of ``POST /predict``: latency by concurrency, 429s under overload, priority, the stream's share.

    python -m tools.bench_predict [--seconds 8] [--items-per-request 10] [--stream-items 15000]
                                  [--broker tansu|kafka]

One worker (``nomenclature worker``, the /predict settings from the environment or their defaults) on a
broker of its own (the embedded Tansu, or Apache Kafka with ``--broker kafka``; KAFKA_BOOTSTRAP_SERVERS
names another), the shipped default model.

1. Latency: 1, 10 and 100 concurrent clients (aiohttp), each sending requests of ``--items-per-request``
   items one after the other for ``--seconds``; p50 / p99 of answered requests, requests/s, and the share
   answered 429 (a refused client tries again after 50 ms). 100 clients are more than the queue holds
   (NOMENCLATURE_PREDICT_QUEUE_SIZE, 64): that phase is the overload.
2. Priority: bursts of requests, half rich (full name, kind, unit, codes) and half poor (a bare name),
   shuffled, fewer than the queue holds; mean and p50 queue wait (``timing.queued_ms``) of each kind.
3. The stream's share: ``--stream-items`` items drained by the stream alone (after 2,000 to warm it up),
   then as many again while 10 clients keep /predict busy; items/s of each, and the share of the time
   /predict's requests were scoring.

Every item's name ends with a number of its own, so that no phase is served from the explanations an
earlier one left in the classifier's cache: the figures are those of names not seen before.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from schemas import AvroSerde, LocalCatalogue
from streams.settings import Settings
from streams.topics import RAW, TOPICS, ensure_topics
from tools.bench import http_json, percentile, publish, worker_env
from tools.broker import FLAVORS, bench_broker, free_port
from tools.common import BUNDLED_DATA, ensure_model, run_sync

ROOT = Path(__file__).resolve().parent.parent
RETRY_PAUSE = 0.05


def names() -> list[str]:
    with BUNDLED_DATA.open(encoding="utf-8") as handle:
        return [row["name"] for row in csv.DictReader(handle)]


def poor_item(name: str, n: int) -> dict[str, Any]:
    return {"id": f"poor-{n}", "name": name, "full_name": name}


def rich_item(name: str, n: int) -> dict[str, Any]:
    return {
        "id": f"rich-{n}",
        "name": name,
        "full_name": f"{name}, поставка по договору",
        "kind": "Товар",
        "unit": "шт",
        "okved_code": "47.11",
        "hs_code": "8471300000",
        "country": "RU",
    }


def plain_item(name: str, n: int) -> dict[str, Any]:
    return {"id": f"p-{n}", "name": name, "full_name": name, "unit": "шт"}


Request = Callable[[int], list[dict[str, Any]]]


def requests_of(kind: str, tag: str, all_names: list[str], k: int) -> Request:
    """The i-th request of `k` items of a kind; each name ends with a number of its own (`tag` keeps
    phases apart), so that no phase finds the explanations of another in the classifier's cache."""
    make = {"plain": plain_item, "rich": rich_item, "poor": poor_item}[kind]

    def request(i: int) -> list[dict[str, Any]]:
        numbers = range(i * k, (i + 1) * k)
        short = 40 if kind == "poor" else 200
        return [make(f"{all_names[n % len(all_names)][:short]} {tag}{n}", n) for n in numbers]

    return request


@dataclass
class Answers:
    latencies: list[float] = field(default_factory=list)  # seconds, answered (200) requests
    statuses: dict[int, int] = field(default_factory=dict)
    queued_ms: list[float] = field(default_factory=list)
    scoring_ms: list[float] = field(default_factory=list)

    def add(self, status: int, seconds: float, body: dict[str, Any]) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies.append(seconds)
            self.queued_ms.append(body["timing"]["queued_ms"])
            self.scoring_ms.append(body["timing"]["scoring_ms"])

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


async def post(
    session: aiohttp.ClientSession, url: str, items: list[dict[str, Any]]
) -> tuple[int, float, Any]:
    started = time.perf_counter()
    async with session.post(url, json={"items": items}) as response:
        body = await response.json()
        return response.status, time.perf_counter() - started, body


async def clients(
    url: str,
    count: int,
    seconds: float,
    requests: Request,
    stop: asyncio.Event | None = None,
) -> Answers:
    """`count` clients, each posting the next of `requests` as soon as its last one is answered, for
    `seconds` or until `stop` is set."""
    answers = Answers()
    deadline = time.perf_counter() + seconds
    stop = stop or asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=300)
    ) as session:

        async def client(n: int) -> None:
            i = n
            while time.perf_counter() < deadline and not stop.is_set():
                status, took, body = await post(session, url, requests(i))
                answers.add(status, took, body)
                i += count
                if status == 429:
                    await asyncio.sleep(RETRY_PAUSE)

        await asyncio.gather(*(client(n) for n in range(count)))
    return answers


async def bursts(url: str, rounds: int, size: int, rich: Request, poor: Request) -> dict[str, Any]:
    """`rounds` bursts of `size` requests, half rich and half poor, shuffled; queue waits of each kind."""
    waits: dict[str, list[float]] = {"rich": [], "poor": []}
    refused = 0
    rng = random.Random(7)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for r in range(rounds):
            kinds = ["rich", "poor"] * (size // 2)
            rng.shuffle(kinds)

            async def one(kind: str, i: int) -> tuple[str, int, Any]:
                status, _, body = await post(session, url, (rich if kind == "rich" else poor)(i))
                return kind, status, body

            sent = (one(kind, r * size + n) for n, kind in enumerate(kinds))
            for kind, status, body in await asyncio.gather(*sent):
                if status == 200:
                    waits[kind].append(body["timing"]["queued_ms"])
                else:
                    refused += 1
    return {"waits": waits, "refused": refused}


def stream_done(port: int) -> int:
    try:
        return http_json(port, "/stats")["topics"].get(RAW, {}).get("in", 0)
    except OSError:
        return 0


def drain_rate(port: int, bootstrap: str, ids: str, n: int, all_names: list[str]) -> float:
    """Publish `n` items (ids `ids`-0…) and return the stream's items/s from its first to its last one."""
    serde = AvroSerde(LocalCatalogue(), TOPICS[RAW].subject, TOPICS[RAW].schema)
    before = stream_done(port)
    records = []
    for i in range(n):
        item = plain_item(f"{all_names[(i * 13) % len(all_names)]} {ids}{i}", i) | {"id": f"{ids}-{i}"}
        records.append((item["id"].encode(), serde.encode(item)))
    run_sync(publish(bootstrap, RAW, records))
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + 600
    while True:
        done = stream_done(port) - before
        now = time.perf_counter()
        if first is None and done > 0:
            first = (now, done)
        if done >= n:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stream drained {done} of {n} items in 600 s")
        time.sleep(0.1)
    assert first is not None
    return (n - first[1]) / max(now - first[0], 1e-6)


def start_worker(
    settings: Settings, bootstrap: str, flavor: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = worker_env(settings, bootstrap, flavor, port, "bench-predict")
    worker = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while True:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if http_json(port, "/health").get("assignment"):
                return worker
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("worker not ready in 300 s")
        time.sleep(0.5)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def run(
    settings: Settings, bootstrap: str, flavor: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    all_names = names()
    k = args.items_per_request
    rich = requests_of("rich", "r", all_names, k)
    poor = requests_of("poor", "q", all_names, k)
    ensure_model(settings)
    run_sync(ensure_topics(bootstrap, settings.partitions, 1))
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    worker = start_worker(settings, bootstrap, flavor, port, tmp / "worker.log")
    report: dict[str, Any] = {
        "broker": flavor,
        "cores": os.cpu_count(),
        "items_per_request": k,
        "queue_size": settings.predict_queue_size,
        "predict_workers": settings.predict_workers,
        "share": settings.predict_share,
        "scoring_processes": settings.scoring_processes,
    }
    try:
        run_sync(
            clients(url, 2, 2.0, requests_of("plain", "w", all_names, k))
        )  # warm-up: the scoring process, the featurizer's caches
        print(
            f"broker: {flavor}; /predict with {k} items a request, queue {settings.predict_queue_size}, "
            f"{settings.predict_workers} predict worker(s), share {settings.predict_share}",
            flush=True,
        )
        report["latency"] = {}
        for count in (1, 10, 100):
            answers = run_sync(
                clients(url, count, args.seconds, requests_of("plain", f"c{count}-", all_names, k))
            )
            served = answers.latencies
            refused = answers.statuses.get(429, 0)
            row = {
                "clients": count,
                "requests": answers.total,
                "answered_per_s": round(len(served) / args.seconds, 1),
                "p50_ms": ms(statistics.median(served)),
                "p99_ms": ms(percentile(served, 0.99)),
                "rate_429": round(refused / max(answers.total, 1), 3),
                "statuses": answers.statuses,
                "scoring_p50_ms": round(statistics.median(answers.scoring_ms), 1),
            }
            report["latency"][count] = row
            overload = " (overload: more than the queue holds)" if count > settings.predict_queue_size else ""
            print(
                f"{count:>3} clients: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                f"{row['answered_per_s']} answered/s, 429 rate {row['rate_429']:.1%}{overload}; "
                f"scoring p50 {row['scoring_p50_ms']} ms",
                flush=True,
            )

        size = min(60, settings.predict_queue_size) // 2 * 2
        burst = run_sync(bursts(url, 3, size, rich, poor))
        rich_waits, poor_waits = burst["waits"]["rich"], burst["waits"]["poor"]
        report["priority"] = {
            "burst": size,
            "rounds": 3,
            "refused": burst["refused"],
            "rich_mean_ms": round(statistics.fmean(rich_waits), 1),
            "rich_p50_ms": round(statistics.median(rich_waits), 1),
            "poor_mean_ms": round(statistics.fmean(poor_waits), 1),
            "poor_p50_ms": round(statistics.median(poor_waits), 1),
        }
        p = report["priority"]
        print(
            f"priority, 3 bursts of {size} (half rich, half poor): queue wait rich mean "
            f"{p['rich_mean_ms']} / p50 {p['rich_p50_ms']} ms, poor mean {p['poor_mean_ms']} / p50 "
            f"{p['poor_p50_ms']} ms",
            flush=True,
        )

        n = args.stream_items
        drain_rate(port, bootstrap, "warm", 2000, all_names)  # the stream's first batches, tables, producer
        alone = drain_rate(port, bootstrap, "alone", n, all_names)

        async def loaded() -> tuple[float, float, Answers]:
            stop = asyncio.Event()
            started = time.perf_counter()
            load = asyncio.create_task(clients(url, 10, 3600, requests_of("plain", "s", all_names, k), stop))
            await asyncio.sleep(2.0)
            rate = await asyncio.to_thread(drain_rate, port, bootstrap, "loaded", n, all_names)
            stop.set()
            answers = await load
            return rate, time.perf_counter() - started, answers

        with_predict, elapsed, answers = run_sync(loaded())
        report["stream"] = {
            "items": n,
            "alone_items_per_s": round(alone),
            "with_predict_items_per_s": round(with_predict),
            "ratio": round(with_predict / alone, 3),
            "predict_answered_per_s": round(len(answers.latencies) / elapsed, 1),
            # of the load's wall time, the share /predict's requests spent scoring (in the scoring process)
            "predict_scoring_share": round(sum(answers.scoring_ms) / 1000 / elapsed, 3),
        }
        s = report["stream"]
        print(
            f"stream alone: {s['alone_items_per_s']:,} items/s; with 10 /predict clients: "
            f"{s['with_predict_items_per_s']:,} items/s (ratio {s['ratio']}); /predict meanwhile "
            f"{s['predict_answered_per_s']} answered/s, scoring {s['predict_scoring_share']:.0%} of the time "
            f"(share {settings.predict_share})",
            flush=True,
        )
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(30)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of each latency phase")
    parser.add_argument("--items-per-request", type=int, default=10)
    parser.add_argument("--stream-items", type=int, default=15_000)
    parser.add_argument("--broker", choices=FLAVORS, default="tansu", help="the broker this run starts")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nomenclature-bench-predict-"))
    settings = Settings.from_env(data_dir=tmp / "worker")
    broker, bootstrap, flavor = bench_broker(args.broker, settings)
    try:
        print(json.dumps(run(settings, bootstrap, flavor, args, tmp), default=str))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

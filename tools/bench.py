"""Benchmark: raw → classified throughput next to a same-run ceiling, and end-to-end latency.

    python -m tools.bench [--items 100000] [--load 0.5 | --rate N] [--seconds 20] [--broker tansu|kafka]
                          [--latency-items same|new-words] [--offer-linger-ms 5]
                          [--peers faust,aiokafka,quix | all | none] [--peer-items 20000]

1. Throughput: ``--items`` Avro items are published to ``nomenclature.raw``, then one worker
   (``nomenclature worker``) drains the backlog; items/s = items / (last − first ``classified_at``).
2. Ceiling, same run, same broker, same records: a Faust agent that only consumes (no decode,
   no work, no output) drains an identical backlog; items/s from its first to its last record.
3. Latency at a load users run at: with the worker caught up, items are offered at ``--load`` (0.5) of the
   capacity measured in 1. (or at ``--rate`` per second) for ``--seconds``; latency = when a consumer of
   ``nomenclature.classified`` receives the result − the input record's timestamp (set by the producer at
   send). p50 / p99 / max, the p99 of each 5 s of the phase (does latency hold as the phase goes on?) and
   the cores the worker, its scoring processes, the broker and this process (the phase's producer and
   reader) kept busy meanwhile. The producer gathers what is offered within ``--offer-linger-ms`` (5, Apache
   Kafka 4's default ``linger.ms`` and ``nomenclature produce``'s) into one request, as users' producers do;
   the timestamp is taken when an item is offered, so the wait counts in its latency. The items continue
   the sequence the capacity was measured on (``--latency-items same``), or each carry a new word
   (``new-words``).
4. CPU per item, same run (Linux /proc): the ceiling agent's process and the broker while it drains; the
   worker, its scoring processes and the broker while the worker drains. With the machine's cores this
   bounds what any pipeline of that CPU cost per item can reach, whatever its concurrency.
5. Peers, same run, same broker, same records (the ceiling's copy), after the ceiling (``--peers``, default
   all; `tools.bench_peers`): the same work — the project's pipeline and champion, validation, dead letters,
   every output produced, at-least-once — done the plain way of a framework, each in a process of its own
   with a consumer group of its own: ``faust`` (an agent, one message and one ``send()`` per output at a
   time), ``aiokafka`` (a ``getmany`` batch loop without Faust: score, produce, await the acks, commit) and
   ``quix`` (a Quix Streams StreamingDataFrame, per message; ``pip install -e '.[bench]'``). Each drains the
   first ``--peer-items`` records (20,000; the per-message peers drain about 200 a second) and prints
   items/s (first record received to last processed) and its process's CPU µs per item; the broker's CPU
   is measured while each drains. The peers keep the item table (the duplicate check) in memory, with no
   changelog: they do less than the worker, which writes RocksDB and a changelog record per item.

Starts a broker of its own, ``--broker``: the embedded Tansu (default) or Apache Kafka (KRaft, from
`make kafka`'s jars); with KAFKA_BOOTSTRAP_SERVERS set it uses that one (NOMENCLATURE_BROKER_FLAVOR says
which kind it is). Prints the broker it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import AvroSerde, LocalCatalogue
from streams.runtime.broker_quirks import fetched_end_offsets
from streams.runtime.topic_metadata import topic_partitions
from streams.runtime.topic_reader import read_topic
from streams.settings import Settings
from streams.topics import CLASSIFIED, RAW, TOPICS, ensure_topics
from tools.bench_peers import (
    MISSING_QUIX,
    OUTPUT_PREFIX,
    PeerConfig,
    PeerFailed,
    output_topics,
    parse_peers,
    quix_available,
    run_peer,
)
from tools.broker import FLAVORS, bench_broker, free_port
from tools.common import BUNDLED_DATA, ensure_model, run_sync

CEILING_TOPIC = "bench.ceiling"
LATENCY_SLICE = 5  # seconds of the latency phase per reported p99
LATENCY_PREFIX = "lat-"  # the latency phase's ids
LATENCY_ITEMS = ("same", "new-words")
OFFER_LINGER_MS = 5  # the latency phase's producer: Apache Kafka 4's linger.ms default (KIP-1030), and ours
ROOT = Path(__file__).resolve().parent.parent


def make_records(n: int, start: int = 0, prefix: str = "b-") -> list[tuple[bytes, bytes]]:
    """Items `start` … `start + n - 1` of the benchmark's sequence (names of the bundled dataset, over and
    over, each time with another full name and unit), with ids `prefix` + their number from 0."""
    with BUNDLED_DATA.open(encoding="utf-8") as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    serde = AvroSerde(LocalCatalogue(), TOPICS[RAW].subject, TOPICS[RAW].schema)
    units = ["шт", "кг", "усл. ед.", "м", None]
    records = []
    for number, i in enumerate(range(start, start + n)):
        item = {
            "id": f"{prefix}{number}",
            "name": names[i % len(names)],
            "full_name": names[(i * 7) % len(names)],
            "unit": units[i % len(units)],
            "country": "RU",
            "source": "bench",
        }
        records.append((item["id"].encode(), serde.encode(item)))
    return records


async def publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if name not in await admin.list_topics():
            await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def ceiling_worker(bootstrap: str, topic: str, n: int, data_dir: str, flavor: str) -> None:
    """Run in a child process: a consume-only Faust agent; prints CEILING <items/s> after n records."""
    import faust

    from streams.runtime import broker_quirks

    broker_quirks.apply(flavor == "tansu", bootstrap)
    app = faust.App(
        f"bench-ceiling-{os.getpid()}",
        broker=f"kafka://{bootstrap}",
        datadir=data_dir,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        **broker_quirks.faust_settings(flavor == "tansu"),
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    state = {"n": 0, "t0": 0.0, "cpu0": 0.0}

    @app.agent(source)
    async def count(stream: faust.StreamT) -> None:
        async for _value in stream:
            if state["n"] == 0:
                state["t0"] = time.perf_counter()
                state["cpu0"] = time.process_time()
            state["n"] += 1
            if state["n"] >= n:
                rate = (n - 1) / (time.perf_counter() - state["t0"])
                cpu_us = (time.process_time() - state["cpu0"]) / (n - 1) * 1e6
                print(f"CEILING {rate:.1f} {cpu_us:.2f}", flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def run_ceiling(bootstrap: str, flavor: str, n: int, tmp: Path) -> tuple[float, float]:
    """(items/s, CPU µs per item of the ceiling agent's process)."""
    cmd = [
        sys.executable,
        "-m",
        "tools.bench",
        "--ceiling-worker",
        bootstrap,
        CEILING_TOPIC,
        str(n),
        str(tmp / "ceiling"),
        flavor,
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    for line in out.stdout.splitlines() + out.stderr.splitlines():
        if "CEILING" in line:
            rate, cpu_us = line.rsplit("CEILING", 1)[1].split()[:2]
            return float(rate), float(cpu_us)
    raise RuntimeError(f"ceiling worker failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def run_peers(
    names: list[str],
    bootstrap: str,
    flavor: str,
    n: int,
    settings: Settings,
    tmp: Path,
    broker_pids: list[int],
) -> dict[str, dict]:
    """Each peer in turn on the ceiling's records: {name: {items_per_s, cpu_us_per_item: {process, broker}}},
    or {name: {error}} for one that could not run."""
    results: dict[str, dict] = {}
    for name in names:
        if name == "quix" and not quix_available():
            print(f"peer quix skipped: {MISSING_QUIX}", flush=True)
            results[name] = {"error": MISSING_QUIX}
            continue
        print(f"peer {name}: draining the ceiling's {n:,} records…", flush=True)
        group = f"bench-peer-{name}-{os.getpid()}-{int(time.time())}"
        config = PeerConfig(
            name,
            bootstrap,
            CEILING_TOPIC,
            n,
            str(tmp / f"peer-{name}"),
            flavor,
            str(settings.models_dir),
            group,
        )
        broker_before = cpu_seconds(broker_pids)
        try:
            result = run_peer(config, tmp / f"peer-{name}.log")
        except PeerFailed as exc:
            print(f"peer {name} failed: {exc}", flush=True)
            results[name] = {"error": str(exc)[-1000:]}
            continue
        broker_us = (cpu_seconds(broker_pids) - broker_before) / n * 1e6
        results[name] = {
            "items_per_s": round(result.items_per_s),
            "cpu_us_per_item": {"process": round(result.cpu_us_per_item, 1), "broker": round(broker_us, 1)},
        }
    return results


def peer_lines(peers: dict[str, dict], throughput: float, pipeline_cpu: float) -> list[str]:
    """The summary's line per peer, beside ours."""
    lines = []
    for name, found in peers.items():
        if "error" in found:
            lines.append(f"peer {name}: did not run ({found['error'].splitlines()[0]})")
            continue
        rate, cpu = found["items_per_s"], found["cpu_us_per_item"]
        total = cpu["process"] + cpu["broker"]
        lines.append(
            f"peer {name}: {rate:,} items/s (ours: {throughput / rate:.2f}× that)  |  CPU per item process "
            f"{cpu['process']:.0f} + broker {cpu['broker']:.0f} = {total:.0f} µs (ours {pipeline_cpu:.0f} µs)"
        )
    return lines


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc; 0 where unreadable)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the worker's scoring processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def http_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


async def classified_times(bootstrap: str) -> list[int]:
    """``classified_at`` of every record on nomenclature.classified, epoch millis."""
    return [
        int(record["value"]["classified_at"].timestamp() * 1000)
        async for record in read_topic(bootstrap, CLASSIFIED, LocalCatalogue())
    ]


class Latency(NamedTuple):
    """One latency-phase item, ms: input timestamp → result read, and of that, input → scored; and when in
    the phase it was offered (s)."""

    total: float
    to_scored: float
    offered: float


def latency_records(kind: str, n: int, after: int) -> list[tuple[bytes, bytes]]:
    """The latency phase's `n` items, ids ``lat-0`` …: ``same``, the sequence the capacity was measured on,
    continued after its first `after` items (so that half the capacity is half of it for these items too);
    ``new-words``, each a name with a number no cache has seen (a new word and a new explanation each)."""
    if kind == "same":
        return make_records(n, start=after, prefix=LATENCY_PREFIX)
    serde = AvroSerde(LocalCatalogue(), TOPICS[RAW].subject, TOPICS[RAW].schema)
    records = []
    for i in range(n):
        item = {"id": f"{LATENCY_PREFIX}{i}", "name": f"Ремонт насоса {i}", "full_name": f"Ремонт насоса {i}"}
        records.append((item["id"].encode(), serde.encode(item)))
    return records


async def measure_latency(
    bootstrap: str, rate: int, seconds: int, records: list[tuple[bytes, bytes]], linger_ms: int
) -> list[Latency]:
    """Offer `rate` of `records` a second for `seconds`, through a producer that lingers `linger_ms`; per
    item, its latency in ms (input timestamp, taken when it is offered, so the linger counts → result read)
    and the part before its ``classified_at`` (set where it was scored)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    await consumer.start()
    tps = await topic_partitions(consumer, [CLASSIFIED])
    consumer.assign(tps)
    for tp, end in (await fetched_end_offsets(bootstrap, tps)).items():
        consumer.seek(tp, end)
    classified = AvroSerde(LocalCatalogue(), TOPICS[CLASSIFIED].subject, TOPICS[CLASSIFIED].schema)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await producer.start()
    total = rate * seconds
    latencies: list[Latency] = []
    prefix = LATENCY_PREFIX.encode()

    async def offer() -> None:
        started = time.perf_counter()
        for i, (key, value) in enumerate(records[:total]):
            ahead = i / rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            await producer.send(RAW, value, key=key, timestamp_ms=int(time.time() * 1000))
        await producer.flush()

    async def receive() -> None:
        deadline = time.monotonic() + seconds + 60
        while len(latencies) < total and time.monotonic() < deadline:
            for fetched in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time() * 1000
                for r in fetched:
                    if r.key.startswith(prefix):
                        scored = classified.decode(r.value)["classified_at"].timestamp() * 1000
                        offered = int(r.key[len(prefix) :]) / rate
                        latencies.append(Latency(now - r.timestamp, scored - r.timestamp, offered))

    try:
        await asyncio.gather(offer(), receive())
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def worker_env(settings: Settings, bootstrap: str, flavor: str, port: int, app_id: str) -> dict[str, str]:
    """The environment of a benchmark's `nomenclature worker`: this broker, a data dir and web port of its
    own, warnings only in its log."""
    return dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NOMENCLATURE_BROKER_FLAVOR=flavor,
        NOMENCLATURE_DATA_DIR=str(settings.data_dir),
        NOMENCLATURE_WEB_PORT=str(port),
        NOMENCLATURE_APP_ID=app_id,
        NOMENCLATURE_LOG_LEVEL="warn",
    )


def latency_slices(latencies: list[Latency], seconds: int) -> list[float]:
    """p99 of the items offered in each LATENCY_SLICE seconds of the phase, in order: whether latency holds
    or grows as the phase goes on (on Tansu a partition's fetch cost grows with its record batches)."""
    slices: list[list[float]] = [[] for _ in range(max(1, -(-seconds // LATENCY_SLICE)))]
    for one in latencies:
        slices[min(len(slices) - 1, int(one.offered // LATENCY_SLICE))].append(one.total)
    return [round(percentile(totals, 0.99), 1) for totals in slices if totals]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--ceiling-worker":
        _, _, bootstrap, topic, n, data_dir, flavor = sys.argv
        ceiling_worker(bootstrap, topic, int(n), data_dir, flavor)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument(
        "--load", type=float, default=0.5, help="latency phase: offered rate, a share of capacity"
    )
    parser.add_argument("--rate", type=int, help="latency phase: offered items/s (instead of --load)")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--latency-items",
        choices=LATENCY_ITEMS,
        default="same",
        help="latency phase: the capacity phase's sequence continued (same), or a new word in every name",
    )
    parser.add_argument(
        "--offer-linger-ms",
        type=int,
        default=OFFER_LINGER_MS,
        help="latency phase: how long the offering producer gathers records into one request "
        "(5, Apache Kafka 4's producer default and `nomenclature produce`'s; 0, a request per record)",
    )
    parser.add_argument("--broker", choices=FLAVORS, default="tansu", help="the broker this run starts")
    parser.add_argument(
        "--peers",
        default="all",
        help="peers run after the ceiling: a comma list of faust, aiokafka, quix; all; none",
    )
    parser.add_argument(
        "--peer-items",
        type=int,
        default=20_000,
        help="records each peer drains (at most --items; the per-message peers drain ≈ 200 a second)",
    )
    args = parser.parse_args()
    try:
        peer_names = parse_peers(args.peers)
    except ValueError as exc:
        parser.error(str(exc))

    tmp = Path(tempfile.mkdtemp(prefix="nomenclature-bench-"))
    settings = Settings.from_env(data_dir=tmp / "worker")
    broker, bootstrap, flavor = bench_broker(args.broker, settings)
    worker = None
    try:
        local_models = Path(".nomenclature/models")
        if local_models.exists():
            shutil.copytree(local_models, settings.models_dir)
        ensure_model(settings)
        run_sync(ensure_topics(bootstrap, settings.partitions, 1))
        for topic in [CEILING_TOPIC, *(t for name in peer_names for t in output_topics(OUTPUT_PREFIX, name))]:
            run_sync(create_topic(bootstrap, topic, settings.partitions))
        records = make_records(args.items)
        print(f"publishing {args.items:,} items twice (pipeline input and ceiling input)…", flush=True)
        run_sync(publish(bootstrap, RAW, records))
        run_sync(publish(bootstrap, CEILING_TOPIC, records))

        broker_pids = [broker.process.pid] if broker is not None and broker.process is not None else []
        broker_cpu = cpu_seconds(broker_pids)
        print(f"broker: {flavor} at {bootstrap}", flush=True)
        ceiling, ceiling_cpu_us = run_ceiling(bootstrap, flavor, args.items, tmp)
        ceiling_broker_us = (cpu_seconds(broker_pids) - broker_cpu) / args.items * 1e6
        print(f"ceiling (consume-only Faust agent): {ceiling:,.0f} items/s", flush=True)
        peer_items = max(1, min(args.items, args.peer_items))
        peers = run_peers(peer_names, bootstrap, flavor, peer_items, settings, tmp, broker_pids)

        port = free_port()
        env = worker_env(settings, bootstrap, flavor, port, "bench")
        log = (tmp / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 900
        first: tuple[int, float, float, float] | None = None  # items done, worker, scoring, broker CPU
        while True:
            time.sleep(0.5)
            if worker.poll() is not None:
                tail = (tmp / "worker.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker exited:\n{tail}")
            try:
                done = http_json(port, "/stats")["topics"].get(RAW, {}).get("in", 0)
            except OSError:
                done = 0
            if first is None and done > 0:
                first = (
                    done,
                    cpu_seconds([worker.pid]),
                    cpu_seconds(children(worker.pid)),
                    cpu_seconds(broker_pids),
                )
            if done >= args.items:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("worker too slow")
        assert first is not None
        drained = max(done - first[0], 1)
        worker_us, scoring_us, broker_us = (
            (cpu_seconds(pids) - before) / drained * 1e6
            for pids, before in (
                ([worker.pid], first[1]),
                (children(worker.pid), first[2]),
                (broker_pids, first[3]),
            )
        )
        times = run_sync(classified_times(bootstrap))
        throughput = (len(times) - 1) / ((max(times) - min(times)) / 1000)
        stats = http_json(port, "/stats")

        rate = args.rate or max(1, round(args.load * throughput))
        print(f"offering {rate:,} items/s for {args.seconds}s (latency phase)…", flush=True)
        phase_pids = ([worker.pid], children(worker.pid), broker_pids, [os.getpid()])
        phase_before = [cpu_seconds(pids) for pids in phase_pids]
        phase_started = time.monotonic()
        offered = latency_records(args.latency_items, rate * args.seconds, args.items)
        latencies = run_sync(measure_latency(bootstrap, rate, args.seconds, offered, args.offer_linger_ms))
        phase_seconds = time.monotonic() - phase_started
        worker_cores, scoring_cores, broker_cores, bench_cores = (
            (cpu_seconds(pids) - before) / phase_seconds
            for pids, before in zip(phase_pids, phase_before, strict=True)
        )
        by_slice = latency_slices(latencies, args.seconds)
        lost = rate * args.seconds - len(latencies)
        totals = [one.total for one in latencies]
        to_scored = [one.to_scored for one in latencies]
        result = {
            "items": args.items,
            "broker": flavor,
            "pipeline_items_per_s": round(throughput),
            "ceiling_items_per_s": round(ceiling),
            "ratio": round(throughput / ceiling, 3),
            "latency_rate_per_s": rate,
            "latency_items_kind": args.latency_items,
            "latency_offer_linger_ms": args.offer_linger_ms,
            "latency_load": round(rate / throughput, 3),
            "latency_items": len(latencies),
            "latency_missing": lost,
            "latency_p50_ms": round(statistics.median(totals), 1),
            "latency_p99_ms": round(percentile(totals, 0.99), 1),
            "latency_max_ms": round(max(totals), 1),
            "latency_to_scored_p50_ms": round(statistics.median(to_scored), 1),
            "latency_to_scored_p99_ms": round(percentile(to_scored, 0.99), 1),
            f"latency_p99_by_{LATENCY_SLICE}s_ms": by_slice,
            "latency_phase_cores": {
                "worker": round(worker_cores, 2),
                "scoring": round(scoring_cores, 2),
                "broker": round(broker_cores, 2),
                "load_generator": round(bench_cores, 2),
            },
            "worker_batches": stats["batches"],
            "cores": os.cpu_count(),
            "cpu_us_per_item": {
                "ceiling_agent": round(ceiling_cpu_us, 1),
                "ceiling_broker": round(ceiling_broker_us, 1),
                "pipeline_worker": round(worker_us, 1),
                "pipeline_scoring": round(scoring_us, 1),
                "pipeline_broker": round(broker_us, 1),
            },
            "peers": peers,
        }
        pipeline_cpu = worker_us + scoring_us + broker_us
        cores = os.cpu_count() or 1
        print(
            f"pipeline raw→classified: {throughput:,.0f} items/s  |  ceiling: {ceiling:,.0f} items/s  |  "
            f"ratio {throughput / ceiling:.2f} (target ≥ 0.50)"
        )
        print(
            f"latency at {rate:,} items/s ({rate / throughput:.0%} of capacity, {args.latency_items} items) "
            f"for {args.seconds}s, offered with a {args.offer_linger_ms} ms linger: "
            f"p50 {result['latency_p50_ms']} ms, "
            f"p99 {result['latency_p99_ms']} ms (target < 100), max {result['latency_max_ms']} ms; "
            f"of which input → scored p50 {result['latency_to_scored_p50_ms']} ms, "
            f"p99 {result['latency_to_scored_p99_ms']} ms"
        )
        print(
            f"  p99 by {LATENCY_SLICE} s of the phase: {' / '.join(f'{p:.0f}' for p in by_slice)} ms; "
            f"cores busy meanwhile: worker {worker_cores:.2f}, scoring {scoring_cores:.2f}, "
            f"broker {broker_cores:.2f}, this benchmark's producer and reader {bench_cores:.2f} "
            f"(of {os.cpu_count()})"
        )
        print(
            f"CPU per item: ceiling agent {ceiling_cpu_us:.0f} µs + broker {ceiling_broker_us:.0f} µs  |  "
            f"pipeline worker {worker_us:.0f} + scoring {scoring_us:.0f} + broker {broker_us:.0f} = "
            f"{pipeline_cpu:.0f} µs; on {cores} cores at most {cores / pipeline_cpu * 1e6:,.0f} items/s "
            f"(ratio ≤ {cores / pipeline_cpu * 1e6 / ceiling:.2f}); ratio 0.50 needs ≤ "
            f"{cores / (0.5 * ceiling) * 1e6:.0f} µs"
        )
        for line in peer_lines(peers, throughput, pipeline_cpu):
            print(line)
        print(json.dumps(result))
    finally:
        stop_run(worker, broker, tmp)


def stop_run(worker: subprocess.Popen[bytes] | None, broker: Any, tmp: Path) -> None:
    """End a benchmark's worker and the broker it started (None: one it was given), remove its scratch."""
    if worker is not None and worker.poll() is None:
        worker.terminate()
        worker.wait(30)
    if broker is not None:
        broker.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Peers of the pipeline in the stream benchmark (``python -m tools.bench --peers …``, issue 18).

Each peer does the worker's work on the same records, with the same model, validation and outputs, in a
framework's plain way, so that ``tools.bench`` prints what ours costs beside theirs:

* ``faust``: a Faust agent that scores each message by itself and awaits one ``send()`` per output
  record (no micro-batches); Faust commits acknowledged offsets after flushing its producer.
* ``aiokafka``: a loop without Faust: ``getmany`` a batch, score it, produce its outputs, wait for every
  produce acknowledgement, then commit the batch's offsets (at-least-once).
* ``quix``: a Quix Streams application (``pip install -e '.[bench]'``): a StreamingDataFrame whose
  ``apply`` scores each message and expands into its output records, ``to_topic`` picking each record's
  topic; at-least-once processing (its checkpoints flush the producer, then commit).

The work is the project's own: ``streams.pipeline.scoring.build_pipeline`` and the registry's champion,
``Pipeline.process`` on `RawMessage`s (decode, validation, features, MLP, occlusion explanations, Avro
encode, duplicate check, dead letters), every output record produced. A peer does less than the worker
in one respect: it keeps the item table (the duplicate check's memory) in a dict in memory, with no
changelog topic, where the worker writes RocksDB and a changelog record per item. Its outputs go to
``bench.peer.<name>.classified|rejected|shadow``, apart from ``nomenclature.*``.

Each peer runs in a process of its own (``python -m tools.bench_peers NAME …``), reads its input from the
earliest offset with a consumer group of its own, applies the broker quirks the worker applies on Tansu
(`streams.runtime.broker_quirks`), and after ``n`` records prints ``PEER <name> <items/s> <CPU µs/item>``:
items/s from receiving the first record to the last record's outputs handed to the producer (the aiokafka
loop: acknowledged), CPU of the whole process over the same interval.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

PEERS = ("faust", "aiokafka", "quix")
OUTPUT_PREFIX = "bench.peer"
ROOT = Path(__file__).resolve().parent.parent
MISSING_QUIX = "quixstreams is not installed: pip install -e '.[bench]'"


class PeerConfig(NamedTuple):
    """What a peer process is told: which peer, where its input is, how many records, where to put things."""

    name: str
    bootstrap: str
    topic: str
    n: int
    data_dir: str
    flavor: str  # tansu | kafka: the quirks to apply
    models_dir: str
    group: str  # its consumer group
    prefix: str = OUTPUT_PREFIX  # its output topics: <prefix>.<name>.classified|rejected|shadow


class PeerResult(NamedTuple):
    items_per_s: float
    cpu_us_per_item: float


class PeerFailed(RuntimeError):
    """A peer process ended without its result; the message holds the end of its output."""


def output_topic(prefix: str, name: str, topic: str) -> str:
    """The peer's topic for a pipeline output: nomenclature.classified → <prefix>.<name>.classified."""
    return f"{prefix}.{name}.{topic.rsplit('.', 1)[-1]}"


def output_topics(prefix: str, name: str) -> list[str]:
    from streams.topics import CLASSIFIED, REJECTED, SHADOW

    return [output_topic(prefix, name, topic) for topic in (CLASSIFIED, REJECTED, SHADOW)]


def quix_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("quixstreams") is not None


# ---- the peers' shared work, in the peer process


class PeerWork:
    """The pipeline, the champion and an in-memory item table; `process` turns records into output records."""

    def __init__(self, config: PeerConfig) -> None:
        from models.registry.model_registry import ModelRegistry
        from streams.pipeline.micro_batch import Models
        from streams.pipeline.scoring import build_pipeline, limit_native_threads
        from streams.settings import Settings
        from streams.topics import CLASSIFIED, REJECTED, SHADOW

        limit_native_threads()
        settings = Settings.from_env(data_dir=Path(config.data_dir), models_path=Path(config.models_dir))
        registry = ModelRegistry(settings.models_dir)
        self.settings = settings
        self.models = Models(registry.load(), registry.load_baseline())
        self.pipeline = build_pipeline(settings)
        self.table: dict[tuple[int, str], dict[str, Any]] = {}
        self.topics = {
            topic: output_topic(config.prefix, config.name, topic) for topic in (CLASSIFIED, REJECTED, SHADOW)
        }

    def lookup(self, partition: int, item_id: str) -> dict[str, Any] | None:
        return self.table.get((partition, item_id))

    def process(self, messages: Sequence[Any]) -> list[Any]:
        """`Pipeline.process` on `messages` (RawMessages); the item table updated; the output records, each
        on the peer's topic."""
        result = self.pipeline.process(messages, self.models, self.lookup)
        for update in result.table_updates:
            if update.value is None:
                self.table.pop((update.partition, update.key), None)
            else:
                self.table[(update.partition, update.key)] = json.loads(update.value)
        for record in result.outputs:
            record.topic = self.topics[record.topic]
        return result.outputs


@dataclass
class Meter:
    """Records counted from the first one received; wall and process CPU time over the same span."""

    n: int
    count: int = 0
    started: float = 0.0
    cpu_started: float = 0.0
    ended: float = 0.0
    cpu_ended: float = 0.0

    def start(self) -> None:
        if self.count == 0 and not self.started:
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def add(self, records: int) -> bool:
        """Count `records` done; True once all n are (and the span ends here)."""
        self.count += records
        if self.count >= self.n and not self.ended:
            self.ended, self.cpu_ended = time.perf_counter(), time.process_time()
        return self.count >= self.n

    def report(self, name: str) -> str:
        rate = self.count / max(self.ended - self.started, 1e-9)
        cpu_us = (self.cpu_ended - self.cpu_started) / max(self.count, 1) * 1e6
        return f"PEER {name} {rate:.1f} {cpu_us:.2f}"


def replayed(headers: Iterable[tuple[str, Any]] | None) -> bool:
    """Whether a record carries the replay header (`nomenclature replay`)."""
    from streams.topics import REPLAY_HEADER

    return any(name == REPLAY_HEADER for name, _ in headers or ())


def tansu_consumer_settings(is_tansu: bool) -> dict[str, int]:
    """aiokafka consumer settings the worker's consumer has on Tansu (`broker_quirks`): a 6 s session (the
    first group join takes half of it) and a short fetch wait (Tansu holds a fetch for all of it)."""
    from streams.runtime.broker_quirks import TANSU_FETCH_MAX_WAIT_MS, faust_settings

    if not is_tansu:
        return {}
    faust = faust_settings(True)
    return {
        "session_timeout_ms": int(faust["broker_session_timeout"] * 1000),
        "heartbeat_interval_ms": int(faust["broker_heartbeat_interval"] * 1000),
        "fetch_max_wait_ms": TANSU_FETCH_MAX_WAIT_MS,
    }


def librdkafka_settings(is_tansu: bool) -> dict[str, int]:
    """The same settings in librdkafka's names (the Quix peer)."""
    names = {
        "session_timeout_ms": "session.timeout.ms",
        "heartbeat_interval_ms": "heartbeat.interval.ms",
        "fetch_max_wait_ms": "fetch.wait.max.ms",
    }
    return {names[key]: value for key, value in tansu_consumer_settings(is_tansu).items()}


# ---- the peers


def run_faust(config: PeerConfig) -> None:
    """A Faust agent: one message at a time through the pipeline, one awaited ``send()`` per output."""
    import faust

    from streams.runtime import broker_quirks
    from streams.runtime.events import raw_message

    is_tansu = config.flavor == "tansu"
    broker_quirks.apply(is_tansu, config.bootstrap)
    work = PeerWork(config)
    app = faust.App(
        config.group,
        broker=f"kafka://{config.bootstrap}",
        datadir=str(Path(config.data_dir) / "faust"),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        **broker_quirks.faust_settings(is_tansu),
    )
    source = app.topic(config.topic, key_serializer="raw", value_serializer="raw")
    outputs = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw") for name in work.topics.values()
    }
    meter = Meter(config.n)

    @app.agent(source)
    async def peer(stream: faust.StreamT) -> None:
        async for event in stream.events():
            meter.start()
            for record in work.process([raw_message(event)]):
                await outputs[record.topic].send(
                    key=record.key, value=record.value, timestamp=_seconds(record.timestamp_ms)
                )
            if meter.add(1):
                await stream.ack(event)  # its `async for` would only at the next event
                await app.consumer.commit()  # flushes the producer first
                print(meter.report(config.name), flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def _seconds(timestamp_ms: int | None) -> float | None:
    return None if timestamp_ms is None else timestamp_ms / 1000


async def aiokafka_loop(config: PeerConfig) -> str:
    """getmany → score the batch → produce → await every ack → commit; the report line once n are done."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.pipeline.messages import RawMessage

    work = PeerWork(config)
    consumer = AIOKafkaConsumer(
        config.topic,
        bootstrap_servers=config.bootstrap,
        group_id=config.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **tansu_consumer_settings(config.flavor == "tansu"),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=config.bootstrap, acks="all", linger_ms=2, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    meter = Meter(config.n)
    try:
        while meter.count < config.n:
            batches = await consumer.getmany(timeout_ms=500, max_records=work.settings.batch_size)
            if not batches:
                continue
            meter.start()
            messages = [
                RawMessage(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, replayed(r.headers))
                for records in batches.values()
                for r in records
            ]
            sent = [
                await producer.send(o.topic, o.value, key=o.key, timestamp_ms=o.timestamp_ms)
                for o in work.process(messages)
            ]
            await asyncio.gather(*sent)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
            meter.add(len(messages))
    finally:
        await producer.stop()
        await consumer.stop()
    return meter.report(config.name)


def run_aiokafka(config: PeerConfig) -> None:
    print(asyncio.run(aiokafka_loop(config)), flush=True)


def run_quix(config: PeerConfig) -> None:
    """A Quix Streams application: per message, `apply` scores it and expands into its output records;
    ``to_topic`` sends each to its topic (value: the record's bytes, key: its key, the input's timestamp)."""
    from quixstreams import Application, message_context
    from quixstreams.models.serializers import SerializationContext, Serializer

    from streams.pipeline.messages import OutRecord, RawMessage

    class RecordValue(Serializer):
        """An output record's Avro bytes, as they are."""

        def __call__(self, value: OutRecord, ctx: SerializationContext) -> bytes | None:
            return value.value

    work = PeerWork(config)
    app = Application(
        broker_address=config.bootstrap,
        consumer_group=config.group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        state_dir=str(Path(config.data_dir) / "quix-state"),
        use_changelog_topics=False,
        consumer_extra_config=librdkafka_settings(config.flavor == "tansu"),
        loglevel="WARNING",
    )
    source = app.topic(config.topic, key_deserializer="bytes", value_deserializer="bytes")
    outputs = {
        name: app.topic(name, key_serializer="bytes", value_serializer=RecordValue())
        for name in work.topics.values()
    }
    meter = Meter(config.n)

    def score(value: bytes | None, key: bytes | None, timestamp: int, headers: Any) -> list[OutRecord]:
        meter.start()
        context = message_context()
        message = RawMessage(
            context.topic, context.partition, context.offset, timestamp, key, value, replayed(headers)
        )
        records = work.process([message])
        if meter.add(1):
            app.stop()  # after this message; the final checkpoint flushes the producer, then commits
        return records

    sdf = app.dataframe(source)
    sdf = sdf.apply(score, metadata=True, expand=True)
    sdf.to_topic(lambda record, _key, _ts, _headers: outputs[record.topic], key=lambda record: record.key)
    app.run()
    print(meter.report(config.name), flush=True)


RUNNERS = {"faust": run_faust, "aiokafka": run_aiokafka, "quix": run_quix}


# ---- in the benchmark (or a test): peer processes


def start_peer(config: PeerConfig, log: Path) -> subprocess.Popen[bytes]:
    """The peer's process, its output to `log`."""
    cmd = [sys.executable, "-m", "tools.bench_peers", *map(str, config)]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def peer_result(process: subprocess.Popen[bytes], log: Path, name: str, timeout: float) -> PeerResult:
    """Wait for the peer's process; its result line, or PeerFailed with the end of its output."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    text = log.read_text(errors="replace")
    marker = f"PEER {name} "
    for line in text.splitlines():
        if marker in line:  # Faust's worker logs what its agents print
            rate, cpu_us = line.split(marker, 1)[1].split()[:2]
            return PeerResult(float(rate), float(cpu_us))
    raise PeerFailed(f"peer {name} gave no result (exit code {process.returncode}):\n{text[-3000:]}")


def run_peer(config: PeerConfig, log: Path, timeout: float = 1800) -> PeerResult:
    return peer_result(start_peer(config, log), log, config.name, timeout)


def parse_peers(text: str) -> list[str]:
    """``--peers``: a comma list of PEERS, ``all``, or ``none``."""
    if text.strip() in ("", "none"):
        return []
    if text.strip() == "all":
        return list(PEERS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peers {', '.join(unknown)}: choose from {', '.join(PEERS)}, all or none")
    return list(dict.fromkeys(names))


def main() -> None:
    name, bootstrap, topic, n, data_dir, flavor, models_dir, group, prefix = sys.argv[1:]
    config = PeerConfig(name, bootstrap, topic, int(n), data_dir, flavor, models_dir, group, prefix)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    RUNNERS[name](config)


if __name__ == "__main__":
    main()

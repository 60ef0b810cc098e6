"""`nomenclature replay` on a real broker: range selection by offsets and by time (against the records
themselves as the oracle), dry runs, republishing with the replay header, and reclassification backfills."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from connectors.kafka_io import ensure_topic, topic_partitions
from connectors.topic_range import Bound, PartitionRange, plan_ranges, read_ranges
from models.registry.model_registry import ModelRegistry
from schemas import LocalCatalogue
from streams.runtime.topic_reader import read_topic
from streams.topics import RAW, REJECTED, REPLAY_HEADER
from tests.support import Broker, item_serde, labelled_sample_csv, make_item
from tools import cli
from tools.common import run_sync

PARTITIONS = 3
PER_PARTITION = 30
BASE_MS = 1_790_000_000_000  # 2026-09-21


def timestamp(partition: int, index: int) -> int:
    """Record `index` of `partition`: one a second, partitions 100 ms apart."""
    return BASE_MS + partition * 100 + index * 1000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def _fill(bootstrap: str, topic: str, items: list[list[dict[str, Any]]]) -> None:
    await ensure_topic(bootstrap, topic, PARTITIONS, 1)
    serde = item_serde()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = []
        for partition, rows in enumerate(items):
            for index, item in enumerate(rows):
                futures.append(
                    await producer.send(
                        topic,
                        serde.encode(item),
                        key=item["id"].encode(),
                        partition=partition,
                        timestamp_ms=timestamp(partition, index),
                        headers=[("origin", f"p{partition}".encode())],
                    )
                )
        for future in futures:
            await future
    finally:
        await producer.stop()


def items_for(prefix: str) -> list[list[dict[str, Any]]]:
    names = ["Ремонт кровли", "Картридж HP CF226X", "Аренда помещения", "Кабель ВВГнг 3х2.5"]
    return [
        [make_item(f"{prefix}-{p}-{i}", f"{names[(p + i) % 4]} {p}-{i}") for i in range(PER_PARTITION)]
        for p in range(PARTITIONS)
    ]


@pytest.fixture
def filled(fresh_broker: Broker) -> tuple[Broker, list[list[dict[str, Any]]]]:
    """nomenclature.raw on a broker of its own: 3 partitions of 30 items, a second apart, in many batches."""
    items = items_for("rp")
    run_sync(_fill(fresh_broker.bootstrap, RAW, items))
    return fresh_broker, items


def offsets_read(bootstrap: str, ranges: list[PartitionRange]) -> dict[int, list[int]]:
    async def collect() -> dict[int, list[int]]:
        out: dict[int, list[int]] = {r.partition: [] for r in ranges}
        async for batch in read_ranges(bootstrap, ranges):
            for record in batch:
                out[record.partition].append(record.offset)
        return out

    return run_sync(collect())


def plan(bootstrap: str, start: Bound | None = None, stop: Bound | None = None) -> list[PartitionRange]:
    return run_sync(plan_ranges(bootstrap, RAW, start=start, stop=stop))


def test_selection_by_offsets_reads_exactly_the_half_open_ranges(filled: tuple[Broker, Any]) -> None:
    broker, _ = filled
    ranges = plan(broker.bootstrap, Bound(offsets={-1: 5}), Bound(offsets={0: 12, 2: 20}))
    assert [(r.partition, r.start, r.stop) for r in ranges] == [(0, 5, 12), (1, 5, 30), (2, 5, 20)]
    assert all(r.log_end == PER_PARTITION for r in ranges)  # the fetched high-water mark, not ListOffsets
    assert offsets_read(broker.bootstrap, ranges) == {0: list(range(5, 12)), 1: list(range(5, 30)),
                                                      2: list(range(5, 20))}  # fmt: skip
    beyond = plan(broker.bootstrap, Bound(offsets={-1: 25}), Bound(offsets={-1: 10_000}))
    assert [(r.start, r.stop) for r in beyond] == [(25, 30)] * PARTITIONS  # clamped to the log


def test_selection_by_time_matches_the_record_timestamps(filled: tuple[Broker, Any]) -> None:
    """from-time is inclusive, to-time exclusive: on Kafka from its own offsets_for_times answers (verified),
    on Tansu, whose answers are 0, by a search over the record timestamps."""
    broker, _ = filled
    # record 10 of partition 0 has exactly this timestamp: included as the start, excluded as the stop
    ranges = plan(broker.bootstrap, Bound(time_ms=timestamp(0, 10)), Bound(time_ms=timestamp(0, 20)))
    assert [(r.partition, r.start, r.stop) for r in ranges] == [(0, 10, 20), (1, 10, 20), (2, 10, 20)]
    assert offsets_read(broker.bootstrap, ranges)[0] == list(range(10, 20))
    expected_method = "timestamp search" if broker.flavor == "tansu" else "broker time index (verified)"
    assert all(r.found_by.startswith(expected_method) for r in ranges), [r.found_by for r in ranges]
    assert ranges[0].first_timestamp == timestamp(0, 10) and ranges[0].last_timestamp == timestamp(0, 19)

    # the oracle: every record's timestamp; the start is the first record at or after the time
    stamps = {p: [timestamp(p, i) for i in range(PER_PARTITION)] for p in range(PARTITIONS)}
    rng = random.Random(5)
    for _ in range(4):
        low, high = sorted(rng.randrange(BASE_MS - 5000, timestamp(2, PER_PARTITION + 5)) for _ in range(2))
        got = plan(broker.bootstrap, Bound(time_ms=low), Bound(time_ms=high))
        for r in got:
            first = next((i for i, t in enumerate(stamps[r.partition]) if t >= low), PER_PARTITION)
            stop = next((i for i, t in enumerate(stamps[r.partition]) if t >= high), PER_PARTITION)
            assert (r.start, r.stop) == (first, stop), (low, high, r)


def run_cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cli.main(list(argv))


def env_for(broker: Broker, tmp_path: Path, models_dir: Path | None = None) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "NOMENCLATURE_BROKER_FLAVOR": broker.flavor,
        "NOMENCLATURE_DATA_DIR": str(tmp_path / "data"),
    }
    if models_dir is not None:
        env["NOMENCLATURE_MODELS_DIR"] = str(models_dir)
    return env


def all_records(bootstrap: str, topic: str) -> list[Any]:
    async def collect() -> list[Any]:
        ranges = await plan_ranges(bootstrap, topic)
        return [record async for batch in read_ranges(bootstrap, ranges) for record in batch]

    return run_sync(collect())


def test_republish_dry_run_then_twice_gives_identical_copies(
    filled: tuple[Broker, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    broker, _ = filled
    env = env_for(broker, tmp_path)
    args = ("replay", "--topic", RAW, "--from-offset", "5", "--to-offset", "1:9", "--target", "replay-copy")
    run_cli(monkeypatch, env, *args, "--dry-run")
    out = capsys.readouterr()
    assert "dry run: nothing written" in out.err
    plan_lines = [line.split() for line in out.out.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"])]
    assert [(int(f[0]), int(f[1]), int(f[2]), int(f[3])) for f in plan_lines] == [
        (0, 5, 30, 25), (1, 5, 9, 4), (2, 5, 30, 25)]  # fmt: skip
    assert run_sync(topic_partitions(broker.bootstrap, "replay-copy")) is None  # nothing was written

    run_cli(monkeypatch, env, *args, "--no-progress")
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert first["records_read"] == 54 and first["records_written"] == {"replay-copy": 54}
    run_cli(monkeypatch, env, *args, "--no-progress")
    second = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert second["replay_id"] == first["replay_id"] and second["records_written"] == {"replay-copy": 54}

    source = {(r.partition, r.offset): r for r in all_records(broker.bootstrap, RAW)}
    copies = all_records(broker.bootstrap, "replay-copy")
    assert len(copies) == 108

    def essence(record: Any) -> tuple[Any, ...]:
        return record.key, record.value, record.timestamp, tuple(record.headers)

    halves = Counter(essence(c) for c in copies)
    assert set(halves.values()) == {2}  # every copy written once per run, identical both times
    for copy in copies:
        header = dict(copy.headers)
        origin = json.loads(header[REPLAY_HEADER])
        assert origin["replay"] == first["replay_id"]
        topic, partition, offset = origin["from"].rsplit(":", 2)
        original = source[(int(partition), int(offset))]
        assert topic == RAW and (5 <= original.offset < (9 if original.partition == 1 else 30))
        assert (copy.key, copy.value, copy.timestamp) == (original.key, original.value, original.timestamp)
        assert header["origin"] == dict(original.headers)["origin"]  # the record's own headers kept


def test_republish_refuses_a_target_of_another_record_type(
    filled: tuple[Broker, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, _ = filled
    with pytest.raises(SystemExit, match="use --reclassify"):
        run_cli(monkeypatch, env_for(broker, tmp_path), "replay", "--topic", RAW, "--target", REJECTED)


def second_model(models_dir: Path, tmp_path: Path) -> str:
    """A quickly trained second version beside the champion (not promoted)."""
    from models.training.train import train

    data = labelled_sample_csv(tmp_path, per_label=150, seed=3)
    classifier, metrics = train(data, seed=3, max_epochs=3, progress=False, augment=False)
    registry = ModelRegistry(models_dir)
    record = registry.register(classifier, metrics, data, notes="replay test")
    assert registry.champion().version != record.version
    return record.version


def decoded(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [r async for r in read_topic(bootstrap, topic, LocalCatalogue())]

    return run_sync(collect())


def test_reclassify_backfill_writes_one_record_per_input_with_that_version(
    fresh_broker: Broker,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    broker = fresh_broker
    items = items_for("bf")
    items[1][3]["okved_code"] = "99.99.99"  # not an ОКВЭД2 code: dead-lettered, as live
    items[2][7]["name"] = ""
    run_sync(_fill(broker.bootstrap, RAW, items))
    version = second_model(models_dir, tmp_path)
    env = env_for(broker, tmp_path, models_dir)
    target = f"nomenclature.backfill.{version}"
    args = ("replay", "--topic", RAW, "--model", version, "--target", "nomenclature.backfill.{version}")
    run_cli(monkeypatch, env, *args, "--no-progress")
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["mode"] == "reclassify" and summary["model_version"] == version
    assert summary["records_read"] == PARTITIONS * PER_PARTITION
    assert summary["records_written"] == {target: PARTITIONS * PER_PARTITION - 2, REJECTED: 2}
    assert summary["rejected_by_code"] == {"okved_unknown": 1, "blank": 1}, summary

    outputs = decoded(broker.bootstrap, target)
    valid = {i["id"]: (p, n) for p, rows in enumerate(items) for n, i in enumerate(rows)}
    del valid[items[1][3]["id"]], valid[items[2][7]["id"]]
    assert sorted(o["key"] for o in outputs) == sorted(valid)  # one record per valid input, keyed by id
    for out in outputs:
        value = out["value"]
        assert value["model_version"] == version and value["id"] == out["key"]
        partition, offset = valid[out["key"]]
        assert value["source"]["topic"] == RAW
        assert (value["source"]["partition"], value["source"]["offset"]) == (partition, offset)
        assert out["timestamp"] == timestamp(partition, offset)  # event time kept
    dead = [r["value"] for r in decoded(broker.bootstrap, REJECTED)]
    assert sorted(d["item_id"] for d in dead) == sorted([items[1][3]["id"], items[2][7]["id"]])

    # the same replay again: every key now has two records, equal but for classified_at
    run_cli(monkeypatch, env, *args, "--no-progress")
    capsys.readouterr()
    by_key: dict[str, list[str]] = {}
    for record in decoded(broker.bootstrap, target):
        value = {k: v for k, v in record["value"].items() if k != "classified_at"}
        by_key.setdefault(record["key"], []).append(json.dumps(value, sort_keys=True, default=str))
    assert set(by_key) == set(valid)
    assert all(len(values) == 2 and values[0] == values[1] for values in by_key.values())

    # a backfill topic read back and reclassified with the champion keeps the raw source positions
    champion = ModelRegistry(models_dir).champion().version
    run_cli(monkeypatch, env, "replay", "--topic", target, "--reclassify", "--target",
            "nomenclature.backfill.champion", "--no-progress")  # fmt: skip
    capsys.readouterr()
    rescored = decoded(broker.bootstrap, "nomenclature.backfill.champion")
    assert len(rescored) == 2 * len(outputs)
    assert {r["value"]["model_version"] for r in rescored} == {champion}
    assert {(r["key"], r["value"]["source"]["offset"]) for r in rescored} == {
        (o["key"], o["value"]["source"]["offset"]) for o in outputs
    }

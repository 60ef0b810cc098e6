"""The stream benchmark's peers (tools.bench_peers) do the pipeline's work: on a few hundred records, some of
them invalid, each peer's classified records and dead letters are the project's pipeline's for the same
records, and its committed offsets reach the input's end once it has produced them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from connectors.group_offsets import committed_offsets
from models.registry.model_registry import ModelRegistry
from streams.pipeline.messages import RawMessage
from streams.pipeline.micro_batch import Models
from streams.pipeline.scoring import build_pipeline
from streams.runtime.broker_quirks import fetched_end_offsets
from streams.settings import Settings
from streams.topics import CLASSIFIED, REJECTED
from tests.support import Broker, item_serde, read_records
from tools.bench import create_topic, make_records, publish
from tools.bench_peers import (
    PEERS,
    PeerConfig,
    PeerResult,
    output_topic,
    output_topics,
    peer_result,
    quix_available,
    start_peer,
)
from tools.common import run_sync

pytestmark = pytest.mark.timeout(180)

PARTITIONS = 4
VALID = 300
INPUT = "bench.peers.test"
PREFIX = "test.peer"


def records() -> list[tuple[bytes, bytes]]:
    """VALID items, bad Avro bytes twice, an item without a name and a duplicate of the first item."""
    valid = make_records(VALID)
    no_name = item_serde().encode({"id": "no-name", "name": None, "full_name": "Ремонт насоса"})
    bad = [(b"bad-avro", b"\x00\x00\x00\x00\x07not avro"), (b"not-wire", b"plain text")]
    return [*valid[:150], *bad, (b"no-name", no_name), *valid[150:], valid[0]]


def runnable_peers() -> list[str]:
    return [name for name in PEERS if name != "quix" or quix_available()]


def without(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != field}


def normalised(pipeline: Any, topic: str, key: bytes | None, value: bytes, timestamp: int | None) -> tuple:
    """An output record, decoded, without its time of processing; sortable by its source position."""
    if topic.endswith(".classified"):
        record = without(pipeline.classified_serde.decode(value), "classified_at")
    else:
        record = without(pipeline.rejected_serde.decode(value), "rejected_at")
    source = record["source"]
    return (source["partition"], source["offset"]), key, timestamp, record


@pytest.fixture(scope="module")
def ran(
    module_broker: Broker, trained_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The input published, every peer run on it at once, and the project's pipeline's outputs for it."""
    bootstrap, tmp = module_broker.bootstrap, tmp_path_factory.mktemp("peers")
    settings = Settings.from_env(data_dir=tmp / "pipeline", models_path=trained_models)
    names = runnable_peers()
    for topic in [INPUT] + [t for name in names for t in output_topics(PREFIX, name)]:
        run_sync(create_topic(bootstrap, topic, PARTITIONS))
    run_sync(publish(bootstrap, INPUT, records()))
    configs = {
        name: PeerConfig(
            name,
            bootstrap,
            INPUT,
            VALID + 4,
            str(tmp / name),
            module_broker.flavor,
            str(settings.models_dir),
            f"test-peer-{name}",
            PREFIX,
        )
        for name in names
    }
    processes = {name: start_peer(config, tmp / f"{name}.log") for name, config in configs.items()}
    results: dict[str, PeerResult | Exception] = {}
    for name, process in processes.items():
        try:
            results[name] = peer_result(process, tmp / f"{name}.log", name, timeout=120)
        except Exception as exc:  # reported by the peer's own test
            results[name] = exc

    registry = ModelRegistry(settings.models_dir)
    pipeline = build_pipeline(settings)
    inputs = sorted(run_sync(read_records(bootstrap, INPUT)), key=lambda r: (r.partition, r.offset))
    messages = [RawMessage(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value) for r in inputs]
    models = Models(registry.load(), registry.load_baseline())
    # one micro-batch of them all, on an empty item table: the batch's own records are its duplicates' memory
    outputs = pipeline.process(messages, models, lambda _partition, _item_id: None).outputs
    expected = {
        topic: sorted(
            normalised(pipeline, topic, out.key, out.value, out.timestamp_ms)
            for out in outputs
            if out.topic == topic
        )
        for topic in (CLASSIFIED, REJECTED)
    }
    ends = run_sync(fetched_end_offsets(bootstrap, [(INPUT, p) for p in range(PARTITIONS)]))
    return {"pipeline": pipeline, "expected": expected, "results": results, "ends": ends, "configs": configs}


@pytest.mark.parametrize("name", PEERS)
def test_peer_does_the_pipelines_work(ran: dict[str, Any], module_broker: Broker, name: str) -> None:
    if name not in ran["results"]:
        pytest.skip("quixstreams is not installed (pip install -e '.[bench]')")
    result = ran["results"][name]
    if isinstance(result, Exception):
        raise result
    assert result.items_per_s > 0 and result.cpu_us_per_item > 0
    bootstrap, pipeline, expected = module_broker.bootstrap, ran["pipeline"], ran["expected"]
    assert len(expected[CLASSIFIED]) == VALID and len(expected[REJECTED]) == 4
    assert {r[3]["errors"][0]["code"] for r in expected[REJECTED]} >= {"duplicate"}
    for topic in (CLASSIFIED, REJECTED):
        produced = run_sync(read_records(bootstrap, output_topic(PREFIX, name, topic)))
        got = sorted(normalised(pipeline, topic, r.key, r.value, r.timestamp) for r in produced)
        assert got == expected[topic], f"{name}: {topic} differs from the pipeline's"
    # at-least-once: the group's offsets are committed (after the outputs above were produced) to the end
    ends = {TopicPartition(INPUT, p): end for (_, p), end in ran["ends"].items()}
    assert run_sync(committed_offsets(bootstrap, ran["configs"][name].group, ends)) == ends

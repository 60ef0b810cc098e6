"""The output path (streams/pipeline/emit.py) on a real broker: record batches, partitioning, delivered
offsets."""

from __future__ import annotations

import asyncio
import random
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from streams.pipeline.emit import BatchProducer, partition_for
from streams.pipeline.messages import OutRecord
from tests.support import Broker, read_records


def test_keyed_records_go_where_the_default_partitioner_sends_them() -> None:
    partitioner = DefaultPartitioner()
    rng = random.Random(3)
    for n_partitions in (1, 3, 8, 12):
        partitions = list(range(n_partitions))
        for _ in range(500):
            key = rng.randbytes(rng.randint(1, 40))
            assert partition_for(key, partitions) == partitioner(key, partitions, partitions)


async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[bytes, bytes]]]:
    """(key, value) of every record of `topic`, per partition, in offset order."""
    found: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
    for r in await read_records(bootstrap, topic):
        found[r.partition].append((r.key, r.value))
    return found


def test_send_all_delivers_every_record_in_order_and_reports_last_offsets(broker: Broker) -> None:
    topic = f"emit-{uuid.uuid4().hex[:8]}"
    partitions = 4
    # ~1.2 MB in all: several record batches per partition (a batch holds at most 256 KiB)
    records = [
        OutRecord(topic, f"k-{i}".encode(), f"v-{i}-".encode() + bytes(1200), 1_700_000_000_000 + i)
        for i in range(1000)
    ]
    explicit = [OutRecord(topic, b"fixed", b"to-partition-2", None, partition=2) for _ in range(5)]

    async def scenario() -> tuple[list, dict[int, list[tuple[bytes, bytes]]]]:
        await _create(broker.bootstrap, topic, partitions)
        producer = BatchProducer(broker.bootstrap)
        try:
            delivered = await producer.send_all(records + explicit)
        finally:
            await producer.stop()
        return delivered, await _read_all(broker.bootstrap, topic, partitions)

    delivered, found = asyncio.run(scenario())

    expected: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
    for record in records:
        expected[partition_for(record.key, list(range(partitions)))].append((record.key, record.value))
    expected[2].extend((r.key, r.value) for r in explicit)
    assert found == expected  # nothing lost, nothing duplicated, order kept per partition
    assert len([d for d in delivered if d.partition == 0]) > 1  # it really split into several batches
    for partition in range(partitions):
        last = max(d.last_offset for d in delivered if d.partition == partition)
        assert last == len(expected[partition]) - 1

"""Publish items to Kafka as Confluent-framed Avro, and read any topic of the service back as dicts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import AvroSerde, Catalogue, DecodeError
from streams.broker_quirks import fetched_end_offsets
from streams.topics import spec_for


async def produce_items(
    bootstrap: str,
    topic: str,
    items: Iterable[dict[str, Any]],
    catalogue: Catalogue,
    *,
    rate: float | None = None,
    timestamp_of: Callable[[dict[str, Any]], int | None] | None = None,
) -> int:
    """Publish items keyed by id; ``rate`` caps items/s; ``timestamp_of`` gives a record's timestamp (epoch
    ms; default: the producer's clock). Returns the number sent (all acknowledged)."""
    spec = spec_for(topic)
    serde = AvroSerde(catalogue, spec.subject, spec.schema)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    sent = 0
    started = time.perf_counter()
    try:
        futures = []
        for item in items:
            futures.append(
                await producer.send(
                    topic,
                    serde.encode(item),
                    key=str(item["id"]).encode("utf-8"),
                    timestamp_ms=None if timestamp_of is None else timestamp_of(item),
                )
            )
            sent += 1
            if rate:
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(futures) >= 10000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def read_topic(
    bootstrap: str,
    topic: str,
    catalogue: Catalogue,
    *,
    limit: int | None = None,
    follow: bool = False,
    idle_timeout: float = 5.0,
    partitions: Iterable[int] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Records of ``topic`` (or of its ``partitions``) from the beginning, decoded, with their position.

    Without ``follow`` it stops at the end offsets taken at start (fetched high-water marks, right on
    every broker) or after ``idle_timeout`` seconds without a record.
    """
    spec = spec_for(topic)
    serde = AvroSerde(catalogue, spec.subject, spec.schema)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata for all topics
        existing = consumer.partitions_for_topic(topic) or set()
        wanted = existing if partitions is None else existing & set(partitions)
        tps = [TopicPartition(topic, p) for p in sorted(wanted)]
        if not tps:
            raise LookupError(f"topic {topic!r} does not exist")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = {} if follow else await fetched_end_offsets(bootstrap, tps)
        remaining = {tp for tp in tps if follow or ends[tp] > 0}
        count = 0
        idle_since = time.monotonic()
        while remaining and (limit is None or count < limit):
            batch = await consumer.getmany(*tps, timeout_ms=500)
            if not batch:
                if not follow and time.monotonic() - idle_since > idle_timeout:
                    return
                continue
            idle_since = time.monotonic()
            for tp, records in batch.items():
                for record in records:
                    if not follow and record.offset >= ends[tp]:
                        remaining.discard(tp)
                        break
                    yield _decoded(serde, record)
                    count += 1
                    if limit is not None and count >= limit:
                        return
                    if not follow and record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()


def _decoded(serde: AvroSerde, record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
    }
    try:
        out["value"] = serde.decode(record.value)
    except DecodeError as exc:
        out["error"] = {"code": exc.code, "message": exc.message}
    return out


async def topic_partitions(bootstrap: str, topic: str) -> int | None:
    """The partition count of ``topic``, None when it does not exist."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # listed first: naming a missing topic in a metadata request makes Tansu create it
        if topic not in await admin.list_topics():
            return None
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry.get("topic") == topic and not entry.get("error_code") and entry.get("partitions"):
            return len(entry["partitions"])
    return None


async def ensure_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int) -> bool:
    """Create ``topic`` unless it exists; True when this call created it."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    if await topic_partitions(bootstrap, topic) is not None:
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication_factor)])
    except TopicAlreadyExistsError:
        return False
    finally:
        await admin.close()
    return True

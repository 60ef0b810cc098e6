"""Publish items to Kafka as Confluent-framed Avro, and find or create a topic.

Reading a topic back as dicts is `streams.runtime.topic_reader.read_topic` (the worker folds the model
control topic with it too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas import AvroSerde, Catalogue
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

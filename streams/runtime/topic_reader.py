"""Read any topic of the service back as decoded dicts with their positions (tools, tests, and the worker's
fold of the model control topic)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import AvroSerde, Catalogue, DecodeError
from streams.runtime.broker_quirks import fetched_end_offsets
from streams.runtime.topic_metadata import partitions_by_topic
from streams.topics import spec_for


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
        existing = (await partitions_by_topic(consumer)).get(topic, set())
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

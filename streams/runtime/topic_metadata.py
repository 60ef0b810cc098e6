"""Which topics exist and their partitions, asked of the broker afresh — the same answer on every broker.

aiokafka's ``consumer.topics()`` fetches metadata for every topic but does not keep it, and
``consumer.partitions_for_topic()`` reads the metadata the client keeps, which holds only the topics the
consumer subscribed to or was assigned. The pair happened to work on Tansu, whose answer to a background
metadata request lists every topic; on Apache Kafka ``partitions_for_topic`` then says None for a topic
that exists. So the partitions are read from the fetched answer itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition


async def partitions_by_topic(consumer: AIOKafkaConsumer) -> dict[str, set[int]]:
    """Every topic the broker lists (Kafka's internal ones included), with its partitions."""
    cluster = await consumer._client.fetch_all_metadata()  # the fresh answer that topics() drops
    return {topic: set(cluster.partitions_for_topic(topic) or ()) for topic in cluster.topics()}


async def topic_partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """The partitions of those of ``topics`` that exist, sorted; a missing topic contributes none."""
    known = await partitions_by_topic(consumer)
    return [TopicPartition(topic, p) for topic in topics for p in sorted(known.get(topic, ()))]

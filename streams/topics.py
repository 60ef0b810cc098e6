"""Every topic of the service, declared once: name, key, Avro value schema, role."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas import (
    CLASSIFIED_SCHEMA,
    CORRECTION_SCHEMA,
    DRIFT_ALERT_SCHEMA,
    DRIFT_COUNTS_SCHEMA,
    ITEM_SCHEMA,
    LIFECYCLE_SCHEMA,
    MODEL_EVENT_SCHEMA,
    REJECTED_SCHEMA,
    REVIEW_SCHEMA,
)

RAW = "nomenclature.raw"
# Sources may publish to their own topic nomenclature.raw.<source>; the worker subscribes by pattern.
RAW_PATTERN = r"^nomenclature\.raw(\.[A-Za-z0-9_-]+)?$"
CLASSIFIED = "nomenclature.classified"
REJECTED = "nomenclature.rejected"
DRIFT = "nomenclature.drift"
CORRECTIONS = "nomenclature.corrections"
SHADOW = "nomenclature.shadow"
# Items put before a person (`streams.review`); the answers are corrections.
REVIEW = "nomenclature.review"
# The model lifecycle's control topic: one partition, so that every worker reads every event in order.
MODELS = "nomenclature.models"
# Reclassification backfills may write to nomenclature.backfill.<name> (ClassifiedItem), beside the live one.
BACKFILL_PREFIX = "nomenclature.backfill."
# Header that `nomenclature replay` puts on records it re-publishes: JSON {"replay", "from", "timestamp"}.
REPLAY_HEADER = "nomenclature-replay"
# Internal to one app (consumer group), like Faust's changelogs: <app id>-drift-counts. Two deployments on
# one cluster must not merge each other's counts.
DRIFT_COUNTS_SUFFIX = "-drift-counts"
# Internal too: retraining requests and shadow counts for the app's retraining coordinator.
LIFECYCLE_SUFFIX = "-lifecycle"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    schema: dict[str, Any]
    role: str
    partitions: int | None = None  # None: NOMENCLATURE_PARTITIONS

    @property
    def subject(self) -> str:
        """Schema-registry subject (TopicNameStrategy)."""
        return f"{self.name}-value"


TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(RAW, ITEM_SCHEMA, "input: NomenclatureItem keyed by item id"),
        TopicSpec(CLASSIFIED, CLASSIFIED_SCHEMA, "output: ClassifiedItem keyed by item id"),
        TopicSpec(REJECTED, REJECTED_SCHEMA, "dead letters: RejectedRecord keyed by the original key"),
        TopicSpec(DRIFT, DRIFT_ALERT_SCHEMA, "alerts: DriftAlert keyed by feature:metric:view:window_start"),
        TopicSpec(CORRECTIONS, CORRECTION_SCHEMA, "input: Correction keyed by item id"),
        TopicSpec(SHADOW, CLASSIFIED_SCHEMA, "output: the challenger's ClassifiedItem keyed by item id"),
        TopicSpec(REVIEW, REVIEW_SCHEMA, "output: ReviewItem (an item put before a person) keyed by item id"),
        TopicSpec(MODELS, MODEL_EVENT_SCHEMA, "control: ModelEvent keyed by registry_id/alias", 1),
    )
}

_RAW_RE = re.compile(RAW_PATTERN)


def drift_counts_spec(app_id: str) -> TopicSpec:
    """The app's drift-counts topic: one partition, so that one worker merges every partition's counts
    (`streams.drift.monitor`)."""
    name = f"{app_id}{DRIFT_COUNTS_SUFFIX}"
    return TopicSpec(name, DRIFT_COUNTS_SCHEMA, "internal: DriftCounts keyed by source partition", 1)


def lifecycle_spec(app_id: str) -> TopicSpec:
    """The app's lifecycle topic: one partition, read by the worker that runs the retraining coordinator
    (`streams.lifecycle.coordinator`)."""
    name = f"{app_id}{LIFECYCLE_SUFFIX}"
    return TopicSpec(name, LIFECYCLE_SCHEMA, "internal: LifecycleMessage keyed by kind", 1)


def app_topics(app_id: str) -> list[TopicSpec]:
    """The internal topics of one app."""
    return [drift_counts_spec(app_id), lifecycle_spec(app_id)]


def is_raw_topic(name: str) -> bool:
    return _RAW_RE.match(name) is not None


def spec_for(topic: str) -> TopicSpec:
    """The spec of a declared topic; any nomenclature.raw.<source> topic shares the raw spec."""
    if topic in TOPICS:
        return TOPICS[topic]
    if is_raw_topic(topic):
        return TopicSpec(topic, ITEM_SCHEMA, TOPICS[RAW].role)
    if topic.startswith(BACKFILL_PREFIX) and len(topic) > len(BACKFILL_PREFIX):
        return TopicSpec(topic, CLASSIFIED_SCHEMA, "backfill output: ClassifiedItem keyed by item id")
    if topic.endswith(DRIFT_COUNTS_SUFFIX):
        return drift_counts_spec(topic[: -len(DRIFT_COUNTS_SUFFIX)])
    if topic.endswith(LIFECYCLE_SUFFIX):
        return lifecycle_spec(topic[: -len(LIFECYCLE_SUFFIX)])
    raise KeyError(f"{topic!r} is not a topic of this service (declared: {', '.join(TOPICS)})")


async def raw_topics(bootstrap: str) -> list[str]:
    """Existing topics matching RAW_PATTERN (always including nomenclature.raw)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = set(await admin.list_topics())
    finally:
        await admin.close()
    return sorted({RAW} | {name for name in names if is_raw_topic(name)})


async def ensure_topics(
    bootstrap: str, partitions: int, replication_factor: int, app_id: str | None = None
) -> list[str]:
    """Create the declared topics (and, given an app id, its internal topics) that do not exist yet;
    return the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        specs = [*TOPICS.values(), *(app_topics(app_id) if app_id else [])]
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(s.name, s.partitions or partitions, replication_factor) for s in missing]
                )
            except TopicAlreadyExistsError:  # another worker won the race
                pass
        return [spec.name for spec in missing]
    finally:
        await admin.close()

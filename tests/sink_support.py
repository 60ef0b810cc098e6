"""Helpers for the sink tests: ClassifiedItem, Correction and ModelEvent values, topics, producing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import AvroSerde, LocalCatalogue
from streams.topics import TOPICS
from tools.common import run_sync

DAY = datetime(2024, 3, 1, tzinfo=UTC)
NAMES = (
    "Болт М8х40 оцинкованный",
    "Услуги по вывозу ТБО",
    "Кабель ВВГнг 3х2,5",
    "Ремонт кровли",
    "Бумага А4",
)


def serde(topic: str) -> AvroSerde:
    return AvroSerde(LocalCatalogue(), TOPICS[topic].subject, TOPICS[topic].schema)


def new_topic(bootstrap: str, prefix: str, partitions: int) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    run_sync(create())
    return name


def classified(
    index: int, classified_at: datetime, *, item_id: str | None = None, **changes: Any
) -> dict[str, Any]:
    """A ClassifiedItem whose every field depends on ``index``."""
    item_id = item_id or f"item-{index:05d}"
    service = index % 3 == 0
    confidence = 0.5 + (index % 50) / 100
    label, other = ("service", "product") if service else ("product", "service")
    name = f"{NAMES[index % len(NAMES)]} №{index}"
    value = {
        "id": item_id,
        "item": {
            "id": item_id,
            "name": name,
            "full_name": f"{name}, полное наименование",
            "kind": "Услуга" if service else "Товар",
            "unit": "усл. ед." if service else "шт",
            "type_hint": None,
            "okved_code": "62.01" if index % 4 == 0 else None,
            "hs_code": None if service else "7318158100",
            "country": "RU",
            "region": None,
            "source": f"erp-{index % 2}",
            "created_at": DAY - timedelta(days=index % 7),
            "label": None,
        },
        "label": label,
        "confidence": confidence,
        "probabilities": {label: confidence, other: 1 - confidence},
        "top_k": [
            {"label": label, "probability": confidence},
            {"label": other, "probability": 1 - confidence},
        ],
        "explanation": [{"token": name.split()[0].lower(), "weight": 0.25 + index / 10_000}],
        "model_version": f"m-{1 + index % 2}",
        "featurizer_version": "f-1",
        "warnings": [{"field": "region", "code": "missing", "message": "no region"}]
        if index % 5 == 0
        else [],
        "source": {"topic": "nomenclature.raw", "partition": index % 4, "offset": index, "timestamp": DAY},
        "classified_at": classified_at,
    }
    value.update(changes)
    return value


def correction(item_id: str, label: str, corrected_at: datetime | None, **changes: Any) -> dict[str, Any]:
    return {
        "id": item_id,
        "name": f"наименование {item_id}",
        "full_name": f"полное наименование {item_id}",
        "label": label,
        "corrected_fields": {
            "kind": None,
            "unit": "шт",
            "type_hint": None,
            "okved_code": None,
            "hs_code": None,
            "country": None,
            "region": None,
            "source": None,
        },
        "user": "tester",
        "comment": None,
        "model_version": "m-1",
        "corrected_at": corrected_at,
        **changes,
    }


def model_event(version: str, event: str, at: datetime) -> dict[str, Any]:
    alias = "challenger" if event == "registered" else "champion"
    return {
        "registry_id": "reg-1",
        "event": event,
        "alias": alias,
        "version": version,
        "artifact": f"{version}/model.joblib",
        "sha256": "0" * 64,
        "previous": None,
        "reason": "test",
        "details": '{"gate": "held"}',
        "by": "tests@host",
        "at": at,
    }


Record = tuple[bytes | None, bytes | None, int | None]  # key, value, timestamp ms
Headers = Sequence[tuple[str, bytes]]


async def _produce(
    bootstrap: str, topic: str, records: Iterable[Record], partition: int | None, headers: Headers
) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                value,
                key=key,
                timestamp_ms=timestamp,
                partition=partition,
                headers=list(headers) or None,
            )
            for key, value, timestamp in records
        ]
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    partition: int | None = None,
    headers: Headers = (),
) -> list[tuple[int, int]]:
    """Publish the records (each with ``headers``), all acknowledged; their (partition, offset) in order."""
    return run_sync(_produce(bootstrap, topic, list(records), partition, headers))


def encoded(kind: str, values: Iterable[dict[str, Any]]) -> list[Record]:
    codec = serde(kind)
    return [
        (v["id"].encode() if "id" in v else b"reg-1/" + v["alias"].encode(), codec.encode(v), None)
        for v in values
    ]

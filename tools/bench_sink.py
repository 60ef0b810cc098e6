"""How fast the sinks drain a topic: ``python -m tools.bench_sink --records 50000``.

Publishes N ClassifiedItem records (8 partitions, two classification dates) to a new topic of the embedded
broker (or of ``KAFKA_BOOTSTRAP_SERVERS``), then drains it once with the parquet sink and once with the SQLite
sink, each in this process, and prints their summaries' records/s (first fetch to last flush, fsyncs
included) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connectors.sinks.parquet import ParquetSink
from connectors.sinks.sqlite import SqliteSink
from connectors.sinks.topic_consumer import ConsumeOptions, run, topic_spec
from schemas import AvroSerde, LocalCatalogue
from streams.topics import CLASSIFIED, TOPICS

DAY = datetime(2024, 3, 1, tzinfo=UTC)


def value(index: int) -> dict[str, Any]:
    label, other = ("service", "product") if index % 3 == 0 else ("product", "service")
    name = f"Болт М{index % 40} оцинкованный, партия {index}"
    item = dict.fromkeys(("type_hint", "okved_code", "region", "label", "created_at"))
    item.update(id=f"b-{index}", name=name, full_name=name, kind="Товар", unit="шт", hs_code="7318158100")
    item.update(country="RU", source="bench")
    return {
        "id": f"b-{index}",
        "item": item,
        "label": label,
        "confidence": 0.9,
        "probabilities": {label: 0.9, other: 0.1},
        "top_k": [{"label": label, "probability": 0.9}, {"label": other, "probability": 0.1}],
        "explanation": [{"token": "болт", "weight": 0.4}, {"token": "оцинкованный", "weight": 0.1}],
        "model_version": "m-1",
        "featurizer_version": "f-1",
        "warnings": [],
        "source": {"topic": "nomenclature.raw", "partition": index % 8, "offset": index, "timestamp": DAY},
        "classified_at": DAY + timedelta(seconds=index * 86400 * 2 // 50_000),
    }


async def publish(bootstrap: str, topic: str, records: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 8, 1)])
    finally:
        await admin.close()
    codec = AvroSerde(LocalCatalogue(), TOPICS[CLASSIFIED].subject, TOPICS[CLASSIFIED].schema)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, codec.encode(value(i)), key=f"b-{i}".encode()) for i in range(records)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def quiet(line: str) -> None:
    del line


def drain(bootstrap: str, topic: str, out: Path, is_tansu: bool) -> dict[str, Any]:
    results = {}
    options = ConsumeOptions(bootstrap, f"bench-parquet-{topic}", once=True, is_tansu=is_tansu)
    with ParquetSink(
        out, topic_spec(topic, CLASSIFIED), LocalCatalogue(), options.group, log=quiet
    ) as parquet:
        results["parquet"] = asyncio.run(run(parquet, [topic], options, log=quiet))
    options = ConsumeOptions(
        bootstrap, f"bench-sqlite-{topic}", once=True, flush_rows=5000, is_tansu=is_tansu
    )
    with SqliteSink(out / "bench.db", [f"{topic}={CLASSIFIED}"], LocalCatalogue(), log=quiet) as sqlite:
        results["sqlite"] = asyncio.run(run(sqlite, [topic], options, log=quiet))
    keys = ("records", "seconds", "records_per_s", "files", "rows", "predictions")
    return {name: {k: summary[k] for k in keys if k in summary} for name, summary in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    topic = f"bench-sink-{uuid.uuid4().hex[:8]}"
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    with tempfile.TemporaryDirectory() as scratch:
        if external:
            asyncio.run(publish(external, topic, args.records))
            print(json.dumps(drain(external, topic, Path(scratch), is_tansu=False), indent=2))
            return
        from tools.broker import EmbeddedBroker

        with EmbeddedBroker() as broker:
            asyncio.run(publish(broker.bootstrap, topic, args.records))
            print(json.dumps(drain(broker.bootstrap, topic, Path(scratch), is_tansu=True), indent=2))


if __name__ == "__main__":
    main()

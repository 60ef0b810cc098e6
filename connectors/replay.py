"""Replaying a selected range of a topic (`connectors.topic_range`), without the live consumer group:

* **republish** — the records' keys, values and headers copied unchanged to a topic (default
  ``nomenclature.raw``) with a replay header added (``streams.topics.REPLAY_HEADER``), and the original
  timestamps kept, so event time stays what it was. The worker classifies a replayed record again instead
  of calling it a duplicate.
* **reclassify** — the items of the records (a raw topic's, or the ``item`` of a ClassifiedItem topic's)
  decoded, validated and scored with a chosen model version by the same pipeline code the worker runs, into
  a ClassifiedItem topic (default ``nomenclature.classified``); items that fail go to the dead-letter topic
  as they would live. A ClassifiedItem input keeps its original source position, so the output names the
  raw record it came from.

Both are idempotent: a replay's id is a hash of its plan, and running the same plan again writes the same
keys and values (a reclassification's ``classified_at`` apart) under the same headers and timestamps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import ConsumerRecord

from connectors.topic_range import PartitionRange, format_time, read_ranges
from models.training.progress import ProgressBar
from schemas import CLASSIFIED_SCHEMA, ITEM_SCHEMA, AvroSerde, DecodeError, to_millis
from streams.pipeline.emit import BatchProducer
from streams.pipeline.messages import BatchResult, OutRecord, RawMessage
from streams.pipeline.micro_batch import Models, Pipeline, Scored
from streams.pipeline.scoring import Scorer
from streams.topics import CLASSIFIED, REJECTED, REPLAY_HEADER, TOPICS, spec_for

REPUBLISH, RECLASSIFY = "republish", "reclassify"


class ReplayError(ValueError):
    """A replay that cannot be done as asked (wrong topic kinds, nothing to read)."""


def schema_of(topic: str) -> dict[str, Any] | None:
    """The value schema of one of the service's topics, None for a topic it does not declare."""
    try:
        return spec_for(topic).schema
    except KeyError:
        return None


def check_topics(mode: str, source: str, target: str) -> None:
    """Refuse a replay whose target could not take the source's records."""
    source_schema, target_schema = schema_of(source), schema_of(target)
    if mode == REPUBLISH:
        if source_schema is not None and target_schema is not None and source_schema != target_schema:
            raise ReplayError(
                f"{source} holds {source_schema['name']} records and {target} takes "
                f"{target_schema['name']}: republishing would put the wrong records there "
                "(to classify them again, use --reclassify)"
            )
        return
    if source_schema not in (ITEM_SCHEMA, CLASSIFIED_SCHEMA):
        raise ReplayError(
            f"{source} does not carry items: reclassify reads a raw topic (NomenclatureItem) or a "
            "ClassifiedItem topic (nomenclature.classified, nomenclature.shadow, nomenclature.backfill.*)"
        )
    if target_schema != CLASSIFIED_SCHEMA:
        raise ReplayError(
            f"{target} does not take ClassifiedItem records: reclassify writes to nomenclature.classified "
            "or nomenclature.backfill.<name>"
        )


@dataclass
class ReplayPlan:
    mode: str
    source: str
    target: str
    ranges: list[PartitionRange]
    model_version: str | None = None  # reclassify
    rejected_topic: str = REJECTED  # reclassify

    @property
    def records(self) -> int:
        return sum(r.records for r in self.ranges)

    @property
    def replay_id(self) -> str:
        """The same for the same plan: what makes a second run's headers equal the first's."""
        selected = [(r.topic, r.partition, r.start, r.stop) for r in self.ranges]
        text = json.dumps([self.mode, self.source, self.target, self.model_version, selected])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "mode": self.mode,
            "source": self.source,
            "target": self.target,
            "model_version": self.model_version,
            "rejected_topic": self.rejected_topic if self.mode == RECLASSIFY else None,
            "records": self.records,
            "partitions": [r.as_dict() for r in self.ranges],
        }

    def describe(self) -> str:
        """The plan as a table, as `kafka-consumer-groups --reset-offsets --dry-run` shows its own."""
        what = f"reclassify with {self.model_version}" if self.mode == RECLASSIFY else "republish"
        lines = [
            f"replay {self.replay_id}: {what}, {self.source} -> {self.target}"
            + (f" (dead letters -> {self.rejected_topic})" if self.mode == RECLASSIFY else ""),
            f"{'PARTITION':>9} {'FROM':>10} {'TO (excl.)':>10} {'RECORDS':>9} {'LOG START':>10} "
            f"{'LOG END':>10}  {'FIRST TIMESTAMP':<24} {'LAST TIMESTAMP':<24} FOUND BY",
        ]
        for r in self.ranges:
            lines.append(
                f"{r.partition:>9} {r.start:>10} {r.stop:>10} {r.records:>9} {r.log_start:>10} "
                f"{r.log_end:>10}  {format_time(r.first_timestamp):<24} "
                f"{format_time(r.last_timestamp):<24} {r.found_by}"
            )
        lines.append(f"{'total':>9} {'':>10} {'':>10} {self.records:>9}")
        return "\n".join(lines)


@dataclass
class ReplaySummary:
    plan: ReplayPlan
    read: int = 0
    written: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # error code -> items (reclassify)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        return {
            "replay_id": self.plan.replay_id,
            "mode": self.plan.mode,
            "source": self.plan.source,
            "target": self.plan.target,
            "model_version": self.plan.model_version,
            "records_read": self.read,
            "records_written": self.written,
            "rejected_by_code": self.rejected,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(rate, 1),
        }


def replay_header(plan: ReplayPlan, record: ConsumerRecord) -> tuple[str, bytes]:
    origin = {
        "replay": plan.replay_id,
        "from": f"{record.topic}:{record.partition}:{record.offset}",
        "timestamp": record.timestamp,
    }
    return REPLAY_HEADER, json.dumps(origin, separators=(",", ":")).encode("utf-8")


async def run_replay(
    bootstrap: str,
    plan: ReplayPlan,
    *,
    scorer: Scorer | None = None,
    models: Models | None = None,
    progress: bool = True,
) -> ReplaySummary:
    """Carry the plan out; every record written is acknowledged by the broker before this returns.

    A reclassification scores micro-batches in the scorer's processes (``Settings.scoring_processes``;
    0 = a thread), one more batch in flight than there are processes, finished in order."""
    if plan.mode == RECLASSIFY and (scorer is None or models is None):
        raise ReplayError("reclassify needs a scorer and the model")
    summary = ReplaySummary(plan)
    producer = BatchProducer(bootstrap, client_id="nomenclature-replay")
    await producer.prepare([plan.target, *([plan.rejected_topic] if plan.mode == RECLASSIFY else [])])
    target_partitions = sorted(await producer.producer.partitions_for(plan.target))
    bar = ProgressBar(plan.records, f"replay {plan.replay_id}", enabled=progress, unit="records")
    in_flight: deque[tuple[int, list[RawMessage], asyncio.Future[list[Scored]]]] = deque()

    async def deliver(outputs: list[OutRecord], read: int) -> None:
        await producer.send_all(outputs)
        for out in outputs:
            summary.written[out.topic] = summary.written.get(out.topic, 0) + 1
        summary.read += read
        bar.update(read)

    async def finish_oldest() -> None:
        assert scorer is not None
        read, messages, scoring = in_flight.popleft()
        result = scorer.pipeline.finish(messages, (await scoring)[0], lambda partition, item_id: None)
        await deliver(reclassified(plan, result, summary.rejected), read)

    to_message = None if scorer is None else _message_maker(plan.source, scorer.pipeline)
    started = time.perf_counter()
    try:
        if scorer is not None:
            await scorer.start()
        async for records in read_ranges(bootstrap, plan.ranges):
            if plan.mode == REPUBLISH:
                await deliver(republished(plan, records, target_partitions), len(records))
                continue
            assert scorer is not None and models is not None and to_message is not None
            messages = [to_message(record) for record in records]
            in_flight.append((len(records), messages, asyncio.ensure_future(scorer.score(messages, models))))
            while len(in_flight) > max(scorer.settings.scoring_processes, 1):
                await finish_oldest()
        while in_flight:
            await finish_oldest()
    finally:
        for _read, _messages, scoring in in_flight:
            scoring.cancel()
        bar.close()
        summary.seconds = time.perf_counter() - started
        await producer.stop()
        if scorer is not None:
            scorer.close()
    return summary


def republished(
    plan: ReplayPlan, records: Sequence[ConsumerRecord], partitions: list[int]
) -> list[OutRecord]:
    """The records as they are, with the replay header; a keyless record keeps its partition number."""
    out = []
    for record in records:
        headers = tuple((k, v) for k, v in (record.headers or ()) if k != REPLAY_HEADER)
        partition = None if record.key is not None else partitions[record.partition % len(partitions)]
        out.append(
            OutRecord(
                plan.target,
                record.key,
                record.value,
                record.timestamp,
                partition=partition,
                headers=(*headers, replay_header(plan, record)),
            )
        )
    return out


def reclassified(plan: ReplayPlan, result: BatchResult, rejected: dict[str, int]) -> list[OutRecord]:
    """A scored batch's outputs retargeted to the plan's topics, its refusals counted by code.

    Its messages were marked replayed: history is meant to be classified again, so there is no duplicate
    check, and every record yields its output whichever batch it falls in."""
    for _topic, outcome, code in result.counts:
        if outcome != "classified":
            rejected[code] = rejected.get(code, 0) + 1
    retarget = {CLASSIFIED: plan.target, REJECTED: plan.rejected_topic}
    return [
        OutRecord(retarget[out.topic], out.key, out.value, out.timestamp_ms)
        for out in result.outputs
        if out.topic in retarget
    ]


def _message_maker(source: str, pipeline: Pipeline) -> Callable[[ConsumerRecord], RawMessage]:
    def raw(record: ConsumerRecord) -> RawMessage:
        return RawMessage(
            record.topic, record.partition, record.offset, record.timestamp, record.key, record.value, True
        )

    if schema_of(source) == ITEM_SCHEMA:
        return raw
    classified = AvroSerde(pipeline.catalogue, TOPICS[CLASSIFIED].subject, CLASSIFIED_SCHEMA)

    def from_classified(record: ConsumerRecord) -> RawMessage:
        try:
            value = classified.decode(record.value)
        except DecodeError:
            return raw(record)  # the pipeline says why, as a dead letter of stage decode
        where = value["source"]
        return RawMessage(
            where["topic"],
            where["partition"],
            where["offset"],
            to_millis(where["timestamp"]),
            record.key,
            pipeline.item_serde.encode(value["item"]),
            True,
        )

    return from_classified

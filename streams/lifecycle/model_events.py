"""Model lifecycle events on the control topic ``nomenclature.models``: making, publishing, reading, folding.

Every change of the champion or the challenger is announced there (`schemas/model_event.avsc`): the
registry (a directory shared by the workers) holds the artifacts and aliases, the topic tells the running
workers. It has one partition, so every worker reads every event in order. Keys are
``<registry_id>/<alias>``, so a compacted topic keeps what a worker starting later needs: the latest
champion and challenger event of each registry. Workers follow only their own registry's events.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from models.registry.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from schemas import AvroSerde, Catalogue, now_ms, to_millis
from streams.pipeline.messages import OutRecord
from streams.runtime.topic_reader import read_topic
from streams.topics import MODELS, TOPICS

ANNOUNCED = "announced"
REGISTERED = "registered"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
CHALLENGER_REMOVED = "challenger_removed"
CHAMPION_EVENTS = frozenset({ANNOUNCED, PROMOTED, ROLLED_BACK})


def sender(component: str) -> str:
    return f"{component}@{socket.gethostname()}"


def serde(catalogue: Catalogue) -> AvroSerde:
    return AvroSerde(catalogue, TOPICS[MODELS].subject, TOPICS[MODELS].schema)


def new_event(
    registry: ModelRegistry,
    event: str,
    version: str | None,
    *,
    by: str,
    reason: str | None = None,
    previous: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ModelEvent for `version` (artifact and sha256 from the registry's record)."""
    alias = CHALLENGER if event in (REGISTERED, CHALLENGER_REMOVED) else CHAMPION
    record = registry.get(version) if version is not None else None
    return {
        "registry_id": registry.registry_id(),
        "event": event,
        "alias": alias,
        "version": version,
        "artifact": None if record is None else record.artifact,
        "sha256": None if record is None else record.artifact_sha256,
        "previous": previous,
        "reason": reason,
        "details": None if details is None else json.dumps(details, ensure_ascii=False, sort_keys=True),
        "by": by,
        "at": now_ms(),
    }


def event_key(event: dict[str, Any]) -> bytes:
    return f"{event['registry_id']}/{event['alias']}".encode()


def event_record(codec: AvroSerde, event: dict[str, Any]) -> OutRecord:
    """The event as a record of the control topic's one partition."""
    return OutRecord(MODELS, event_key(event), codec.encode(event), event["at"], partition=0)


@dataclass
class ModelState:
    """What the control topic says of one registry, folded from its events in order."""

    registry_id: str
    champion: dict[str, Any] | None = None
    challenger: dict[str, Any] | None = None
    champions: list[dict[str, Any]] = field(default_factory=list)  # champion events, oldest first
    next_offset: int = 0
    events: int = 0

    def apply(self, event: dict[str, Any], offset: int | None = None) -> bool:
        """Fold one event in; False (and nothing changes) if it is about another registry."""
        if offset is not None:
            self.next_offset = max(self.next_offset, offset + 1)
        if event["registry_id"] != self.registry_id:
            return False
        self.events += 1
        kind = event["event"]
        if kind in CHAMPION_EVENTS:
            self.champion = event
            self.champions.append(event)
            if self.challenger is not None and self.challenger["version"] == event["version"]:
                self.challenger = None
        elif kind == REGISTERED:
            self.challenger = event
        elif kind == CHALLENGER_REMOVED:
            self.challenger = None
        return True


async def read_state(bootstrap: str, catalogue: Catalogue, registry_id: str) -> ModelState:
    """The control topic read from its beginning to its end, folded for `registry_id`."""
    state = ModelState(registry_id)
    try:
        async for record in read_topic(bootstrap, MODELS, catalogue, idle_timeout=3.0):
            value = record.get("value")
            if value is not None:
                state.apply(decoded(value), record["offset"])
            else:
                state.next_offset = max(state.next_offset, record["offset"] + 1)
    except LookupError:  # the topic does not exist yet: nothing was announced
        pass
    return state


def decoded(value: dict[str, Any]) -> dict[str, Any]:
    """A decoded ModelEvent with `at` as epoch milliseconds."""
    out = dict(value)
    out["at"] = to_millis(out["at"])
    return out


async def publish(bootstrap: str, catalogue: Catalogue, events: list[dict[str, Any]]) -> None:
    """Send events with a producer of their own (the CLI; workers use their output producer)."""
    codec = serde(catalogue)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=15000)
    await producer.start()
    try:
        for event in events:
            record = event_record(codec, event)
            await (await producer.send(MODELS, record.value, key=record.key, partition=0))
    finally:
        await producer.stop()

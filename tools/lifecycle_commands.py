"""What `nomenclature correct`, `nomenclature retrain` and the announcing `models` commands do.

`models promote` and `models rollback` change the shared registry and then announce the change on
``nomenclature.models``, which is what running workers follow (`streams.lifecycle.model_follower`). With the
embedded broker not running there is no deployment to tell (its memory storage is gone with it, and a worker
starting later announces the registry's champion itself), so nothing is sent. Errors an operator can fix raise
ValueError (one-line messages through `tools.common.operator_errors`).
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from aiokafka import AIOKafkaProducer

from connectors.kafka_io import produce_items
from models.registry.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from schemas import AvroSerde, catalogue_from_url, now_ms
from streams.lifecycle import model_events
from streams.lifecycle.corrections import CORRECTED_FIELDS, CorrectionProcessor, correction_value
from streams.pipeline.codes import load_code_lists
from streams.pipeline.emit import partition_for
from streams.pipeline.validation import Validator
from streams.runtime.topic_reader import read_topic
from streams.settings import Settings
from streams.topics import CLASSIFIED, CORRECTIONS, MODELS, lifecycle_spec
from tools.broker import port_is_free
from tools.common import run_sync


def _nobody_listens(settings: Settings) -> bool:
    return settings.embedded_broker and port_is_free(settings.broker_port)


def announce_change(
    settings: Settings,
    registry: ModelRegistry,
    before: dict[str, str],
    *,
    rolled_back: bool = False,
    force: bool = False,
) -> str:
    """Announce how the registry's aliases differ from `before` (with `force`: announce them as they are);
    returns what to tell the operator ('' when nothing changed)."""
    after = registry.aliases()
    by = model_events.sender("cli")
    events = []
    champion = after.get(CHAMPION)
    if champion is not None and (force or champion != before.get(CHAMPION)):
        if force:
            kind, command = model_events.ANNOUNCED, "announce"
        elif rolled_back:
            kind, command = model_events.ROLLED_BACK, "rollback"
        else:
            kind, command = model_events.PROMOTED, "promote"
        events.append(
            model_events.new_event(
                registry,
                kind,
                champion,
                by=by,
                previous=before.get(CHAMPION),
                reason=f"`nomenclature models {command}`",
            )
        )
    challenger = after.get(CHALLENGER)
    if force or challenger != before.get(CHALLENGER):
        if challenger is not None:
            events.append(model_events.new_event(registry, model_events.REGISTERED, challenger, by=by))
        elif force or before.get(CHALLENGER) not in (None, champion):
            events.append(model_events.new_event(registry, model_events.CHALLENGER_REMOVED, None, by=by))
    if not events:
        return ""
    if _nobody_listens(settings):
        return (
            f"nothing announced: no broker answers at {settings.bootstrap_servers} "
            "(workers started later announce the registry's champion themselves)"
        )
    catalogue = catalogue_from_url(settings.schema_registry_url)
    try:
        run_sync(model_events.publish(settings.bootstrap_servers, catalogue, events))
    except Exception as exc:
        raise ValueError(
            f"the registry was changed, but announcing it on {MODELS} at {settings.bootstrap_servers} failed "
            f"({type(exc).__name__}: {exc}): running workers still use the models they had; "
            "run `nomenclature models announce` once the broker answers"
        ) from None
    said = ", ".join(f"{e['event']} {e['version'] or ''}".strip() for e in events)
    return f"announced on {MODELS}: {said}"


def _fields(pairs: list[str]) -> dict[str, str]:
    fields = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in CORRECTED_FIELDS:
            raise ValueError(
                f"--field {pair!r}: expected NAME=VALUE with NAME one of {', '.join(CORRECTED_FIELDS)}"
            )
        fields[name] = value
    return fields


async def _classified_item(settings: Settings, item_id: str) -> dict[str, Any] | None:
    """The item of the latest classified record of `item_id`, read from its key's partition only."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([CLASSIFIED])
    finally:
        await admin.close()
    partitions = sorted(p["partition"] for p in described[0]["partitions"])
    if not partitions:
        return None
    key = item_id.encode("utf-8")
    wanted = [partition_for(key, partitions)]
    catalogue = catalogue_from_url(settings.schema_registry_url)
    found = None
    async for record in read_topic(settings.bootstrap_servers, CLASSIFIED, catalogue, partitions=wanted):
        if record["key"] == item_id and record.get("value"):
            found = record["value"]["item"]
    return found


def correct(settings: Settings, args: argparse.Namespace) -> str:
    row: dict[str, Any] = {
        "id": args.id,
        "label": args.label,
        "name": args.name,
        "full_name": args.full_name,
        "user": args.user or getpass.getuser(),
        "comment": args.comment,
        "corrected_at": now_ms(),
        **_fields(args.field),
    }
    if args.name is None:
        item = run_sync(_classified_item(settings, args.id))
        if item is None:
            raise ValueError(
                f"item {args.id!r} is not in {CLASSIFIED}: give its --name (and --full-name) to correct it"
            )
        row["name"], row["full_name"] = item["name"], args.full_name or item["full_name"]
        for name in CORRECTED_FIELDS:
            row.setdefault(name, item.get(name))
    value = correction_value(row)
    catalogue = catalogue_from_url(settings.schema_registry_url)
    validator = Validator(load_code_lists(), settings.max_name_length, settings.max_full_name_length)
    errors = CorrectionProcessor(settings, catalogue, validator).check(value, value["id"], now_ms())[1]
    if errors:
        raise ValueError(
            "the correction is not valid: " + "; ".join(f"{e.field}: {e.code}: {e.message}" for e in errors)
        )
    run_sync(produce_items(settings.bootstrap_servers, CORRECTIONS, [value], catalogue))
    return f"{args.id}: {value['label']} ({value['name']!r}) published to {CORRECTIONS}"


async def _send_request(settings: Settings, value: dict[str, Any]) -> None:
    spec = lifecycle_spec(settings.app_id)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        partitions = await producer.partitions_for(spec.name)
        if not partitions:
            raise ValueError(f"{spec.name} does not exist: no worker of app {settings.app_id!r} has started")
        serde = AvroSerde(catalogue_from_url(settings.schema_registry_url), spec.subject, spec.schema)
        await (await producer.send(spec.name, serde.encode(value), key=b"retrain_request", partition=0))
    finally:
        await producer.stop()


def request_retrain(settings: Settings, reason: str, user: str | None) -> str:
    if _nobody_listens(settings):
        raise ValueError(f"no broker answers at {settings.bootstrap_servers}: no worker to retrain")
    value = {
        "kind": "retrain_request",
        "at": now_ms(),
        "trigger": "manual",
        "reason": reason,
        "requested_by": user or getpass.getuser(),
    }
    run_sync(_send_request(settings, value))
    return f"retraining requested of app {settings.app_id!r}; follow it on GET /models (lifecycle.cycles)"

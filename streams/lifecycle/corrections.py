"""nomenclature.corrections → validate → corrections table + corrections log | rejected, for one micro-batch.

A correction (`schemas/correction.avsc`) carries the item's id, name, full_name, optional corrected fields
and the correct label, so that it stands on its own as a training row. It is validated as a raw item is
(the same `Validator`, plus: the label is required (``required``), `user` and `comment` have limits
(``too_long``: 200 and 2000 characters), `corrected_at` may not lie more than a day in the future
(``corrected_at_future``)); a refused one goes to ``nomenclature.rejected`` with stage ``correction``.

Accepted corrections are appended to the corrections log (`models.retraining.corrections_log`, parquet in the
shared models directory: what retraining reads) and the latest one per item — by ``corrected_at``, then offset
— is kept in the ``corrections`` table. A correction that is now the item's latest is also paired with the
item's shadow labels, when the item was scored by the champion and the challenger now in shadow.
Free of Faust and Kafka, like `streams.pipeline.micro_batch`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas import CORRECTED_FIELDS, AvroSerde, Catalogue, DecodeError, now_ms, to_millis
from streams.pipeline.dead_letters import rejected_record
from streams.pipeline.messages import OutRecord, RawMessage, TableUpdate
from streams.pipeline.micro_batch import key_or_none
from streams.pipeline.validation import Issue, Validator
from streams.settings import Settings
from streams.topics import CORRECTIONS, REJECTED, TOPICS

MAX_USER_LENGTH = 200
MAX_COMMENT_LENGTH = 2000
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000

# (partition, item id) -> stored table value
Lookup = Callable[[int, str], dict[str, Any] | None]


@dataclass(slots=True)
class CorrectionBatch:
    outputs: list[OutRecord] = field(default_factory=list)  # dead letters
    table_updates: list[TableUpdate] = field(default_factory=list)
    log_rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # per partition, for the log
    latest: list[tuple[int, str, str]] = field(default_factory=list)  # (partition, id, label) now latest
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # by code


def correction_value(row: Mapping[str, Any]) -> dict[str, Any]:
    """A Correction record from a loose row (a CSV/JSONL line, a web request, the CLI's options): every
    schema field present, blanks as None, full_name defaulting to name, corrected fields taken from a
    ``corrected_fields`` mapping or from top-level columns of those names, ``corrected_at`` as epoch
    milliseconds or an ISO 8601 text."""

    def text(value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    nested = row.get("corrected_fields") or {}
    fields = {name: text(nested.get(name, row.get(name))) for name in CORRECTED_FIELDS}
    corrected_at = text(row.get("corrected_at"))
    if isinstance(corrected_at, str):
        corrected_at = datetime.fromisoformat(corrected_at.replace("Z", "+00:00"))
    name = text(row.get("name"))
    item_id = row.get("id")
    return {
        "id": str(item_id) if item_id is not None else None,
        "name": name,
        "full_name": text(row.get("full_name")) or name,
        "label": text(row.get("label")),
        "corrected_fields": fields if any(v is not None for v in fields.values()) else None,
        "user": text(row.get("user")),
        "comment": text(row.get("comment")),
        "model_version": text(row.get("model_version")),
        "corrected_at": corrected_at,
    }


class CorrectionProcessor:
    def __init__(self, settings: Settings, catalogue: Catalogue, validator: Validator) -> None:
        self.settings = settings
        self.validator = validator
        self.serde = AvroSerde(catalogue, TOPICS[CORRECTIONS].subject, TOPICS[CORRECTIONS].schema)
        self.rejected_serde = AvroSerde(catalogue, TOPICS[REJECTED].subject, TOPICS[REJECTED].schema)

    def check(
        self, value: dict[str, Any], key: str | None, timestamp_ms: int | None
    ) -> tuple[dict[str, Any], list[Issue]]:
        """The cleaned correction as a log row (without its position) and the errors found."""
        item = {
            "id": value.get("id"),
            "name": value.get("name"),
            "full_name": value.get("full_name"),
            "label": value.get("label"),
            **{name: (value.get("corrected_fields") or {}).get(name) for name in CORRECTED_FIELDS},
        }
        checked = self.validator.validate(item, key=key)
        errors = list(checked.errors)
        if item["label"] is None:
            errors.append(
                Issue("label", "required", "a correction must give the correct label: product or service")
            )
        row = dict(checked.item)
        row.pop("created_at", None)
        for name, limit in (("user", MAX_USER_LENGTH), ("comment", MAX_COMMENT_LENGTH)):
            text = value.get(name)
            if isinstance(text, str) and len(text) > limit:
                errors.append(Issue(name, "too_long", f"{name} has {len(text)} characters, at most {limit}"))
            row[name] = (text.strip() or None) if isinstance(text, str) else None
        row["model_version"] = value.get("model_version")
        corrected_at = value.get("corrected_at")
        now = now_ms()
        if corrected_at is None:
            corrected_at = timestamp_ms if timestamp_ms is not None else now
        else:
            corrected_at = to_millis(corrected_at)
        if corrected_at > now + FUTURE_TOLERANCE_MS:
            errors.append(
                Issue("corrected_at", "corrected_at_future", f"corrected_at {corrected_at} is in the future")
            )
        row["corrected_at"] = corrected_at
        return row, errors

    def process(self, messages: Sequence[RawMessage], lookup: Lookup) -> CorrectionBatch:
        batch = CorrectionBatch()
        pending: dict[tuple[int, str], dict[str, Any]] = {}  # latest so far in this batch
        for message in messages:
            try:
                value = self.serde.decode(message.value)
            except DecodeError as exc:
                self.reject(batch, message, [Issue("", exc.code, exc.message)], None)
                continue
            row, errors = self.check(value, key_or_none(message.key), message.timestamp_ms)
            if errors:
                self.reject(batch, message, errors, value.get("id"))
                continue
            row.update(topic=message.topic, partition=message.partition, offset=message.offset)
            batch.log_rows.setdefault(message.partition, []).append(row)
            batch.accepted += 1
            where = (message.partition, row["id"])
            stored = pending.get(where) or lookup(*where)
            if stored is not None and (stored["corrected_at"], stored["offset"]) > (
                row["corrected_at"],
                message.offset,
            ):
                continue  # an older correction than the one kept: logged, but not the latest
            kept = {
                "label": row["label"],
                "corrected_at": row["corrected_at"],
                "user": row["user"],
                "comment": row["comment"],
                "model_version": row["model_version"],
                "position": message.position,
                "offset": message.offset,
            }
            pending[where] = kept
            batch.latest.append((message.partition, row["id"], row["label"]))
        batch.table_updates = [
            TableUpdate(partition, item_id, json.dumps(kept, ensure_ascii=False).encode("utf-8"))
            for (partition, item_id), kept in pending.items()
        ]
        return batch

    def reject(
        self, batch: CorrectionBatch, message: RawMessage, errors: Sequence[Issue], item_id: str | None
    ) -> None:
        record = rejected_record(message, "correction", errors, item_id, self.settings.dead_letter_max_bytes)
        batch.outputs.append(
            OutRecord(REJECTED, message.key, self.rejected_serde.encode(record), message.timestamp_ms)
        )
        for issue in errors:
            batch.rejected[issue.code] = batch.rejected.get(issue.code, 0) + 1

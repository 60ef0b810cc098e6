"""raw → decode → validate → deduplicate → features → classify → classified | rejected, for one micro-batch.

Pure of Faust and Kafka: it takes raw records and a lookup into the item table, and returns the
records to produce, the item-table updates and the counts. The Faust agent (``streams.agents``), the
benchmarks and the tests drive the same code.

Duplicates: the item table remembers, per id, the content hash and the source position of the record
that was classified. A record with the same id and the same content from a *different* position is a
duplicate and is dead-lettered (code ``duplicate``); from the *same* position it is a re-delivery after a
crash (at-least-once) and is classified again, yielding the same output key and value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models.classifier import Classifier, Prediction
from schemas import AvroSerde, Catalogue, DecodeError
from streams.dead_letters import rejected_record
from streams.messages import BatchResult, OutRecord, RawMessage, TableUpdate
from streams.settings import Settings
from streams.topics import CLASSIFIED, RAW, REJECTED, TOPICS
from streams.validation import Issue, Validator, content_hash

log = logging.getLogger(__name__)

# item id -> stored item-table value, for the partition being processed
Lookup = Callable[[int, str], dict[str, Any] | None]


@dataclass(slots=True)
class _Accepted:
    message: RawMessage
    item: dict[str, Any]
    warnings: list[Issue]
    content_hash: str


class Pipeline:
    def __init__(
        self, settings: Settings, classifier: Classifier, catalogue: Catalogue, validator: Validator
    ):
        self.settings = settings
        self.classifier = classifier
        self.item_serde = AvroSerde(catalogue, TOPICS[RAW].subject, TOPICS[RAW].schema)
        self.classified_serde = AvroSerde(catalogue, TOPICS[CLASSIFIED].subject, TOPICS[CLASSIFIED].schema)
        self.rejected_serde = AvroSerde(catalogue, TOPICS[REJECTED].subject, TOPICS[REJECTED].schema)
        self.validator = validator

    def process(self, messages: Sequence[RawMessage], lookup: Lookup) -> BatchResult:
        result = BatchResult()
        accepted: list[_Accepted] = []
        # state written earlier in this same batch, so two records of one id in a batch see each other
        pending: dict[tuple[int, str], dict[str, Any]] = {}
        for message in messages:
            try:
                item = self.item_serde.decode(message.value)
            except DecodeError as exc:
                self._reject(result, message, "decode", [Issue("", exc.code, exc.message)], None)
                continue
            key = _key_or_none(message.key)
            checked = self.validator.validate(item, key=key)
            if checked.errors:
                self._reject(result, message, "validate", checked.errors, item.get("id"))
                continue
            item = checked.item
            digest = content_hash(item)
            where = (message.partition, item["id"])
            seen = pending.get(where) or lookup(*where)
            if seen is not None and seen["content_hash"] == digest and seen["source"] != message.position:
                issue = Issue(
                    "id",
                    "duplicate",
                    f"item {item['id']!r} with identical content was already classified "
                    f"from {seen['source']}",
                )
                self._reject(result, message, "validate", [issue], item["id"], outcome="duplicate")
                continue
            pending[where] = {"content_hash": digest, "source": message.position}
            accepted.append(_Accepted(message, item, checked.warnings, digest))
        if accepted:
            self._classify(accepted, result)
        return result

    def _classify(self, accepted: list[_Accepted], result: BatchResult) -> None:
        try:
            predictions, digests = self._predict([a.item for a in accepted])
        except Exception:
            # A batch failure must not cost the good items: score one by one to find the culprit.
            log.exception("classifying a batch of %d failed; retrying item by item", len(accepted))
            for one in accepted:
                try:
                    predictions, digests = self._predict([one.item])
                except Exception as exc:
                    issue = Issue("", "classify_failed", f"{type(exc).__name__}: {exc}")
                    self._reject(result, one.message, "classify", [issue], one.item["id"])
                else:
                    self._emit(one, predictions[0], digests[0], result)
            return
        for one, prediction, digest in zip(accepted, predictions, digests, strict=True):
            self._emit(one, prediction, digest, result)

    def _predict(self, items: list[dict[str, Any]]) -> tuple[list[Prediction], list[str]]:
        featurizer = self.classifier.featurizer
        explain = self.settings.explain_tokens
        if explain > 0:
            features, tokens = featurizer.transform_with_tokens(items)
        else:
            features, tokens = featurizer.transform(items), None
        predictions = self.classifier.predict_features(features, tokens, self.settings.top_k, explain)
        return predictions, featurizer.row_digests(features)

    def _emit(self, one: _Accepted, prediction: Prediction, feature_digest: str, result: BatchResult) -> None:
        message, item = one.message, one.item
        now_ms = int(time.time() * 1000)
        record = {
            "id": item["id"],
            "item": item,
            "label": prediction.label,
            "confidence": prediction.confidence,
            "probabilities": prediction.probabilities,
            "top_k": [{"label": label, "probability": p} for label, p in prediction.top_k],
            "explanation": [{"token": token, "weight": weight} for token, weight in prediction.explanation],
            "model_version": self.classifier.version,
            "featurizer_version": self.classifier.featurizer_version,
            "warnings": [issue.as_dict() for issue in one.warnings],
            "source": message.source(),
            "classified_at": now_ms,
        }
        key = item["id"].encode("utf-8")
        result.outputs.append(
            OutRecord(
                CLASSIFIED, key, self.classified_serde.encode(record, validate=False), message.timestamp_ms
            )
        )
        result.table_updates.append(
            TableUpdate(
                message.partition,
                item["id"],
                {
                    "content_hash": one.content_hash,
                    "source": message.position,
                    "feature_digest": feature_digest,
                    "featurizer_version": self.classifier.featurizer_version,
                    "model_version": self.classifier.version,
                    "label": prediction.label,
                    "confidence": round(prediction.confidence, 6),
                    "classified_at": now_ms,
                },
            )
        )
        result.counts.append((message.topic, "classified", ""))

    def _reject(
        self,
        result: BatchResult,
        message: RawMessage,
        stage: str,
        errors: Sequence[Issue],
        item_id: str | None,
        outcome: str = "rejected",
    ) -> None:
        record = rejected_record(message, stage, errors, item_id, self.settings.dead_letter_max_bytes)
        result.outputs.append(
            OutRecord(REJECTED, message.key, self.rejected_serde.encode(record), message.timestamp_ms)
        )
        for issue in errors:
            result.counts.append((message.topic, outcome, issue.code))


def _key_or_none(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd"  # an undecodable key cannot equal any id: validation reports key_mismatch

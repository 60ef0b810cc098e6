"""raw → decode → validate → features → classify → deduplicate → classified | rejected, for one micro-batch.

Two phases, both free of Faust and Kafka:

* :meth:`Pipeline.score` — decode, validate, featurize, classify and encode. Pure: no state, so the
  worker runs it in a separate scoring process (``streams.scoring``) on the machine's other core.
* :meth:`Pipeline.finish` — the stateful part, in the worker: duplicate check against the item table,
  dead letters, item-table updates and counts.

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
from streams.dead_letters import key_text, rejected_record
from streams.messages import BatchResult, OutRecord, RawMessage, TableUpdate
from streams.settings import Settings
from streams.topics import CLASSIFIED, RAW, REJECTED, TOPICS
from streams.validation import Issue, Validator, content_hash

log = logging.getLogger(__name__)

# (partition, item id) -> stored item-table value
Lookup = Callable[[int, str], dict[str, Any] | None]


@dataclass(slots=True)
class Scored:
    """One record after :meth:`Pipeline.score`: either refused (stage + errors) or classified."""

    message: RawMessage
    item_id: str | None
    stage: str | None = None  # decode | validate | classify when refused
    errors: list[Issue] | None = None
    content_hash: str = ""
    value: bytes = b""  # the encoded ClassifiedItem
    state: dict[str, Any] | None = None  # the item-table value


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
        """Both phases in this process."""
        return self.finish(self.score(messages), lookup)

    def score(self, messages: Sequence[RawMessage]) -> list[Scored]:
        scored: list[Scored] = []
        accepted: list[tuple[Scored, dict[str, Any], list[Issue]]] = []
        for message in messages:
            try:
                item = self.item_serde.decode(message.value)
            except DecodeError as exc:
                scored.append(Scored(message, None, "decode", [Issue("", exc.code, exc.message)]))
                continue
            checked = self.validator.validate(item, key=_key_or_none(message.key))
            if checked.errors:
                scored.append(Scored(message, item.get("id"), "validate", checked.errors))
                continue
            one = Scored(message, checked.item["id"], content_hash=content_hash(checked.item))
            scored.append(one)
            accepted.append((one, checked.item, checked.warnings))
        if accepted:
            self._classify(accepted)
        return scored

    def _classify(self, accepted: list[tuple[Scored, dict[str, Any], list[Issue]]]) -> None:
        try:
            predictions, digests = self._predict([item for _, item, _ in accepted])
        except Exception:
            # A batch failure must not cost the good items: score one by one to find the culprit.
            log.exception("classifying a batch of %d failed; retrying item by item", len(accepted))
            for one, item, warnings in accepted:
                try:
                    predictions, digests = self._predict([item])
                except Exception as exc:
                    issue = Issue("", "classify_failed", f"{type(exc).__name__}: {exc}")
                    one.stage, one.errors = "classify", [issue]
                else:
                    self._encode(one, item, warnings, predictions[0], digests[0])
            return
        for (one, item, warnings), prediction, digest in zip(accepted, predictions, digests, strict=True):
            self._encode(one, item, warnings, prediction, digest)

    def _predict(self, items: list[dict[str, Any]]) -> tuple[list[Prediction], list[str]]:
        featurizer = self.classifier.featurizer
        explain = self.settings.explain_tokens
        if explain > 0:
            features, tokens = featurizer.transform_with_tokens(items)
        else:
            features, tokens = featurizer.transform(items), None
        predictions = self.classifier.predict_features(features, tokens, self.settings.top_k, explain)
        return predictions, featurizer.row_digests(features)

    def _encode(
        self, one: Scored, item: dict[str, Any], warnings: list[Issue], prediction: Prediction, digest: str
    ) -> None:
        message = one.message
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
            "warnings": [issue.as_dict() for issue in warnings],
            "source": message.source(),
            "classified_at": now_ms,
        }
        one.value = self.classified_serde.encode(record, validate=False)
        one.state = {
            "content_hash": one.content_hash,
            "source": message.position,
            "feature_digest": digest,
            "featurizer_version": self.classifier.featurizer_version,
            "model_version": self.classifier.version,
            "label": prediction.label,
            "confidence": round(prediction.confidence, 6),
            "classified_at": now_ms,
        }

    def finish(self, scored: Sequence[Scored], lookup: Lookup) -> BatchResult:
        result = BatchResult()
        # state written earlier in this same batch, so two records of one id in a batch see each other
        pending: dict[tuple[int, str], dict[str, Any]] = {}
        for one in scored:
            message = one.message
            if one.stage is not None:
                self._reject(result, message, one.stage, one.errors or [], one.item_id)
                continue
            assert one.item_id is not None and one.state is not None
            where = (message.partition, one.item_id)
            seen = pending.get(where) or lookup(*where)
            same_content = seen is not None and seen["content_hash"] == one.content_hash
            if same_content and seen["source"] != message.position:  # type: ignore[index]
                issue = Issue(
                    "id",
                    "duplicate",
                    f"item {one.item_id!r} with identical content was already classified "
                    f"from {seen['source']}",  # type: ignore[index]
                )
                self._reject(result, message, "validate", [issue], one.item_id, outcome="duplicate")
                continue
            pending[where] = one.state
            key = one.item_id.encode("utf-8")
            result.outputs.append(OutRecord(CLASSIFIED, key, one.value, message.timestamp_ms))
            result.table_updates.append(TableUpdate(message.partition, one.item_id, one.state))
            result.counts.append((message.topic, "classified", ""))
        return result

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
    text = key_text(key)
    return "\ufffd" if text is None else text  # an undecodable key equals no id: validation says key_mismatch

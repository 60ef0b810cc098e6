"""raw → decode → validate → features → classify → deduplicate → classified | rejected, for one micro-batch.

Two phases, both free of Faust and Kafka:

* :meth:`Pipeline.score` — decode and validate (`accept`), featurize, classify and explain (`predict`),
  encode the outputs (`encode`). Pure: no state. With one scoring process (``streams.pipeline.scoring``)
  the worker accepts and encodes and the process, on the machine's other core, predicts, so the two cores
  share the work; with several, each process scores whole micro-batches.
* :meth:`Pipeline.finish` — the stateful part, in the worker: duplicate check against the item table,
  dead letters, item-table updates, review candidates and counts.

While a challenger is in shadow evaluation (`streams.lifecycle.model_follower`), each accepted item is scored
by both models on the same features: the champion's result goes to ``nomenclature.classified``, the
challenger's (without explanation, to keep the cost of shadowing down) to ``nomenclature.shadow`` under the
same key, and the item table records both labels, which the corrections agent later pairs with the user's
label.

Duplicates: the item table remembers, per id, the content hash and the source position of the record
that was classified. A record with the same id and the same content from a *different* position is a
duplicate and is dead-lettered (code ``duplicate``); from the *same* position it is a re-delivery after a
crash (at-least-once) and is classified again, yielding the same output key and value. A record that
carries the replay header (``nomenclature replay``) is history reprocessed on purpose: classified again,
not a duplicate, and not counted again by drift and shadow evaluation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from models.classifier import Classifier, Prediction
from models.drift.baseline import Baseline
from schemas import AvroSerde, Catalogue, DecodeError, now_ms
from streams.pipeline.dead_letters import key_text, rejected_record
from streams.pipeline.messages import (
    BatchResult,
    DriftObservation,
    OutRecord,
    RawMessage,
    ReviewCandidate,
    ShadowObservation,
    TableUpdate,
)
from streams.pipeline.validation import Issue, Validator, content_hash
from streams.settings import Settings
from streams.topics import CLASSIFIED, RAW, REJECTED, SHADOW, TOPICS

log = logging.getLogger(__name__)

# (partition, item id) -> stored item-table value
Lookup = Callable[[int, str], dict[str, Any] | None]
# `Pipeline.predict`'s answer for one item: the champion's prediction, the feature digest and the
# challenger's prediction, or the issue that kept it from being classified
Predicted = tuple[Prediction, str, Prediction | None] | Issue


class Models(NamedTuple):
    """The models one micro-batch is scored with: the champion (outputs, drift bins with its baseline) and,
    while one is in shadow evaluation, the challenger."""

    champion: Classifier
    baseline: Baseline | None = None
    challenger: Classifier | None = None


class Scored(NamedTuple):
    """What :meth:`Pipeline.score` says of one record: refused (stage + errors) or classified.

    A tuple without the message itself, so that it travels back from the scoring process cheaply.
    """

    item_id: str | None
    stage: str | None = None  # decode | validate | classify when refused
    errors: list[Issue] | None = None
    content_hash: str = ""
    value: bytes = b""  # the encoded ClassifiedItem
    state: bytes = b""  # the item-table value (JSON)
    drift: tuple[int, ...] = ()  # the item's bin per drift-baseline feature (empty without a baseline)
    label: str = ""  # the champion's
    confidence: float = 0.0  # the champion's calibrated confidence in `label`
    shadow_value: bytes = b""  # the challenger's encoded ClassifiedItem, while one is shadowed
    shadow_label: str = ""


class Accepted(NamedTuple):
    """What `Pipeline.accept` made of a micro-batch's messages."""

    scored: list[Scored | None]  # per message: refused at decode or validation, or None (accepted)
    accepted: list[tuple[int, dict[str, Any], list[Issue]]]  # (message index, cleaned item, warnings)

    def items(self) -> list[dict[str, Any]]:
        return [item for _, item, _ in self.accepted]


def _refused(item_id: str | None, stage: str, errors: list[Issue]) -> Scored:
    return Scored(item_id, stage, errors)


class Pipeline:
    def __init__(self, settings: Settings, catalogue: Catalogue, validator: Validator):
        self.settings = settings
        self.catalogue = catalogue
        self.item_serde = AvroSerde(catalogue, TOPICS[RAW].subject, TOPICS[RAW].schema)
        self.classified_serde = AvroSerde(catalogue, TOPICS[CLASSIFIED].subject, TOPICS[CLASSIFIED].schema)
        self.rejected_serde = AvroSerde(catalogue, TOPICS[REJECTED].subject, TOPICS[REJECTED].schema)
        self.validator = validator

    def process(self, messages: Sequence[RawMessage], models: Models, lookup: Lookup) -> BatchResult:
        """Both phases in this process."""
        return self.finish(messages, self.score(messages, models), lookup)

    def score(self, messages: Sequence[RawMessage], models: Models) -> list[Scored]:
        """One :class:`Scored` per message, in order: `accept`, `predict` and `encode` in this process."""
        accepted = self.accept(messages)
        items = accepted.items()
        predictions = self.predict(items, models) if items else []
        return self.encode(messages, accepted, predictions, models)

    def accept(self, messages: Sequence[RawMessage]) -> Accepted:
        """Decode and validate: the refused records' `Scored`, and the items to classify."""
        scored: list[Scored | None] = []
        accepted: list[tuple[int, dict[str, Any], list[Issue]]] = []
        for message in messages:
            try:
                item = self.item_serde.decode(message.value)
            except DecodeError as exc:
                scored.append(_refused(None, "decode", [Issue("", exc.code, exc.message)]))
                continue
            checked = self.validator.validate(item, key=key_or_none(message.key))
            if checked.errors:
                scored.append(_refused(item.get("id"), "validate", checked.errors))
                continue
            accepted.append((len(scored), checked.item, checked.warnings))
            scored.append(None)
        return Accepted(scored, accepted)

    def encode(
        self,
        messages: Sequence[RawMessage],
        accepted: Accepted,
        predictions: Sequence[Predicted],
        models: Models,
    ) -> list[Scored]:
        """The `Scored` of every message, from `accept`'s and `predict`'s answers (one per accepted item)."""
        scored = list(accepted.scored)
        for (index, item, warnings), predicted in zip(accepted.accepted, predictions, strict=True):
            scored[index] = (
                _refused(item["id"], "classify", [predicted])
                if isinstance(predicted, Issue)
                else self._encode(messages[index], item, warnings, models, *predicted)
            )
        return scored  # type: ignore[return-value]

    def predict(
        self,
        items: list[dict[str, Any]],
        models: Models,
        top_k: int | None = None,
        explain: int | None = None,
    ) -> list[Predicted]:
        """`_predict`'s answer per item, or the ``classify_failed`` issue of an item that cannot be
        classified: a batch failure must not cost the good items, so it is scored one by one then."""
        try:
            return list(self._predict(items, models, top_k, explain))
        except Exception:
            log.exception("classifying a batch of %d failed; retrying item by item", len(items))
        done: list[Predicted] = []
        for item in items:
            try:
                done.append(self._predict([item], models, top_k, explain)[0])
            except Exception as exc:
                done.append(Issue("", "classify_failed", f"{type(exc).__name__}: {exc}"))
        return done

    def _predict(
        self,
        items: list[dict[str, Any]],
        models: Models,
        top_k: int | None = None,
        explain: int | None = None,
    ) -> list[tuple[Prediction, str, Prediction | None]]:
        """Per item: the champion's prediction, the feature digest and the challenger's prediction.
        ``top_k`` and ``explain`` default to the settings' (``POST /predict`` may ask for others)."""
        champion, challenger = models.champion, models.challenger
        featurizer = champion.featurizer
        composed = featurizer.composed(items)
        features = featurizer.normalize_counts(composed.counts)
        top_k = self.settings.top_k if top_k is None else top_k
        explain = self.settings.explain_tokens if explain is None else explain
        predictions = champion.predict(items, top_k, explain, composed)
        shadows: list[Prediction | None] = [None] * len(items)
        if challenger is not None:
            same = challenger.featurizer.version == featurizer.version
            shadows = list(challenger.predict(items, top_k, 0, composed if same else None))
        return list(zip(predictions, featurizer.row_digests(features), shadows, strict=True))

    def _record(
        self,
        message: RawMessage,
        item: dict[str, Any],
        warnings: list[Issue],
        prediction: Prediction,
        classifier: Classifier,
        classified_at: int,
    ) -> dict[str, Any]:
        return {
            "id": item["id"],
            "item": item,
            **result_fields(prediction, classifier, warnings),
            "source": message.source(),
            "classified_at": classified_at,
        }

    def _encode(
        self,
        message: RawMessage,
        item: dict[str, Any],
        warnings: list[Issue],
        models: Models,
        prediction: Prediction,
        digest: str,
        shadow: Prediction | None,
    ) -> Scored:
        classified_at = now_ms()
        champion = models.champion
        record = self._record(message, item, warnings, prediction, champion, classified_at)
        hashed = content_hash(item)
        state = {
            "content_hash": hashed,
            "source": message.position,
            "feature_digest": digest,
            "featurizer_version": champion.featurizer_version,
            "model_version": champion.version,
            "label": prediction.label,
            "confidence": round(prediction.confidence, 6),
            "classified_at": classified_at,
        }
        shadow_value = b""
        if shadow is not None and models.challenger is not None:
            state["shadow"] = {"version": models.challenger.version, "label": shadow.label}
            shadow_record = self._record(message, item, warnings, shadow, models.challenger, classified_at)
            shadow_value = self.classified_serde.encode(shadow_record, validate=False)
        baseline = models.baseline
        return Scored(
            item["id"],
            content_hash=hashed,
            value=self.classified_serde.encode(record, validate=False),
            state=json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
            drift=() if baseline is None else baseline.bins(item, prediction.label, prediction.confidence),
            label=prediction.label,
            confidence=prediction.confidence,
            shadow_value=shadow_value,
            shadow_label="" if shadow is None else shadow.label,
        )

    def finish(self, messages: Sequence[RawMessage], scored: Sequence[Scored], lookup: Lookup) -> BatchResult:
        """Duplicates, dead letters, item-table updates, review candidates and counts; ``scored`` aligns
        with ``messages``."""
        result = BatchResult()
        outputs = result.outputs
        # (content hash, source) written earlier in this same batch, so two records of one id see each other
        pending: dict[tuple[int, str], tuple[str, str]] = {}
        review = self.settings.review_max_per_hour > 0
        threshold = self.settings.review_threshold
        for message, one in zip(messages, scored, strict=True):
            if one.stage is not None:
                self._reject(result, message, one.stage, one.errors or [], one.item_id)
                continue
            item_id = one.item_id
            assert item_id is not None
            where = (message.partition, item_id)
            seen = pending.get(where)
            if seen is None:
                stored = lookup(*where)
                if stored is not None:
                    seen = (stored["content_hash"], stored["source"])
            position = message.position
            if (
                seen is not None
                and seen[0] == one.content_hash
                and seen[1] != position
                and not message.replayed
            ):
                issue = Issue(
                    "id",
                    "duplicate",
                    f"item {item_id!r} with identical content was already classified from {seen[1]}",
                )
                self._reject(result, message, "validate", [issue], item_id, outcome="duplicate")
                continue
            pending[where] = (one.content_hash, position)
            key = item_id.encode("utf-8")
            outputs.append(OutRecord(CLASSIFIED, key, one.value, message.timestamp_ms))
            result.table_updates.append(TableUpdate(message.partition, item_id, one.state))
            # a re-delivery, or a replay of history, was counted the first time
            counted = not message.replayed and not (seen is not None and seen[1] == position)
            if one.shadow_value:
                outputs.append(OutRecord(SHADOW, key, one.shadow_value, message.timestamp_ms))
                if counted:
                    result.shadow.append(ShadowObservation(message.partition, one.shadow_label == one.label))
            disagreed = bool(one.shadow_value) and one.shadow_label != one.label
            if review and (one.confidence < threshold or disagreed):
                result.review.append(
                    ReviewCandidate(
                        message.partition, item_id, one.confidence, disagreed, one.value, one.shadow_value
                    )
                )
            if one.drift and counted:
                event_time = message.timestamp_ms if message.timestamp_ms is not None else now_ms()
                result.drift.append(DriftObservation(message.partition, event_time, one.drift))
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


def result_fields(
    prediction: Prediction, classifier: Classifier, warnings: Sequence[Issue]
) -> dict[str, Any]:
    """The ClassifiedItem fields that say what `classifier` made of an item (the stream's records and
    ``POST /predict``'s results alike)."""
    return {
        "label": prediction.label,
        "confidence": prediction.confidence,
        "probabilities": prediction.probabilities,
        "top_k": [{"label": label, "probability": p} for label, p in prediction.top_k],
        "explanation": [{"token": token, "weight": weight} for token, weight in prediction.explanation],
        "model_version": classifier.version,
        "featurizer_version": classifier.featurizer_version,
        "warnings": [issue.as_dict() for issue in warnings],
    }


def key_or_none(key: bytes | None) -> str | None:
    if key is None:
        return None
    text = key_text(key)
    return "\ufffd" if text is None else text  # an undecodable key equals no id: validation says key_mismatch

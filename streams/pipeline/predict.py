"""``POST /predict`` without the web server: the request, its items, and what comes back for each.

The same steps as the stream, for callers that want an answer rather than a topic: each item is validated
by the stream's `Validator` (the same `Issue` codes), the valid ones are featurized and classified by
`Pipeline.predict` with the champion, and each result carries the ClassifiedItem's fields
(`streams.pipeline.micro_batch.result_fields`). Nothing is stored, so the stream's duplicate check does
not apply. Free of Faust, like the rest of `streams.pipeline`: `classify_items` runs in the scoring
processes (`streams.pipeline.scoring`).

An item is a NomenclatureItem (``schemas/nomenclature_item.avsc``) as JSON, with ``created_at`` as epoch
milliseconds (Avro's JSON encoding) or ISO 8601 text. It is not cleaned beyond what the validator cleans:
the file connectors' cell conversion (`connectors.files.items.to_item`: numbers as text, label synonyms,
derived ids, full_name defaulting to name) is for export files, and a layer above this one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from models.classifier import Classifier
from streams.pipeline.micro_batch import Models, Pipeline, result_fields
from streams.pipeline.validation import Issue, Validator
from streams.settings import Settings

MAX_TOP_K = 100


class RequestError(Exception):
    """A request refused as a whole: ``status`` 400 (not JSON, wrong shape) or 413 (too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class PredictRequest:
    items: list[Any]
    """The request's items as sent (JSON values; `check_items` judges each)."""
    top_k: int
    explain: int
    """Parts listed in each explanation (0: none)."""


@dataclass(slots=True)
class CheckedItems:
    """A request's items after validation: the accepted ones (cleaned) and the refused ones."""

    accepted: list[tuple[int, dict[str, Any], list[Issue]]] = field(default_factory=list)
    """(index in the request, cleaned item, warnings)"""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """{index, id, errors: [{field, code, message}]}"""


class ItemOutcome(NamedTuple):
    """What `classify_items` says of one item: the result fields, or why classifying it failed."""

    result: dict[str, Any] | None
    errors: tuple[Issue, ...] = ()


def body_too_large(length: int, limit: int) -> RequestError:
    """413 for a body of at least `length` bytes, `limit` being NOMENCLATURE_PREDICT_MAX_BYTES."""
    return RequestError(
        413, f"the body is {length:,} bytes or more, at most {limit:,} (NOMENCLATURE_PREDICT_MAX_BYTES)"
    )


def parse_request(body: bytes, settings: Settings) -> PredictRequest:
    """``{"items": [...], "top_k": 2, "explain": true}`` (only items required); raises `RequestError`."""
    if len(body) > settings.predict_max_bytes:
        raise body_too_large(len(body), settings.predict_max_bytes)
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the body is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, f'expected a JSON object {{"items": [...]}}, not {_json_type(data)}')
    unknown = sorted(set(data) - {"items", "top_k", "explain"})
    if unknown:
        raise RequestError(400, f"unknown request fields {unknown}; expected items, top_k and explain")
    items = data.get("items")
    if not isinstance(items, list):
        raise RequestError(400, f'"items" must be a list of item objects, not {_json_type(items)}')
    if not items:
        raise RequestError(400, '"items" is empty: nothing to classify')
    if len(items) > settings.predict_max_items:
        limit = settings.predict_max_items
        raise RequestError(
            413, f"{len(items):,} items, at most {limit:,} a request (NOMENCLATURE_PREDICT_MAX_ITEMS)"
        )
    top_k = data.get("top_k", settings.top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise RequestError(400, f'"top_k" must be an integer from 1 to {MAX_TOP_K}, not {top_k!r}')
    explain = data.get("explain", True)
    if not isinstance(explain, bool):
        raise RequestError(400, f'"explain" must be true or false, not {explain!r}')
    return PredictRequest(items, top_k, settings.explain_tokens if explain else 0)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def item_from_json(value: Any) -> tuple[dict[str, Any], list[Issue]]:
    """The item the validator expects from a JSON item: ``created_at`` as an aware datetime. Issues found
    here (not an object, an unreadable created_at) use the validator's ``wrong_type`` code."""
    if not isinstance(value, Mapping):
        return {}, [Issue("", "wrong_type", f"an item must be a JSON object, not {_json_type(value)}")]
    item = dict(value)
    created_at = item.get("created_at")
    if created_at is None or isinstance(created_at, datetime):
        return item, []
    try:
        if isinstance(created_at, bool):
            raise TypeError
        if isinstance(created_at, int):
            item["created_at"] = datetime.fromtimestamp(created_at / 1000, UTC)
        elif isinstance(created_at, str):
            parsed = datetime.fromisoformat(created_at.strip().replace("Z", "+00:00"))
            item["created_at"] = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError, OSError):
        shown = repr(created_at)[:80]
        message = f"created_at must be epoch milliseconds or ISO 8601 text, not {shown}"
        return item, [Issue("created_at", "wrong_type", message)]
    return item, []


def check_items(validator: Validator, items: list[Any]) -> CheckedItems:
    """Each item validated as the stream validates a record (without a key to compare the id with)."""
    checked = CheckedItems()
    for index, value in enumerate(items):
        item, errors = item_from_json(value)
        warnings: list[Issue] = []
        if not errors:
            result = validator.validate(item)
            item, errors, warnings = result.item, result.errors, result.warnings
        if errors:
            item_id = value.get("id") if isinstance(value, Mapping) else None
            checked.rejected.append(
                {
                    "index": index,
                    "id": item_id if isinstance(item_id, str) else None,
                    "errors": [issue.as_dict() for issue in errors],
                }
            )
        else:
            checked.accepted.append((index, item, warnings))
    return checked


def classify_items(
    pipeline: Pipeline,
    items: list[tuple[dict[str, Any], list[Issue]]],
    champion: Classifier,
    top_k: int,
    explain: int,
) -> tuple[list[ItemOutcome], float]:
    """Validated (item, warnings) pairs classified by `champion`, one outcome each, in order, and the
    seconds it took (in the process that ran it)."""
    started = time.perf_counter()
    models = Models(champion)  # no challenger: shadowing is the stream's
    outcomes = [
        ItemOutcome(None, (predicted,))
        if isinstance(predicted, Issue)
        else ItemOutcome(result_fields(predicted[0], champion, warnings))
        for (_, warnings), predicted in zip(
            items, pipeline.predict([item for item, _ in items], models, top_k, explain), strict=True
        )
    ]
    return outcomes, time.perf_counter() - started


def response_body(checked: CheckedItems, outcomes: list[ItemOutcome]) -> tuple[int, dict[str, Any]]:
    """The status (200, or 422 when an item was refused) and the body's results and rejected lists, each
    entry with its index in the request; `outcomes` align with ``checked.accepted``."""
    results, rejected = [], list(checked.rejected)
    for (index, item, _), outcome in zip(checked.accepted, outcomes, strict=True):
        entry = {"index": index, "id": item["id"]}
        if outcome.result is None:
            rejected.append(entry | {"errors": [issue.as_dict() for issue in outcome.errors]})
        else:
            results.append(entry | outcome.result)
    rejected.sort(key=lambda entry: entry["index"])
    return (422 if rejected else 200), {"results": results, "rejected": rejected}

"""A row whose columns are already schema fields → a NomenclatureItem dict (or a correction row)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from connectors.files.cell_values import BadDate, as_datetime, as_text
from connectors.files.column_mapping import CORRECTION_FIELDS, ITEM_FIELDS
from connectors.files.labels import DEFAULT_LABELS, normalize_label

_DATE_FIELDS = frozenset({"created_at", "corrected_at"})


class BadRow(ValueError):
    """A row that cannot become a record; ``reason`` is the code reported for it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def stable_id(item: Mapping[str, Any]) -> str:
    """An id derived from the content, for rows that have none."""
    text = "\x1f".join(str(item.get(f) or "") for f in ("name", "full_name", "unit", "source"))
    return "h-" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def clean_fields(
    row: Mapping[str, Any], fields: tuple[str, ...], labels: Mapping[str, str] = DEFAULT_LABELS
) -> dict[str, Any]:
    """Every one of ``fields``: text trimmed (blank → None), numbers as text, dates as aware datetimes, a
    known label synonym as product/service (an unknown one is kept for the validator to refuse)."""
    out: dict[str, Any] = {}
    for name in fields:
        value = row.get(name)
        if name in _DATE_FIELDS:
            try:
                out[name] = as_datetime(value)
            except BadDate as exc:
                raise BadRow(f"bad_{name}", f"{name}: {exc}") from None
            continue
        text = as_text(value)
        if name == "label" and text is not None:
            text = normalize_label(text, labels) or text
        out[name] = text
    if out.get("full_name") is None and out.get("name") is not None:
        out["full_name"] = out["name"]
    return out


def to_item(row: Mapping[str, Any], labels: Mapping[str, str] = DEFAULT_LABELS) -> dict[str, Any]:
    """A NomenclatureItem dict from a row of schema fields: other keys dropped, full_name defaulting to
    name, an id derived from the content (`stable_id`) when there is none."""
    item = clean_fields(row, ITEM_FIELDS, labels)
    if item["id"] is None:
        item["id"] = stable_id(item)
    return item


def correction_row(row: Mapping[str, Any], labels: Mapping[str, str] = DEFAULT_LABELS) -> dict[str, Any]:
    """A flat correction row (`streams.lifecycle.corrections.correction_value` makes the record): cleaned like
    an item, and without an id the one `to_item` derives for the same row, so it names that item."""
    cleaned = clean_fields(row, CORRECTION_FIELDS, labels)
    if cleaned["id"] is None:
        cleaned["id"] = stable_id(cleaned)
    return cleaned

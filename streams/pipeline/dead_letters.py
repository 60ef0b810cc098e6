"""Dead letters: the original bytes of a refused record, where it came from, and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas import now_ms
from streams.pipeline.messages import RawMessage
from streams.pipeline.validation import Issue

STAGES = ("decode", "validate", "classify", "correction")


def key_text(key: bytes | None) -> str | None:
    """The record key as an item id, if it is UTF-8."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def rejected_record(
    message: RawMessage,
    stage: str,
    errors: Sequence[Issue],
    item_id: str | None,
    max_value_bytes: int,
) -> dict[str, Any]:
    """The RejectedRecord for ``message``; values above ``max_value_bytes`` are cut and the cut is noted."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    value = message.value
    issues = [issue.as_dict() for issue in errors]
    if value is not None and len(value) > max_value_bytes:
        issues.append(
            {
                "field": "",
                "code": "value_truncated",
                "message": f"original value of {len(value)} bytes cut to its first {max_value_bytes} bytes "
                f"here; the whole record is at {message.position}",
            }
        )
        value = value[:max_value_bytes]
    return {
        "key": message.key,
        "value": value,
        "item_id": item_id if item_id is not None else key_text(message.key),
        "source": message.source(),
        "stage": stage,
        "errors": issues,
        "rejected_at": now_ms(),
    }

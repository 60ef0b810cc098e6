"""Faust's events as the pipeline's `RawMessage`s (`streams.pipeline.messages`, which knows no Faust)."""

from __future__ import annotations

from typing import Any

import faust

from streams.pipeline.messages import RawMessage
from streams.topics import REPLAY_HEADER


def raw_message(event: faust.EventT) -> RawMessage:
    message = event.message
    timestamp = message.timestamp
    return RawMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=None if timestamp is None else round(timestamp * 1000),
        key=event.key,
        value=event.value,
        replayed=_replayed(message.headers),
    )


def _replayed(headers: Any) -> bool:
    """Whether the record carries the replay header; Faust hands headers over as pairs or as a mapping."""
    if not headers:
        return False
    if isinstance(headers, dict):
        return REPLAY_HEADER in headers
    return any(name == REPLAY_HEADER for name, _ in headers)

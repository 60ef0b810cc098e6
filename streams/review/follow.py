"""Fold ``nomenclature.review`` and ``nomenclature.corrections`` into a `ReviewBoard`: in the worker for
as long as it runs (`follow`), or once to the topics' ends (`load`, for ``nomenclature review export``)."""

from __future__ import annotations

import asyncio
import logging

from schemas import Catalogue
from streams.review.board import ReviewBoard
from streams.runtime.topic_reader import read_topic
from streams.topics import CORRECTIONS, REVIEW

log = logging.getLogger(__name__)


async def _fold(board: ReviewBoard, bootstrap: str, catalogue: Catalogue, topic: str, follow: bool) -> None:
    async for record in read_topic(bootstrap, topic, catalogue, follow=follow):
        value = record.get("value")
        if value is None:  # undecodable: the corrections agent dead-letters such a correction
            continue
        if topic == REVIEW:
            board.add_item(value)
        else:
            board.add_correction(value, record["timestamp"])


async def load(board: ReviewBoard, bootstrap: str, catalogue: Catalogue) -> ReviewBoard:
    """Both topics from the beginning to their current ends."""
    await asyncio.gather(*(_fold(board, bootstrap, catalogue, t, False) for t in (REVIEW, CORRECTIONS)))
    return board


async def follow(board: ReviewBoard, bootstrap: str, catalogue: Catalogue) -> None:
    """Both topics from the beginning, then as records come; a broken connection reads them again."""

    async def forever(topic: str) -> None:
        while True:
            try:
                await _fold(board, bootstrap, catalogue, topic, True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: the fold is idempotent, read it again
                log.warning("following %s for the review page failed (%r); reading it again", topic, exc)
                await asyncio.sleep(2.0)

    await asyncio.gather(forever(REVIEW), forever(CORRECTIONS))

"""The one place where the service works around defects of the embedded broker (Tansu 0.6.0).

Measured defect that matters here: a ListOffsets "latest" answer is the base offset of the partition's
LAST BATCH + 1, not the log end, whenever batches hold more than one record (3 batches of 100 records
report 201 instead of 300). The high-water mark carried by every Fetch response is right.

Consequences without a workaround: Faust changelog recovery after a restart crashes with
``ConsistencyError: The persisted offset ... is higher than the last offset in that topic (highwater)``
and every lag figure is wrong.

Two workarounds were measured on this machine (100k records, one worker, 8 partitions):

* one record per producer batch (``producer_max_batch_size=1``): ListOffsets becomes right, but each
  partition then moves one record per produce round trip — the output path fell from ≈7.3k to ≈3.8k
  items/s, and every producer of every topic (including users' own) would have to comply;
* ask the broker the way it answers correctly: read end offsets from a Fetch response's high-water
  mark. This costs one fetch per recovery or per lag probe and leaves producers free to batch.

The service uses the second: :func:`fetched_end_offsets` is what Faust's consumer uses for end offsets
when ``Settings.is_tansu`` (:func:`apply`), and what ``/stats`` and the tools use for lag.
On Apache Kafka nothing is patched: Faust's recovery and lag trust ListOffsets. The service's own readers
(``/stats`` lag, the topic reader, replay planning, sinks, ``offsets``) read fetch high-water marks on every
broker: the answer is right on both, and a tool pointed at an address is not told which broker answers.

Tansu also completes a consumer group's first join only after half the session timeout (measured:
3 s at 6 s, 5 s at 10 s, 30 s at Faust's default 60 s), so on Tansu the worker uses a 6 s session
timeout, heartbeats every 2 s (:func:`faust_settings`): a worker is ready within seconds (start to assigned
partitions: 7.9 s against 9.9 s at 10 s), and a killed one is noticed sooner.

Tansu also holds a Fetch request for its full ``fetch.max.wait.ms`` even when records are waiting
(measured with aiokafka at 250 records/s over 8 partitions: p50 latency 403 ms at a 1,500 ms wait — the
value Faust hard-codes —, 28 ms at 100 ms, 5 ms at 10 ms). On Tansu the worker's consumer waits at most
``TANSU_FETCH_MAX_WAIT_MS`` (:func:`apply`), 25 ms. Polling is not free: each fetch costs Tansu ≈ 0.7 ms of
CPU however few partitions it names (measured with one aiokafka consumer on empty partitions: 0.07 of a
core at 10 ms, 0.05 at 50 ms, 0.03 at 100 ms), and an idle worker at 10 ms took 0.22 of a core from the broker
and 0.14 for itself, 0.09 and 0.06 at 50 ms; under load that CPU is taken from scoring. 25 ms keeps the
wait a small part of the end-to-end latency while polling 40% as often as at 10 ms.

Other Tansu defects and how the design avoids them (never relied upon):
no idempotent/transactional aiokafka producer (we run at-least-once with deterministic output keys),
aborted transactions visible (no transactions), ``offsets_for_times`` answers 0 (not used),
compaction/retention not enforced (memory grows with traffic; the embedded broker is for dev/test).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


async def fetched_end_offsets(
    bootstrap: str, partitions: Iterable[Any], timeout: float = 10.0
) -> dict[Any, int]:
    """End offset (next offset to be written) of each partition, from Fetch high-water marks.

    ``partitions`` are (topic, partition) pairs (aiokafka's or Faust's); the answer is keyed by them.
    """
    asked = list(partitions)
    if not asked:
        return {}
    tps = [TopicPartition(tp[0], tp[1]) for tp in asked]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(tps)
        # ListOffsets is a lower bound here; fetching from just below it reads little.
        lower = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(lower[tp] - 1, 0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(consumer.highwater(tp) is None for tp in tps):
            if loop.time() > deadline:
                missing = [tp for tp in tps if consumer.highwater(tp) is None]
                raise TimeoutError(f"no fetch high-water mark within {timeout}s for {missing}")
            await consumer.getmany(*tps, timeout_ms=200, max_records=1)
        return {original: int(consumer.highwater(tp)) for original, tp in zip(asked, tps, strict=True)}
    finally:
        await consumer.stop()


def faust_settings(is_tansu: bool, session_timeout: float | None = None) -> dict[str, Any]:
    """Faust's group timing: a 6 s session on Tansu, Faust's own elsewhere, or `session_timeout` (seconds,
    ``NOMENCLATURE_SESSION_TIMEOUT_SECONDS``) with a heartbeat at most a third of it."""
    if session_timeout is None:
        if not is_tansu:
            return {}
        session_timeout = 6.0
    return {
        "broker_session_timeout": session_timeout,
        "broker_heartbeat_interval": min(3.0, session_timeout / 3),
    }


TANSU_FETCH_MAX_WAIT_MS = 25


def apply(is_tansu: bool, bootstrap: str) -> None:
    """On Tansu: Faust's consumer reads end offsets from fetch high-water marks and waits 25 ms a fetch."""
    if not is_tansu:
        return
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_nomenclature_patched", False):
        return

    async def _highwaters(self: Any, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        return await fetched_end_offsets(bootstrap, partitions)

    create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = TANSU_FETCH_MAX_WAIT_MS  # Faust passes a fixed 1500
        return consumer

    AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    AIOKafkaConsumerThread._nomenclature_patched = True  # type: ignore[attr-defined]
    log.info(
        "broker quirks: Tansu — end offsets from fetch high-water marks, fetch wait %d ms",
        TANSU_FETCH_MAX_WAIT_MS,
    )

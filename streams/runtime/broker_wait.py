"""A worker that starts before its broker waits for it: retries with exponential backoff, a clear log line
for every attempt, and a clear error once the wait is over (``Settings.broker_wait_seconds``)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 15.0


class BrokerUnreachable(RuntimeError):
    pass


async def reachable_brokers(bootstrap: str, timeout: float = 5.0) -> int:
    """The number of brokers a metadata answer lists; raises when ``bootstrap`` does not answer."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return len(client.cluster.brokers())
    finally:
        await client.close()


async def wait_for_broker(bootstrap: str, max_wait: float) -> int:
    """Until ``bootstrap`` answers (``max_wait`` seconds at most, 0 = forever); the number of brokers."""
    started = time.monotonic()
    delay, attempt = FIRST_DELAY_S, 1
    while True:
        try:
            brokers = await reachable_brokers(bootstrap)
        except (TimeoutError, KafkaError, OSError) as exc:
            waited = time.monotonic() - started
            if max_wait and waited + delay > max_wait:
                raise BrokerUnreachable(
                    f"broker {bootstrap} did not answer within {max_wait:.0f}s ({attempt} attempts; last: "
                    f"{type(exc).__name__}: {exc}); is it running, and is KAFKA_BOOTSTRAP_SERVERS right?"
                ) from None
            log.warning(
                "broker %s not reachable (%s: %s); attempt %d, retrying in %.0fs",
                bootstrap, type(exc).__name__, exc, attempt, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            delay, attempt = min(delay * 2, MAX_DELAY_S), attempt + 1
            continue
        if attempt > 1:
            log.warning("broker %s answered after %d attempts (%d broker(s))", bootstrap, attempt, brokers)
        return brokers

"""A worker that starts before its broker waits for it: retries with exponential backoff, a clear log line
for every attempt, and a clear error once the wait is over (``Settings.broker_wait_seconds``). The answer
also tells which broker it is (``BrokerAnswer.is_tansu``)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 15.0
# What Tansu answers as its cluster id unless started with another one (Apache Kafka's is a random UUID):
# how a worker given only an address tells that the broker there needs streams.runtime.broker_quirks.
TANSU_CLUSTER_ID = "tansu_cluster"


class BrokerUnreachable(RuntimeError):
    pass


@dataclass(frozen=True)
class BrokerAnswer:
    brokers: int
    cluster_id: str | None

    @property
    def is_tansu(self) -> bool:
        return self.cluster_id == TANSU_CLUSTER_ID


async def ask_broker(bootstrap: str, timeout: float = 5.0) -> BrokerAnswer:
    """What a metadata answer says (brokers, cluster id); raises when ``bootstrap`` does not answer."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
    finally:
        await admin.close()
    return BrokerAnswer(len(cluster["brokers"]), cluster.get("cluster_id"))


async def wait_for_broker(bootstrap: str, max_wait: float) -> BrokerAnswer:
    """Until ``bootstrap`` answers (``max_wait`` seconds at most, 0 = forever); what it answered."""
    started = time.monotonic()
    delay, attempt = FIRST_DELAY_S, 1
    while True:
        try:
            answer = await ask_broker(bootstrap)
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
            log.warning(
                "broker %s answered after %d attempts (%d broker(s))", bootstrap, attempt, answer.brokers
            )
        return answer

"""Benchmark: the broker's CPU while a consumer tails a partition fed one record per produce request.

    python -m tools.bench_broker_tail [--broker tansu|kafka] [--rate 1300] [--seconds 30] [--max-wait-ms 25]
                                      [--min-bytes 1]

A producer with ``linger_ms=0`` (one record batch per record, as `tools.bench`'s latency phase and any
real-time producer send) offers ``--rate`` records/s to a one-partition topic while a consumer reads it from
the end with ``--max-wait-ms``. Prints, every 3 s, the batches in the partition and the broker's CPU as a
share of one core. On Tansu 0.6.0 (memory storage) that share grows with the partition's batch count,
whatever the consumer's fetch wait: each fetch costs in proportion to the batches stored, so the broker
takes a whole core within seconds and the latency of anything it serves grows with it. Apache Kafka finds
a fetch's position through its offset index and stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tools.bench import cpu_seconds, create_topic
from tools.broker import FLAVORS, local_broker

TOPIC = "bench.tail"
REPORT_EVERY = 3.0  # seconds


async def tail(
    bootstrap: str, pid: int, rate: int, seconds: int, max_wait_ms: int, min_bytes: int
) -> list[float]:
    """Offer `rate` records/s for `seconds` while a consumer tails them; the broker's share of a core in
    each REPORT_EVERY seconds."""
    await create_topic(bootstrap, TOPIC, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        fetch_max_wait_ms=max_wait_ms,
        fetch_min_bytes=min_bytes,
    )
    await producer.start()
    await consumer.start()
    received = 0

    async def consume() -> None:
        nonlocal received
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                received += len(records)

    reading = asyncio.ensure_future(consume())
    shares: list[float] = []
    try:
        started = last = time.perf_counter()
        cpu_then = cpu_seconds([pid])
        sent = 0
        while time.perf_counter() - started < seconds:
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            await producer.send(TOPIC, b"x" * 300, key=str(sent).encode())
            sent += 1
            now = time.perf_counter()
            if now - last >= REPORT_EVERY:
                cpu_now = cpu_seconds([pid])
                shares.append((cpu_now - cpu_then) / (now - last))
                print(
                    f"{now - started:5.1f} s  {sent:7,} batches stored, {received:7,} read  "
                    f"broker {shares[-1]:.0%} of a core",
                    flush=True,
                )
                cpu_then, last = cpu_now, now
    finally:
        reading.cancel()
        await producer.stop()
        await consumer.stop()
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", choices=FLAVORS, default="tansu")
    parser.add_argument("--rate", type=int, default=1300, help="records (= produce requests) per second")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--max-wait-ms", type=int, default=25, help="the consumer's fetch_max_wait_ms")
    parser.add_argument("--min-bytes", type=int, default=1, help="the consumer's fetch_min_bytes")
    args = parser.parse_args()
    broker = local_broker(args.broker).start()
    try:
        assert broker.process is not None
        print(f"broker: {broker.flavor} at {broker.bootstrap}, {os.cpu_count()} cores", flush=True)
        shares = asyncio.run(
            tail(
                broker.bootstrap,
                broker.process.pid,
                args.rate,
                args.seconds,
                args.max_wait_ms,
                args.min_bytes,
            )
        )
        if len(shares) >= 2:
            print(f"broker CPU: first {REPORT_EVERY:.0f} s {shares[0]:.0%}, last {shares[-1]:.0%} of a core")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()

"""Helpers for tests against a real broker: worker processes, producing raw bytes, reading outputs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.kafka_io import ensure_topic
from schemas import AvroSerde, LocalCatalogue
from streams.runtime.broker_quirks import fetched_end_offsets
from streams.runtime.topic_metadata import topic_partitions
from streams.runtime.topic_reader import read_topic
from streams.settings import Settings
from streams.topics import CLASSIFIED, RAW, REJECTED, TOPICS
from tools.broker import free_port
from tools.common import run_sync

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Broker:
    bootstrap: str
    flavor: str  # tansu | kafka


def item_serde() -> AvroSerde:
    return AvroSerde(LocalCatalogue(), TOPICS[RAW].subject, TOPICS[RAW].schema)


def classified_serde() -> AvroSerde:
    return AvroSerde(LocalCatalogue(), TOPICS[CLASSIFIED].subject, TOPICS[CLASSIFIED].schema)


def labelled_sample_csv(directory: Path, per_label: int, seed: int) -> Path:
    """`per_label` rows of each label of the bundled ОКПД2 file (seeded), as `directory`/sample.csv."""
    import pandas as pd

    from tools.common import BUNDLED_DATA

    frame = pd.read_csv(BUNDLED_DATA)
    path = directory / "sample.csv"
    frame.groupby("label", group_keys=False).sample(n=per_label, random_state=seed).to_csv(path, index=False)
    return path


def make_item(item_id: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"id": item_id, "name": name, "full_name": fields.pop("full_name", name), **fields}


@dataclass
class Worker:
    """A `nomenclature worker` process with its own data dir, web port and log file."""

    broker: Broker
    data_dir: Path
    app_id: str
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "worker.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.broker.bootstrap,
            NOMENCLATURE_BROKER_FLAVOR=self.broker.flavor,
            NOMENCLATURE_DATA_DIR=str(self.data_dir),
            NOMENCLATURE_APP_ID=self.app_id,
            NOMENCLATURE_WEB_PORT=str(self.web_port),
            NOMENCLATURE_LOG_LEVEL="info",
        )
        env.update(self.extra_env)  # may override any of the above
        return env

    def start(self) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "worker"], cwd=ROOT, env=self.env(), stdout=log, stderr=log
        )
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until /health answers with partitions assigned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                health = self.get("/health")
                if health.get("assignment"):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready in {timeout}s; log tail:\n{self.log_tail()}")

    def get(self, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def assert_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"worker exited with {self.process.returncode}; log tail:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def children(self) -> list[int]:
        """Pids of the worker's child processes (its scoring processes), from /proc."""
        assert self.process is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    found.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                continue
        return found

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """`worker` started and ready for the block, stopped after it."""
    worker.start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def new_worker(broker: Broker, tmp_path: Path, models_dir: Path, app_id: str | None = None) -> Worker:
    data_dir = tmp_path / f"worker-{uuid.uuid4().hex[:6]}"
    shutil.copytree(models_dir, data_dir / "models")
    return Worker(broker, data_dir, app_id or f"test-{uuid.uuid4().hex[:8]}")


async def _produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    # with the worker's partition count, as the worker would (Apache Kafka here creates no topic on use)
    await ensure_topic(bootstrap, topic, Settings().partitions, 1)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 << 20
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


def produce(bootstrap: str, records: Iterable[tuple[bytes | None, bytes | None]], topic: str = RAW) -> int:
    return run_sync(_produce(bootstrap, topic, list(records)))


def produce_items(bootstrap: str, items: Iterable[dict[str, Any]], topic: str = RAW) -> int:
    serde = item_serde()
    return produce(bootstrap, ((i["id"].encode(), serde.encode(i)) for i in items), topic)


async def read_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic`, undecoded (aiokafka ConsumerRecords, each partition's in offset order), up
    to the end offsets it had when called (fetched high-water marks: right on every broker)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, [topic])
        ends = await fetched_end_offsets(bootstrap, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[Any] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                found.extend(r for r in records if r.offset < ends[tp])
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return found
    finally:
        await consumer.stop()


async def _read_values(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    try:
        return [r["value"] async for r in read_topic(bootstrap, topic, LocalCatalogue())]
    except LookupError:  # the topic does not exist yet
        return []


def read_values(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every decoded value of ``topic`` (none while it does not exist)."""
    return run_sync(_read_values(bootstrap, topic))


def read_outputs(bootstrap: str, prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Decoded classified and rejected values whose item id starts with ``prefix``."""
    classified = run_sync(_read_values(bootstrap, CLASSIFIED))
    rejected = run_sync(_read_values(bootstrap, REJECTED))
    return (
        [c for c in classified if c["id"].startswith(prefix)],
        [r for r in rejected if (r["item_id"] or "").startswith(prefix)],
    )


def wait_for_ids(
    bootstrap: str, prefix: str, expected: set[str], worker: Worker, timeout: float = 120.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Poll the output topics until every expected id is classified or rejected."""
    deadline = time.monotonic() + timeout
    while True:
        classified, rejected = read_outputs(bootstrap, prefix)
        seen = {c["id"] for c in classified} | {r["item_id"] for r in rejected}
        if expected <= seen:
            return classified, rejected
        worker.assert_alive()
        if time.monotonic() > deadline:
            missing = sorted(expected - seen)
            raise AssertionError(
                f"{len(missing)} ids missing after {timeout}s, e.g. {missing[:5]}; log:\n{worker.log_tail()}"
            )
        time.sleep(1.0)


def checked_occlusion_weights(classifier: Any, items: list[dict[str, Any]]) -> int:
    """Assert that each explanation weight of `items` equals P(label | item) − P(label | the item's counts
    less the part's contribution), computed the direct way (re-normalised features, a plain forward pass),
    and that a part whose leaving-out lowers nothing has no weight; return how many weights were checked."""
    featurizer = classifier.featurizer
    predictions = classifier.predict(items, explain=12)
    occlusions = featurizer.occlusions(items)
    checked = 0
    for i, prediction in enumerate(predictions):
        label = classifier.labels.index(prediction.label)
        whole = classifier.predict_proba(featurizer.normalize_counts(occlusions.counts[i]))[0, label]
        weights = dict(prediction.explanation)
        own = np.flatnonzero(occlusions.owner == i)
        for r in own:
            part = occlusions.parts[i][r - own[0]]
            remaining = featurizer.normalize_counts(occlusions.counts[i] - occlusions.contributions[r])
            drop = whole - classifier.predict_proba(remaining)[0, label]
            if drop > 1e-5:
                assert weights[part] == pytest.approx(drop, abs=2e-6)
                checked += 1
            else:
                assert weights.get(part, 0.0) <= 1e-5
    return checked

"""``make run``: embedded broker, a model (the shipped default one), a worker, sample items, results."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from connectors.files.source import read_items
from connectors.kafka_io import produce_items
from schemas import Catalogue, catalogue_from_url
from streams.runtime.topic_reader import read_topic
from streams.settings import Settings
from streams.topics import CLASSIFIED, RAW, REJECTED
from tools.broker import EmbeddedBroker, forget_local_tables
from tools.common import ensure_model, run_sync


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    env["NOMENCLATURE_BROKER_FLAVOR"] = "tansu" if settings.is_tansu else "kafka"
    env["NOMENCLATURE_DATA_DIR"] = str(settings.data_dir)
    return env


def run_demo(settings: Settings, samples: Path, keep_running: bool = False) -> None:

    started = time.monotonic()
    broker = None
    if settings.embedded_broker:
        broker = EmbeddedBroker(settings.broker_port).start()
        forget_local_tables(settings.tables_dir)
        print(f"[demo] embedded broker (Tansu) on {broker.bootstrap}", flush=True)
        settings = dataclasses.replace(
            settings, kafka_bootstrap_servers=broker.bootstrap, broker_flavor="tansu"
        )
    worker = None
    try:
        version = ensure_model(settings)
        print(f"[demo] champion model {version} ({time.monotonic() - started:.0f}s)", flush=True)
        worker = subprocess.Popen([sys.executable, "-m", "tools.cli", "worker"], env=_env(settings))
        catalogue = catalogue_from_url(settings.schema_registry_url)
        items = list(read_items(samples))
        sent = run_sync(produce_items(settings.bootstrap_servers, RAW, items, catalogue))
        print(f"[demo] published {sent} sample items to {RAW}", flush=True)
        classified, rejected = _collect(settings, catalogue, sent, worker)
        print(
            f"\n[demo] {CLASSIFIED}: {len(classified)} items ({time.monotonic() - started:.0f}s after start)",
            flush=True,
        )
        for record in classified:
            value = record["value"]
            words = ", ".join(e["token"] for e in value["explanation"])
            print(f"  {value['label']:<8} {value['confidence']:.3f}  {value['item']['name']}  [{words}]")
        print(f"\n[demo] {REJECTED}: {len(rejected)} records", flush=True)
        for record in rejected:
            value = record["value"]
            reasons = "; ".join(f"{e['code']}: {e['message']}" for e in value["errors"])
            print(f"  {value['item_id']} ({value['stage']}) {reasons}")
        print(
            f"\n[demo] web views: http://{settings.web_host}:{settings.web_port}"
            "/dashboard (`nomenclature demo --serve` keeps it up), /review (uncertain items to answer), "
            "/health, /stats, /drift, /models, /metrics; POST /predict",
            flush=True,
        )
        if keep_running:
            print("[demo] worker keeps running; Ctrl-C stops it", flush=True)
            worker.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if broker is not None:
            broker.stop()


def _collect(
    settings: Settings,
    catalogue: Catalogue,
    expected: int,
    worker: subprocess.Popen[bytes],
    timeout: float = 90.0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read both output topics until every published item is accounted for."""

    async def read(topic: str) -> list[dict[str, Any]]:
        try:
            return [r async for r in read_topic(settings.bootstrap_servers, topic, catalogue, idle_timeout=1)]
        except LookupError:  # the topic does not exist yet
            return []

    deadline = time.monotonic() + timeout
    while True:
        classified = run_sync(read(CLASSIFIED))
        rejected = run_sync(read(REJECTED))
        if len(classified) + len(rejected) >= expected:
            return classified, rejected
        if worker.poll() is not None:
            raise SystemExit(f"[demo] the worker exited with code {worker.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"[demo] only {len(classified) + len(rejected)} of {expected} items came out")
        time.sleep(1)

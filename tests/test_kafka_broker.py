"""`nomenclature broker --flavor kafka`: Apache Kafka itself (KRaft, from `make kafka`'s jars), started and
stopped as a user would, used by `nomenclature worker`, `produce` and `consume` through
KAFKA_BOOTSTRAP_SERVERS; the clear errors when Java or the jars are missing; and the faults only a real
broker allows: killed mid-stream and restarted on its data dir, absent when the worker starts."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import (
    ROOT,
    Broker,
    make_item,
    new_worker,
    produce_items,
    read_outputs,
    run_sync,
    wait_for_ids,
)
from tests.test_e2e import labelled_rows
from tools import broker as brokers
from tools.broker import KafkaBroker, MissingKafka, free_port

SAMPLES = ROOT / "connectors" / "samples" / "sample_items.csv"


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if needle in line:
            return line
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no {needle!r} from the broker command (exit {process.poll()})")


@pytest.mark.kafka
def test_kafka_broker_command_serves_worker_produce_and_consume(tmp_path: Path, models_dir: Path) -> None:
    port, data_dir = free_port(), tmp_path / "kafka"
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "broker", "--flavor", "kafka", "--port", str(port),
         "--data-dir", str(data_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = wait_for_line(process, "listening on", 120)
        bootstrap = f"127.0.0.1:{port}"
        assert "Apache Kafka" in line and bootstrap in line and f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}" in line
        assert (data_dir / "log" / "meta.properties").is_file()  # KRaft storage formatted there

        worker = new_worker(Broker(bootstrap, "kafka"), tmp_path, models_dir).start()
        try:
            worker.wait_ready()
            env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "NOMENCLATURE_DATA_DIR": str(tmp_path)}
            produced = cli("produce", "--input", str(SAMPLES), env=env)
            assert produced.returncode == 0, produced.stderr
            report = json.loads(produced.stdout)
            assert report["created_topic"] is False  # the worker made it, with the partitions it reads
            skipped = {row["row"] for row in report["files"][0]["skipped_rows"]}  # lines of the file
            with SAMPLES.open(encoding="utf-8", newline="") as handle:
                rows = enumerate(csv.DictReader(handle), start=2)
                ids = {row["id"] for line, row in rows if line not in skipped}
            assert 20 < len(ids) <= report["totals"]["sent"]  # the samples repeat an id (a duplicate)
            classified, rejected = wait_for_ids(bootstrap, "", ids, worker)
            assert {c["id"] for c in classified} | {r["item_id"] for r in rejected} >= ids
            consumed = cli("consume", "--limit", str(len(classified)), env=env)
            assert consumed.returncode == 0, consumed.stderr
            records = [json.loads(line) for line in consumed.stdout.splitlines() if line.strip()]
            assert {r["key"] for r in records} == {c["id"] for c in classified}
            assert worker.get("/health")["broker"]["flavor"] == "kafka"
        finally:
            worker.stop()
    finally:
        process.send_signal(signal.SIGTERM)
        remaining = process.communicate(timeout=60)[0]
    assert process.returncode == 0, remaining
    assert (data_dir / "log").is_dir()  # a given data dir is kept for the next start


@pytest.mark.kafka
def test_a_restart_on_the_same_data_dir_keeps_the_topics(tmp_path: Path) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def topics(bootstrap: str, create: str | None = None) -> set[str]:
        """The topics the broker lists, asked again for up to 30 s until "kept" is among them: the metadata
        a broker answers with may lag a topic's creation, and a restarted broker's its log."""
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            if create:
                await admin.create_topics([NewTopic(create, 3, 1)])
            deadline = time.monotonic() + 30
            listed = set(await admin.list_topics())
            while "kept" not in listed and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                listed = set(await admin.list_topics())
            return listed
        finally:
            await admin.close()

    kafka = KafkaBroker(data_dir=tmp_path / "kafka").start()
    try:
        assert "kept" in run_sync(topics(kafka.bootstrap, create="kept"))
        kafka.kill()  # kill -9
        kafka.start()
        assert "kept" in run_sync(topics(kafka.bootstrap))
    finally:
        kafka.stop()


def test_missing_jars_say_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(brokers, "KAFKA_LIB", tmp_path / "empty")
    with pytest.raises(MissingKafka, match="make kafka"):
        KafkaBroker().start()


def test_missing_java_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(MissingKafka, match="Java 17"):
        KafkaBroker().start()


def test_cluster_ids_never_read_as_a_command_line_option() -> None:
    # One id in 64 would start with "-"; kafka-storage then fails with "expected one argument".
    ids = [brokers._cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(i) for i in ids} == {22}


def _items(prefix: str, count: int) -> list[dict[str, object]]:
    rows = labelled_rows(500)
    return [make_item(f"{prefix}-{i}", rows[i % len(rows)]["name"] + f" {i}") for i in range(count)]


@pytest.mark.kafka
def test_a_broker_killed_mid_stream_and_restarted_loses_no_id(tmp_path: Path, models_dir: Path) -> None:
    kafka = KafkaBroker(data_dir=tmp_path / "kafka").start()
    try:
        items = _items("bk", 20000)
        produce_items(kafka.bootstrap, items)
        worker = new_worker(Broker(kafka.bootstrap, "kafka"), tmp_path, models_dir).start()
        try:
            worker.wait_ready()
            deadline = time.monotonic() + 120
            while len(read_outputs(kafka.bootstrap, "bk-")[0]) < 2000:
                assert time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.5)
            kafka.kill()  # kill -9: no controlled shutdown, the worker's connections just break
            time.sleep(5)
            worker.assert_alive()
            kafka.start()  # same port, same data dir: the items and the group's offsets are still there
            classified, rejected = wait_for_ids(
                kafka.bootstrap, "bk-", {str(i["id"]) for i in items}, worker, timeout=300
            )
            worker.assert_alive()  # it reconnected by itself
        finally:
            worker.stop()
    finally:
        kafka.stop()
    assert not rejected, rejected[:3]
    assert {c["id"] for c in classified} == {i["id"] for i in items}


@pytest.mark.kafka
def test_a_worker_started_before_its_broker_waits_then_works(tmp_path: Path, models_dir: Path) -> None:
    kafka = KafkaBroker(data_dir=tmp_path / "kafka")  # not started yet: nothing listens on its port
    worker = new_worker(Broker(kafka.bootstrap, "kafka"), tmp_path, models_dir).start()
    try:
        deadline = time.monotonic() + 30
        while worker.log_tail().count("not reachable") < 2:  # a line per attempt, with backoff
            worker.assert_alive()
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
        assert f"broker {kafka.bootstrap} not reachable" in worker.log_tail()
        kafka.start()
        worker.wait_ready(timeout=120)
        items = _items("late", 200)
        produce_items(kafka.bootstrap, items)
        classified, rejected = wait_for_ids(kafka.bootstrap, "late-", {str(i["id"]) for i in items}, worker)
        assert not rejected and len(classified) >= len(items)
        assert "answered after" in worker.log_path.read_text()
    finally:
        worker.stop()
        kafka.stop()


def test_a_worker_gives_up_on_an_absent_broker_with_a_clear_message(tmp_path: Path, models_dir: Path) -> None:
    absent = Broker(f"127.0.0.1:{free_port()}", "kafka")
    worker = new_worker(absent, tmp_path, models_dir)
    worker.extra_env["NOMENCLATURE_BROKER_WAIT_SECONDS"] = "4"
    worker.start()
    assert worker.process is not None
    assert worker.process.wait(60) != 0
    log = worker.log_path.read_text()
    assert f"broker {absent.bootstrap} did not answer within 4s" in log
    assert "KAFKA_BOOTSTRAP_SERVERS" in log and "Traceback" not in log


def test_a_worker_told_only_an_address_finds_out_which_broker_it_is(
    broker: Broker, tmp_path: Path, models_dir: Path
) -> None:
    # `nomenclature broker` prints KAFKA_BOOTSTRAP_SERVERS for Tansu too; without the flavour a worker
    # would otherwise take it for Kafka and skip the workarounds its changelog recovery needs.
    worker = new_worker(broker, tmp_path, models_dir)
    worker.extra_env["NOMENCLATURE_BROKER_FLAVOR"] = "auto"
    worker.start()
    try:
        worker.wait_ready()
        assert worker.get("/health")["broker"]["flavor"] == broker.flavor
        said = f"the broker at {broker.bootstrap} is Tansu (cluster id tansu_cluster)"
        assert (said in worker.log_path.read_text()) == (broker.flavor == "tansu"), worker.log_tail()
    finally:
        worker.stop()

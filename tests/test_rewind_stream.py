"""Reprocessing history through the live pipeline, on a real broker with a real worker: `offsets reset`
rewinds a stopped worker group (and refuses while the group has members), and `replay` re-publishes raw
records that the worker classifies again instead of calling them duplicates."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streams.topics import RAW
from tests.support import Broker, Worker, make_item, new_worker, produce_items, read_outputs
from tools import cli

ITEMS = 40


def run_cli(monkeypatch: pytest.MonkeyPatch, worker: Worker, *argv: str) -> None:
    for name, value in worker.env().items():
        if name.startswith(("KAFKA_", "NOMENCLATURE_")):
            monkeypatch.setenv(name, value)
    cli.main(list(argv))


def classified_counts(broker: Broker, prefix: str) -> tuple[Counter[str], list[dict[str, Any]]]:
    classified, rejected = read_outputs(broker.bootstrap, prefix)
    return Counter(c["id"] for c in classified), rejected


def wait_counts(broker: Broker, prefix: str, worker: Worker, each: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        counts, rejected = classified_counts(broker, prefix)
        assert not rejected, rejected[:2]
        if len(counts) == ITEMS and min(counts.values()) >= each:
            assert max(counts.values()) == each, counts  # nothing classified more often than asked
            return
        worker.assert_alive()
        assert time.monotonic() < deadline, f"{counts}\n{worker.log_tail()}"
        time.sleep(1)


def committed_total(monkeypatch: pytest.MonkeyPatch, worker: Worker, capsys: pytest.CaptureFixture) -> int:
    capsys.readouterr()
    run_cli(monkeypatch, worker, "offsets", "show", "--topic", RAW, "--json")
    shown = json.loads(capsys.readouterr().out)
    return sum(row["committed"] or 0 for row in shown["offsets"])


def test_offsets_reset_rewinds_the_stopped_group_and_replays_are_not_duplicates(
    fresh_broker: Broker,
    tmp_path: Path,
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    broker = fresh_broker
    p = "rw"
    names = ["Ремонт кровли", "Картридж HP CF226X", "Аренда склада", "Бумага офисная А4"]
    produce_items(broker.bootstrap, [make_item(f"{p}-{i}", f"{names[i % 4]} {i}") for i in range(ITEMS)])
    worker = new_worker(broker, tmp_path, models_dir).start()
    try:
        worker.wait_ready()
        wait_counts(broker, p, worker, each=1)
        deadline = time.monotonic() + 30
        while committed_total(monkeypatch, worker, capsys) < ITEMS:  # Faust commits every few seconds
            assert time.monotonic() < deadline
            time.sleep(1)

        with pytest.raises(SystemExit, match="refused"):
            run_cli(monkeypatch, worker, "offsets", "reset", "--to-earliest")
        assert committed_total(monkeypatch, worker, capsys) == ITEMS  # nothing moved

        worker.stop()
        run_cli(monkeypatch, worker, "offsets", "reset", "--to-earliest", "--dry-run")
        plan = capsys.readouterr().out
        assert "reset plan" in plan and committed_total(monkeypatch, worker, capsys) == ITEMS
        if broker.flavor == "tansu":  # it keeps the stopped worker listed: the operator says it is gone
            with pytest.raises(SystemExit, match="--members-gone"):
                run_cli(monkeypatch, worker, "offsets", "reset", "--to-earliest")
            run_cli(monkeypatch, worker, "offsets", "reset", "--to-earliest", "--members-gone")
        else:
            _reset_when_the_group_empties(monkeypatch, worker)
        assert committed_total(monkeypatch, worker, capsys) == 0

        worker.start()
        worker.wait_ready()
        wait_counts(broker, p, worker, each=2)  # every item classified again, none a duplicate

        capsys.readouterr()
        run_cli(monkeypatch, worker, "replay", "--topic", RAW, "--no-progress")
        summary = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert summary["records_written"] == {RAW: ITEMS}
        wait_counts(broker, p, worker, each=3)  # replayed records classified, not dead-lettered
        stats = worker.get("/stats")
        assert stats["topics"][RAW]["duplicates"] == 0, stats
    finally:
        worker.stop()


def _reset_when_the_group_empties(monkeypatch: pytest.MonkeyPatch, worker: Worker) -> None:
    """On Kafka a stopped member is listed until its LeaveGroup or session timeout lands."""
    deadline = time.monotonic() + 60
    while True:
        try:
            run_cli(monkeypatch, worker, "offsets", "reset", "--to-earliest")
            return
        except SystemExit:
            assert time.monotonic() < deadline
            time.sleep(2)

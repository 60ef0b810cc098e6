"""The model lifecycle on a real broker: corrections → retraining → gate → shadow → promotion → hot swap.

Workers are real `nomenclature worker` processes sharing one models directory (NOMENCLATURE_MODELS_DIR),
each with its own data directory, on a broker of their own (`fresh_broker`): the control topic
nomenclature.models and the corrections must not mix with other tests'.
"""

from __future__ import annotations

import csv
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka_io import produce_items
from models.registry.model_registry import ModelRegistry
from schemas import LocalCatalogue
from streams.lifecycle import model_events
from streams.lifecycle.corrections import correction_value
from streams.runtime.topic_reader import read_topic
from streams.topics import CLASSIFIED, CORRECTIONS, RAW, REJECTED, SHADOW
from tests.lifecycle_data import adversarial_corrections, wrong_slice
from tests.support import Broker, Worker, run_sync
from tools.cli import main
from tools.common import BUNDLED_DATA

SWAP_TIMEOUT = 240.0  # seconds from the corrections to a model every worker uses (training included)


def lifecycle_worker(broker: Broker, tmp_path: Path, models: Path, app_id: str, **env: str) -> Worker:
    data_dir = tmp_path / f"worker-{uuid.uuid4().hex[:6]}"
    worker = Worker(broker, data_dir, app_id)
    worker.extra_env = {
        "NOMENCLATURE_MODELS_DIR": str(models),
        "NOMENCLATURE_PARTITIONS": "4",
        "NOMENCLATURE_RETRAIN_INTERVAL_SECONDS": "0",
        "NOMENCLATURE_DRIFT_WINDOW_SECONDS": "3600",
        **env,
    }
    return worker


def cli_env(monkeypatch: pytest.MonkeyPatch, broker: Broker, models: Path, app_id: str) -> None:
    """The environment `nomenclature …` commands of the test run in (they read settings from it)."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("NOMENCLATURE_BROKER_FLAVOR", broker.flavor)
    monkeypatch.setenv("NOMENCLATURE_MODELS_DIR", str(models))
    monkeypatch.setenv("NOMENCLATURE_APP_ID", app_id)


def post(worker: Worker, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.web_port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def accepted(worker: Worker) -> int:
    return worker.get("/models")["corrections"]["accepted"]


def publish(broker: Broker, topic: str, records: list[dict[str, Any]]) -> None:
    run_sync(produce_items(broker.bootstrap, topic, records, LocalCatalogue()))


def corrections_of(items: list[dict[str, Any]], user: str = "tester") -> list[dict[str, Any]]:
    return [correction_value({**item, "user": user}) for item in items]


def read_values(broker: Broker, topic: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        try:
            return [r async for r in read_topic(broker.bootstrap, topic, LocalCatalogue(), idle_timeout=2)]
        except LookupError:
            return []

    return run_sync(read())


def wait_until(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    workers: list[Worker],
    detail: Callable[[], str] | None = None,
) -> Any:
    """``check()`` once it is truthy; on timeout an AssertionError with ``detail()`` and the workers' logs."""
    deadline = time.monotonic() + timeout
    while True:
        for worker in workers:
            worker.assert_alive()
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            tails = "\n\n".join(w.log_tail(40) for w in workers)
            more = "" if detail is None else f"; {detail()}"
            raise AssertionError(f"{what}: not within {timeout:.0f}s{more}; logs:\n{tails}")
        time.sleep(1.0)


def whereabouts(broker: Broker, ids: set[str], workers: list[Worker]) -> str:
    """Where the items of ``ids`` went, and what the workers serve: for a failure message."""
    found = {
        topic: len(ids & {r["key"] for r in read_values(broker, topic)})
        for topic in (CLASSIFIED, SHADOW, REJECTED)
    }
    return f"of {len(ids)} ids, found per topic {found}; serving {[serving(w) for w in workers]}"


def same_challenger(workers: list[Worker]) -> str | None:
    """The challenger every worker shadows, once they all shadow the same one."""
    versions = {serving(worker)[1] for worker in workers}
    return versions.pop() if len(versions) == 1 and None not in versions else None


def serving(worker: Worker) -> tuple[str | None, str | None]:
    body = worker.get("/models")["worker"]
    return (
        (body["champion"] or {}).get("version"),
        (body["challenger"] or {}).get("version"),
    )


def bundled_names() -> list[str]:
    with BUNDLED_DATA.open(encoding="utf-8", newline="") as handle:
        return [row["name"].strip() for row in csv.DictReader(handle) if row["name"].strip()]


class Traffic:
    """Raw items published at a steady rate from a thread until stopped: ids <prefix>-<n>."""

    def __init__(self, broker: Broker, prefix: str, rate: float = 40.0) -> None:
        self.names = bundled_names()[::37]
        self.broker, self.prefix, self.rate = broker, prefix, rate
        self.sent: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _items(self) -> Iterator[dict[str, Any]]:
        n = 0
        while not self.stopped.is_set():
            item_id = f"{self.prefix}-{n}"
            name = self.names[n % len(self.names)]
            self.sent.append(item_id)
            yield {"id": item_id, "name": name, "full_name": name}
            n += 1

    def _run(self) -> None:
        run_sync(produce_items(self.broker.bootstrap, RAW, self._items(), LocalCatalogue(), rate=self.rate))

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(30)


@pytest.fixture
def shared_models(models_dir: Path, tmp_path: Path) -> Path:
    shared = tmp_path / "shared-models"
    shutil.copytree(models_dir, shared)
    return shared


def test_corrections_lead_to_a_promoted_model_that_both_workers_use_without_restart(
    fresh_broker: Broker, tmp_path: Path, shared_models: Path, reference_dataset: Path
) -> None:
    app_id = f"life-{uuid.uuid4().hex[:6]}"
    env = {
        "NOMENCLATURE_REFERENCE_DATASET": str(reference_dataset),
        "NOMENCLATURE_RETRAIN_MIN_CORRECTIONS": "60",
        "NOMENCLATURE_SHADOW_MIN_ITEMS": "50",
    }
    workers = [lifecycle_worker(fresh_broker, tmp_path, shared_models, app_id, **env) for _ in range(2)]
    registry = ModelRegistry(shared_models)
    champion = registry.get("champion").version
    family = wrong_slice(registry.load("champion"), 120, seed=5, prefix="fix")
    taught, shadowed = family[:80], family[80:]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()
        pids = [w.process.pid for w in workers if w.process is not None]
        assert [serving(w) for w in workers] == [(champion, None)] * 2
        with Traffic(fresh_broker, "bg") as traffic:
            started = time.monotonic()
            publish(fresh_broker, CORRECTIONS, corrections_of(taught))
            challenger = wait_until(
                "a challenger in shadow on both workers",
                lambda: same_challenger(workers),
                SWAP_TIMEOUT,
                workers,
            )
            lifecycle = workers[0].get("/models")["lifecycle"]
            cycle = next(c for c in lifecycle["cycles"] if c.get("version") == challenger)
            assert cycle["trigger"] == "corrections" and cycle["new_corrections"] >= 60
            assert cycle["gate"]["eligible"], cycle["gate"]
            gate = cycle["gate"]
            assert gate["corrections"]["challenger_accuracy"] > gate["corrections"]["champion_accuracy"]

            publish(fresh_broker, RAW, [{k: v for k, v in i.items() if k != "label"} for i in shadowed])
            shadow_ids = {i["id"] for i in shadowed}
            wait_until(
                "shadow results for the shadowed items",
                lambda: shadow_ids <= {r["key"] for r in read_values(fresh_broker, SHADOW)},
                120,
                workers,
                lambda: whereabouts(fresh_broker, shadow_ids, workers),
            )
            publish(fresh_broker, CORRECTIONS, corrections_of(shadowed))
            wait_until(
                "the challenger promoted and served by both workers",
                lambda: all(serving(w) == (challenger, None) for w in workers),
                SWAP_TIMEOUT,
                workers,
            )
            swapped_after = time.monotonic() - started
            time.sleep(3)  # traffic classified by the new champion on both workers
        assert [w.process.pid for w in workers if w.process is not None] == pids
        for worker in workers:
            worker.assert_alive()
        classified = wait_until(
            "every traffic id classified",
            lambda: (
                (found := read_values(fresh_broker, CLASSIFIED))
                and set(traffic.sent) <= {r["key"] for r in found}
                and found
            ),
            120,
            workers,
        )
        shadow_records = read_values(fresh_broker, SHADOW)
        bodies = [w.get("/models") for w in workers]
        assignments = [w.get("/health")["assignment"] for w in workers]
    finally:
        for worker in workers:
            worker.stop()

    by_version: dict[str, set[int]] = {}
    for record in classified:
        by_version.setdefault(record["value"]["model_version"], set()).add(record["partition"])
    assert set(by_version) <= {champion, challenger}
    worker_partitions = [
        {int(tp.rsplit(":", 1)[1]) for tp in a if tp.startswith(RAW + ":")} for a in assignments
    ]
    assert all(partitions & by_version[challenger] for partitions in worker_partitions), (
        "each worker classified with the promoted model",
        by_version,
        worker_partitions,
    )
    first = {r["key"]: r["value"] for r in reversed(classified) if r["key"] in shadow_ids}
    assert all(v["model_version"] == champion and v["label"] == "product" for v in first.values())
    shadow = {r["key"]: r["value"] for r in shadow_records if r["key"] in shadow_ids}
    assert set(shadow) == shadow_ids
    assert all(v["model_version"] == challenger and v["label"] == "service" for v in shadow.values())
    promoted = next(c for c in bodies[0]["lifecycle"]["cycles"] if c.get("version") == challenger)
    assert promoted["status"] == "promoted" and promoted["promoted_by"] == "lifecycle"
    verdict = promoted["shadow"]
    # promoted as soon as the test held: with no champion-only pair, 6 challenger-only ones give p < 0.05
    assert verdict["c_challenger_only_right"] >= 6 and verdict["b_champion_only_right"] == 0
    assert verdict["p_value"] < 0.05 and verdict["scored"] >= 50
    assert all(
        b["worker"]["champion"]["version"] == challenger and not b["worker"]["refused"] for b in bodies
    )
    assert bodies[0]["registry"]["champion_history"][-2:] == [champion, challenger]
    hosts = [b["lifecycle"]["host"] == "this worker" for b in bodies]
    assert sorted(hosts) == [False, True], "one worker runs the coordinator, the other forwards /models to it"
    assert bodies[0]["lifecycle"]["cycles"][0]["id"] == bodies[1]["lifecycle"]["cycles"][0]["id"]
    stamped = [r for r in classified if r["value"]["model_version"] == challenger]
    first = min(stamped, key=lambda r: (r["value"]["classified_at"], r["partition"], r["offset"]))
    print(
        f"corrections to a model both workers serve: {swapped_after:.0f}s; first output of {challenger}: "
        f"{first['key']} at {first['value']['classified_at']} ({first['topic']}:{first['partition']}:"
        f"{first['offset']}); cycle {promoted}"
    )


def test_a_challenger_worse_on_the_reference_is_not_promoted(
    fresh_broker: Broker,
    tmp_path: Path,
    shared_models: Path,
    reference_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app_id = f"worse-{uuid.uuid4().hex[:6]}"
    env = {
        "NOMENCLATURE_REFERENCE_DATASET": str(reference_dataset),
        "NOMENCLATURE_RETRAIN_MIN_CORRECTIONS": "0",  # no cycle on count: `nomenclature retrain` asks for it
        "NOMENCLATURE_SHADOW_MIN_ITEMS": "20",
    }
    cli_env(monkeypatch, fresh_broker, shared_models, app_id)
    worker = lifecycle_worker(fresh_broker, tmp_path, shared_models, app_id, **env)
    champion = ModelRegistry(shared_models).get("champion").version
    taught = adversarial_corrections(4000, seed=3, prefix="adv")
    # names it was taught, under new ids: the worse challenger calls them services, the champion products
    shadowed = [{**item, "id": f"again-{item['id']}"} for item in taught[:60]]
    try:
        worker.start().wait_ready()
        publish(fresh_broker, CORRECTIONS, corrections_of(taught))
        wait_until("the corrections accepted", lambda: accepted(worker) >= len(taught), 60, [worker])
        main(["retrain", "--reason", "a test asks", "--user", "qa"])
        assert f"retraining requested of app {app_id!r}" in capsys.readouterr().out
        challenger = wait_until("a challenger in shadow", lambda: serving(worker)[1], SWAP_TIMEOUT, [worker])
        # the shadowed items, "corrected" the challenger's way: the shadow comparison favours it
        publish(fresh_broker, RAW, [{**i, "full_name": i["name"], "label": None} for i in shadowed])
        shadowed_ids = {i["id"] for i in shadowed}
        wait_until(
            "shadow results",
            lambda: shadowed_ids <= {r["key"] for r in read_values(fresh_broker, SHADOW)},
            120,
            [worker],
            lambda: whereabouts(fresh_broker, shadowed_ids, [worker]),
        )
        publish(fresh_broker, CORRECTIONS, corrections_of(shadowed))

        def judged() -> dict[str, Any] | None:
            cycles = worker.get("/models")["lifecycle"].get("cycles", [])
            cycle = next((c for c in cycles if c.get("version") == challenger), None)
            shadow = (cycle or {}).get("shadow") or {}
            return cycle if shadow.get("significant") else None

        cycle = wait_until("the shadow comparison of the worse challenger", judged, 120, [worker])
        time.sleep(2 * 2.5)  # two coordinator ticks more: it would have promoted by now
        assert serving(worker) == (champion, challenger)
    finally:
        worker.stop()
    assert cycle["trigger"] == "manual" and cycle["reason"] == "requested by qa: a test asks"
    gate = cycle["gate"]
    assert not gate["eligible"]
    assert gate["reference"]["champion_macro_f1"] - gate["reference"]["challenger_macro_f1"] > 0.005
    assert any("reference" in reason for reason in gate["reasons"]), gate["reasons"]
    assert cycle["shadow"]["significant"], cycle["shadow"]  # it would have won in shadow...
    assert cycle["status"] == "shadow" and "gate" in cycle["decision"]  # ...but the gate keeps it out
    assert ModelRegistry(shared_models).get("champion").version == champion


def test_a_tampered_artifact_is_refused_and_rollback_restores_the_champion(
    fresh_broker: Broker,
    tmp_path: Path,
    shared_models: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = ModelRegistry(shared_models)
    champion = registry.get("champion").version
    original = registry.load("champion")
    for suffix in ("second", "tampered"):  # same weights, another version: enough for swapping
        original.version = f"{champion}-{suffix}"
        registry.register(original, dict(registry.get(champion).metrics), BUNDLED_DATA, notes=suffix)
    second, tampered = f"{champion}-second", f"{champion}-tampered"
    app_id = f"swap-{uuid.uuid4().hex[:6]}"
    worker = lifecycle_worker(fresh_broker, tmp_path, shared_models, app_id)
    cli_env(monkeypatch, fresh_broker, shared_models, app_id)
    names = bundled_names()[::1500]

    def classify_round(tag: str) -> set[str]:
        items = [{"id": f"{tag}-{i}", "name": name, "full_name": name} for i, name in enumerate(names)]
        publish(fresh_broker, RAW, items)
        ids = {i["id"] for i in items}

        def done() -> set[str] | None:
            found = [r for r in read_values(fresh_broker, CLASSIFIED) if r["key"] in ids]
            return {r["value"]["model_version"] for r in found} if {r["key"] for r in found} == ids else None

        return wait_until(f"{tag} classified", done, 60, [worker])

    try:
        worker.start().wait_ready()
        assert classify_round("before") == {champion}
        # corrections through the CLI (name looked up in nomenclature.classified) and the web view
        main(["correct", "--id", "before-0", "--label", "service", "--comment", "checked"])
        assert "before-0: service" in capsys.readouterr().out
        status, body = post(
            worker, "/corrections", [{"id": "w-1", "name": "Вывоз снега", "label": "service"}]
        )
        assert (status, body["published"]) == (202, 1)
        status, body = post(
            worker, "/corrections", [{"id": "w-2", "name": "Болт"}, {"id": "w-3", "label": "x"}]
        )
        assert status == 422 and body["published"] == 0
        assert [e["code"] for e in body["refused"][0]["errors"]] == ["required"]
        assert {e["code"] for e in body["refused"][1]["errors"]} == {"required", "label_invalid"}
        wait_until("two corrections accepted", lambda: accepted(worker) == 2, 60, [worker])
        [logged] = [r for r in read_values(fresh_broker, CORRECTIONS) if r["key"] == "before-0"]
        assert logged["value"]["name"] == names[0] and logged["value"]["comment"] == "checked"

        main(["models", "promote", second])
        assert "announced on nomenclature.models: promoted" in capsys.readouterr().err
        wait_until("the promoted model served", lambda: serving(worker)[0] == second, 60, [worker])
        assert classify_round("promoted") == {second}

        artifact = shared_models / registry.get(tampered).artifact
        artifact.write_bytes(artifact.read_bytes() + b"tampered")
        event = model_events.new_event(
            registry, model_events.PROMOTED, tampered, by="test", reason="tamper test"
        )
        run_sync(model_events.publish(fresh_broker.bootstrap, LocalCatalogue(), [event]))
        refused = wait_until(
            "the tampered artifact refused",
            lambda: worker.get("/models")["worker"]["refused"],
            60,
            [worker],
        )
        assert serving(worker)[0] == second
        assert classify_round("after-tamper") == {second}

        main(["models", "rollback"])
        assert f"champion: {second} -> {champion} (rolled back)" in capsys.readouterr().out
        wait_until("the rolled-back champion served", lambda: serving(worker)[0] == champion, 60, [worker])
        assert classify_round("rolled-back") == {champion}
        log = worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
    assert [r["version"] for r in refused] == [tampered]
    assert "ChecksumError" in refused[0]["reason"] and "sha256" in refused[0]["reason"]
    assert f"refusing model {tampered}" in log and "ERROR" in log

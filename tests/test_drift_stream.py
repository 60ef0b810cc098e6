"""Drift monitoring end to end on a real broker (a broker of its own per test: see `fresh_broker`).

Items carry synthetic record timestamps, so 30-second event-time windows pass as fast as the worker reads.
The reference rows of the baseline are a sample of the bundled names with units and sources; a stationary
stream resamples them, a shifted one changes one thing (the unit vocabulary, or the script of the names).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from connectors.kafka_io import produce_items
from models.registry.model_registry import ModelRegistry
from schemas import LocalCatalogue
from streams.runtime.topic_reader import read_topic
from streams.topics import DRIFT, RAW
from tests.support import Broker, Worker, new_worker
from tools.common import BUNDLED_DATA, run_sync
from tools.drift_check import to_latin
from tools.drift_commands import rebuild_baseline

WINDOW_S = 30
UNITS = ["шт", "кг", "усл. ед.", "м", "л", "упак"]
NEW_UNITS = ["бухта", "рулон", "палета", "кор"]
SOURCES = ["erp", "procurement", "catalogue"]
NAME_FEATURES = ("name_length", "word_count", "digit_share", "latin_share", "unseen_token_share")
DRIFT_ENV = {
    "NOMENCLATURE_DRIFT_WINDOW_SECONDS": str(WINDOW_S),
    "NOMENCLATURE_DRIFT_GRACE_SECONDS": "2",
    "NOMENCLATURE_DRIFT_IDLE_SECONDS": "4",
    "NOMENCLATURE_DRIFT_REPORT_SECONDS": "0.5",
}


def reference_rows(n: int = 3000, seed: int = 1) -> list[dict[str, Any]]:
    frame = pd.read_csv(BUNDLED_DATA).sample(n=n, random_state=seed)
    rng = random.Random(seed)
    return [
        {"name": name, "unit": rng.choice(UNITS), "source": rng.choice(SOURCES), "country": "RU"}
        for name in frame["name"]
    ]


@pytest.fixture
def drift_models(models_dir: Path, tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The session's model, its baseline rebuilt from reference rows with units (as an operator would)."""
    rows = reference_rows()
    path = tmp_path / "reference.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    text = rebuild_baseline(ModelRegistry(models_dir), path, "champion")
    assert "3000 rows" in text
    return models_dir, rows


def window_items(
    rows: list[dict[str, Any]], start_ms: int, count: int, prefix: str, rng: random.Random, shift: str = ""
) -> list[tuple[dict[str, Any], int]]:
    out = []
    for i in range(count):
        row = dict(rng.choice(rows))
        if shift == "units":
            row["unit"] = rng.choice(NEW_UNITS)
        elif shift == "latin":
            row["name"] = to_latin(row["name"])
        item = {"id": f"{prefix}-{start_ms}-{i}", "full_name": row["name"], **row}
        out.append((item, start_ms + (i * WINDOW_S * 1000) // count))
    return out


def produce(bootstrap: str, items: list[tuple[dict[str, Any], int]]) -> None:
    stamps = {item["id"]: ts for item, ts in items}
    catalogue = LocalCatalogue()
    run_sync(
        produce_items(
            bootstrap, RAW, [item for item, _ in items], catalogue, timestamp_of=lambda i: stamps[i["id"]]
        )
    )


async def _alerts(bootstrap: str) -> list[dict[str, Any]]:
    try:
        return [r["value"] async for r in read_topic(bootstrap, DRIFT, LocalCatalogue())]
    except LookupError:
        return []


def alerts(bootstrap: str) -> list[dict[str, Any]]:
    return run_sync(_alerts(bootstrap))


def first_window(windows: int) -> int:
    """A window start far enough in the past for `windows` windows to lie before now."""
    now = int(time.time() * 1000)
    return now - now % (WINDOW_S * 1000) - (windows + 5) * WINDOW_S * 1000


def start_worker(
    broker: Broker,
    tmp_path: Path,
    models_dir: Path,
    app_id: str | None = None,
    env: dict[str, str] | None = None,
) -> Worker:
    worker = new_worker(broker, tmp_path, models_dir, app_id)
    worker.extra_env.update({**DRIFT_ENV, **(env or {})})
    worker.start()
    worker.wait_ready()
    return worker


def drift_state(worker: Worker, body: dict[str, Any]) -> str:
    """What a timed-out wait for judged windows says: the monitor's view of each partition and window,
    and the worker's lag and assignment."""
    state = {
        k: body.get(k)
        for k in ("status", "windows_judged", "partitions", "open_windows", "late_items", "late_reports")
    }
    stats = worker.get("/stats")
    return f"{state}; lag {stats.get('lag')}; assignment {worker.get('/health').get('assignment')}"


def wait_judged(worker: Worker, windows: int, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = worker.get("/drift")
        if body.get("windows_judged", 0) >= windows:
            return body
        worker.assert_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {windows} windows judged: {drift_state(worker, body)}")
        time.sleep(0.5)


def judged_stream(
    broker: Broker, tmp_path: Path, models_dir: Path, items: list[tuple[dict[str, Any], int]], windows: int
) -> dict[str, Any]:
    """/drift once one worker has judged `windows` windows of `items`."""
    worker = start_worker(broker, tmp_path, models_dir)
    try:
        produce(broker.bootstrap, items)
        return wait_judged(worker, windows)
    finally:
        worker.stop()


def six_windows_and_a_closer(
    rows: list[dict[str, Any]], prefix: str, seed: int
) -> tuple[int, list[list[tuple[dict[str, Any], int]]], list[tuple[dict[str, Any], int]]]:
    """Windows 0-5 of 200 items each, and 200 items of window 8 that advance every partition's stream time
    past window 5, so windows 0-5 close by event time (the tests set a long idle time, so that a restart's
    or a rebalance's pause does not close them by idleness)."""
    start = first_window(9)
    rng = random.Random(seed)
    windows = [window_items(rows, start + w * WINDOW_S * 1000, 200, prefix, rng) for w in range(6)]
    return start, windows, window_items(rows, start + 8 * WINDOW_S * 1000, 200, prefix, rng)


def settled_drift(workers: list[Worker]) -> dict[str, Any]:
    """/drift once every record is processed and every partition reported once more."""
    deadline = time.monotonic() + 60
    while any(v["lag"] for w in workers for v in w.get("/stats")["lag"].values()):
        assert time.monotonic() < deadline, [w.get("/stats")["lag"] for w in workers]
        time.sleep(0.5)
    time.sleep(2)
    return workers[0].get("/drift")


def test_a_stationary_stream_raises_no_alert(
    fresh_broker: Broker, drift_models: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    models_dir, rows = drift_models
    windows, per_window = 22, 250
    start = first_window(windows)
    rng = random.Random(7)
    items = [
        pair
        for w in range(windows)
        for pair in window_items(rows, start + w * WINDOW_S * 1000, per_window, "st", rng)
    ]
    body = judged_stream(fresh_broker, tmp_path, models_dir, items, windows)
    judged = [h for h in body["features"]["name_length"]["history"]]
    assert all(h["n"] == per_window for h in judged), judged  # every partition's counts, merged exactly
    assert body["late_reports"] == 0
    assert alerts(fresh_broker.bootstrap) == []
    assert body["status"] == "ok"
    statuses = {name: f["status"] for name, f in body["features"].items()}
    assert statuses["unit"] == "ok" and statuses["name_length"] == "ok"
    assert statuses["kind"] == "no_reference"  # the reference rows have no kind: nothing to drift from


def test_a_shift_alerts_the_changed_feature_within_a_window_and_not_the_others(
    fresh_broker: Broker, drift_models: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    models_dir, rows = drift_models
    phases = [("", 4), ("units", 4), ("", 4), ("latin", 4)]
    start = first_window(sum(n for _, n in phases))
    rng = random.Random(11)
    items, phase_start, w = [], {}, 0
    for shift, count in phases:
        phase_start.setdefault(shift, start + w * WINDOW_S * 1000)
        for _ in range(count):
            items += window_items(rows, start + w * WINDOW_S * 1000, 250, "sh", rng, shift)
            w += 1
    body = judged_stream(fresh_broker, tmp_path, models_dir, items, w)
    sent = alerts(fresh_broker.bootstrap)
    firing = [a for a in sent if a["state"] == "firing"]
    window_ms = WINDOW_S * 1000

    def fired(feature: str, lo: int, hi: int, view: str | None = None) -> list[dict[str, Any]]:
        return [
            a
            for a in firing
            if a["feature"] == feature
            and lo <= _ms(a["window_end"]) - window_ms < hi
            and (view is None or a["view"] == view)
        ]

    units_at, latin_at = phase_start["units"], phase_start["latin"]
    # the unit vocabulary changed: an alert for the first shifted window, once per episode
    unit_alerts = fired("unit", units_at, units_at + 4 * window_ms, "tumbling")
    assert unit_alerts and all(_ms(a["window_start"]) == units_at for a in unit_alerts), unit_alerts
    assert {a["metric"] for a in unit_alerts} == {"psi", "js"}
    assert unit_alerts[0]["sample_size"] == 250 and unit_alerts[0]["p_value"] < 0.001
    assert any(s["bin"] == "(other)" for s in unit_alerts[0]["top_shifts"])
    # …and it ended once the units came back
    assert any(a["feature"] == "unit" and a["state"] == "resolved" for a in sent)
    # names did not change in the unit phase: no alert about them
    for feature in (*NAME_FEATURES, "confidence", "predicted_label", "source", "country"):
        assert not fired(feature, units_at, units_at + 4 * window_ms), feature
    # Latin-script names: latin_share alerts in the first Latin window; unit, source, country do not
    latin_alerts = fired("latin_share", latin_at, latin_at + 4 * window_ms, "tumbling")
    assert latin_alerts and _ms(latin_alerts[0]["window_start"]) == latin_at, latin_alerts
    for feature in ("unit", "source", "country"):
        assert not fired(feature, latin_at, latin_at + 4 * window_ms), feature
    assert body["features"]["latin_share"]["status"] == "drift"
    unit = body["features"]["unit"]
    # the units came back: the tumbling episodes ended; the hopping view still spans the shifted windows
    assert unit["episodes_active"]["psi/tumbling"] is False and unit["history"][-1]["status"] == "ok"
    assert unit["episodes_active"]["psi/hopping"] is True


def test_window_counts_survive_a_worker_restart_mid_window(
    fresh_broker: Broker, drift_models: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    models_dir, rows = drift_models
    start, windows, closer = six_windows_and_a_closer(rows, "rs", seed=3)
    first = [pair for window in windows[:3] for pair in window] + windows[3][:100]
    second = windows[3][100:] + [pair for window in windows[4:] for pair in window] + closer
    env = {"NOMENCLATURE_DRIFT_IDLE_SECONDS": "120"}
    worker = start_worker(fresh_broker, tmp_path, models_dir, env=env)
    try:
        produce(fresh_broker.bootstrap, first)
        mid = start + 3 * WINDOW_S * 1000
        deadline = time.monotonic() + 90
        while True:  # until the monitor holds the first half of window 3
            body = worker.get("/drift")
            open_now = {w["window_start"]: w["n"] for w in body.get("open_windows", [])}
            if open_now.get(mid) == 100:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
        assert body["windows_judged"] == 3
    finally:
        worker.stop()
    # a new worker of the same app with empty local state: everything comes back from the changelogs
    again = start_worker(fresh_broker, tmp_path, models_dir, app_id=worker.app_id, env=env)
    try:
        produce(fresh_broker.bootstrap, second)
        wait_judged(again, 6)
        body = settled_drift([again])
        again_reseeks = again.get("/stats")["stalled_partition_reseeks"]
    finally:
        again.stop()
    by_start = {h["window_start"]: h["n"] for h in body["features"]["unit"]["history"]}
    counts = [by_start.get(start + w * WINDOW_S * 1000) for w in range(6)]
    late = sum(body["late_items"].values())
    assert counts[:3] == [200] * 3, counts
    # every item counted once, in its window — or as late when Faust skipped it and the worker's watchdog
    # had it delivered again after the partition had moved on (streams/runtime/partition_watchdog.py)
    assert sum(counts[3:]) + late == 600, (counts, late)
    assert late == 0 or again_reseeks > 0


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def test_counts_merge_across_two_workers_and_a_rebalance(
    fresh_broker: Broker, drift_models: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    models_dir, rows = drift_models
    start, windows, closer = six_windows_and_a_closer(rows, "rb", seed=5)
    env = {"NOMENCLATURE_DRIFT_IDLE_SECONDS": "120"}  # windows 0-5 close by event time only
    one = start_worker(fresh_broker, tmp_path, models_dir, env=env)
    two = None
    try:
        produce(fresh_broker.bootstrap, [pair for window in windows[:3] for pair in window])
        # a second worker of the same app joins mid-stream: partitions (and the monitor) move
        two = start_worker(fresh_broker, tmp_path, models_dir, app_id=one.app_id, env=env)
        produce(fresh_broker.bootstrap, [pair for window in windows[3:] for pair in window] + closer)
        deadline = time.monotonic() + 120
        while True:
            bodies = [w.get("/drift") for w in (one, two)]  # either worker answers (one forwards)
            if all(b.get("windows_judged", 0) >= 6 for b in bodies):
                break
            assert time.monotonic() < deadline, [
                drift_state(w, b) for w, b in zip((one, two), bodies, strict=True)
            ]
            time.sleep(1.0)
        assert len({b["latest_window"]["window_start"] for b in bodies}) == 1  # the same monitor
        assert {len(w.get("/health")["assignment"]) > 0 for w in (one, two)} == {True}
        body = settled_drift([one, two])
    finally:
        one.stop()
        if two is not None:
            two.stop()
    by_start = {h["window_start"]: h["n"] for h in body["features"]["unit"]["history"]}
    counts = [by_start.get(start + w * WINDOW_S * 1000) for w in range(6)]
    # each item counted once: in its window, or late if Faust skipped it during the rebalance and the
    # watchdog had it delivered again after its window had closed
    assert sum(counts) + sum(body["late_items"].values()) == 1200, (counts, body["late_items"])

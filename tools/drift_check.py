"""Drift monitoring, measured: false alarms over a long stationary run, then a shift and what /drift says.

    python -m tools.drift_check [--windows 200] [--per-window 250] [--shift services] [--shift-windows 4]

On a broker of its own (the embedded one unless KAFKA_BOOTSTRAP_SERVERS is set) and a copy of the champion
(trained first if there is none), one worker with 30-second windows reads items whose record timestamps
are synthetic, so hours of windows pass in seconds:

1. stationary: ``--windows`` windows of ``--per-window`` items drawn (with replacement) from the rows the
   champion's baseline was built from — the validation split of the bundled dataset;
2. shifted: ``--shift-windows`` windows of the same size where one thing changes: ``services`` (only
   service rows), ``latin`` (names transliterated to Latin letters) or ``units`` (a unit the reference
   never had).

Prints the false alarms of phase 1 (firing alerts whose window lies in it) with the windows and items
judged, the alerts of phase 2, and the /drift response after the shift.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from connectors.kafka_io import produce_items
from models.datasets.builder import VALIDATION, read_dataset
from models.training.train import bundled_dataset
from schemas import LocalCatalogue, to_millis
from streams.runtime.topic_reader import read_topic
from streams.settings import Settings
from streams.topics import DRIFT, RAW, ensure_topics
from tools.broker import EmbeddedBroker, free_port
from tools.common import ensure_model, run_sync

WINDOW_S = 30
_LATIN = str.maketrans(
    {
        **dict(zip("абвгдезийклмнопрстуфыэ", "abvgdezijklmnoprstufye", strict=True)),
        **{"ё": "e", "ж": "zh", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "sch", "ъ": "", "ь": ""},
        **{"ю": "yu", "я": "ya"},
    }
)


def to_latin(name: str) -> str:
    """The name transliterated to Latin letters (a shift of script for drift checks)."""
    return name.lower().translate(_LATIN).capitalize()


def reference_rows(settings: Settings) -> list[dict[str, Any]]:
    table = read_dataset(bundled_dataset(settings.data_dir / "datasets")).to_pandas()
    rows = table[table["split"] == VALIDATION]
    return [{"name": name, "label": label} for name, label in zip(rows["name"], rows["label"], strict=True)]


def shifted(row: dict[str, Any], shift: str) -> dict[str, Any]:
    if shift == "latin":
        return {**row, "name": to_latin(row["name"])}
    if shift == "units":
        return {**row, "unit": "бухта"}
    return row


def windows_of_items(
    rows: list[dict[str, Any]], first: int, windows: int, per_window: int, rng: random.Random, shift: str = ""
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    pool = [r for r in rows if r["label"] == "service"] if shift == "services" else rows
    items, stamps = [], {}
    for w in range(windows):
        start = first + w * WINDOW_S * 1000
        for i in range(per_window):
            row = shifted(rng.choice(pool), shift)
            item = {"id": f"dc-{start}-{i}", "name": row["name"], "full_name": row["name"]}
            if "unit" in row:
                item["unit"] = row["unit"]
            items.append(item)
            stamps[item["id"]] = start + (i * WINDOW_S * 1000) // per_window
    return items, stamps


def get_drift(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/drift", timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return {}


def wait_judged(port: int, windows: int, worker: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = get_drift(port)
        if body.get("windows_judged", 0) >= windows:
            return body
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with {worker.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{body.get('windows_judged')} of {windows} windows judged in {timeout:.0f}s")
        time.sleep(1.0)


async def _alerts(bootstrap: str) -> list[dict[str, Any]]:
    try:
        return [r["value"] async for r in read_topic(bootstrap, DRIFT, LocalCatalogue())]
    except LookupError:
        return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--per-window", type=int, default=250)
    parser.add_argument("--shift", choices=("services", "latin", "units"), default="services")
    parser.add_argument("--shift-windows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    ensure_model(settings)
    rows = reference_rows(settings)
    scratch = Path(tempfile.mkdtemp(prefix="drift-check-"))
    broker = None if settings.kafka_bootstrap_servers else EmbeddedBroker().start()
    bootstrap = broker.bootstrap if broker else settings.bootstrap_servers
    shutil.copytree(settings.models_dir, scratch / "models")
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "NOMENCLATURE_BROKER_FLAVOR": "tansu" if broker else settings.broker_flavor,
        "NOMENCLATURE_DATA_DIR": str(scratch),
        "NOMENCLATURE_APP_ID": f"drift-check-{port}",
        "NOMENCLATURE_WEB_PORT": str(port),
        "NOMENCLATURE_DRIFT_WINDOW_SECONDS": str(WINDOW_S),
        "NOMENCLATURE_DRIFT_GRACE_SECONDS": "2",
        "NOMENCLATURE_DRIFT_IDLE_SECONDS": "5",
        "NOMENCLATURE_DRIFT_REPORT_SECONDS": "1",
        "NOMENCLATURE_LOG_LEVEL": "warning",
    }
    run_sync(ensure_topics(bootstrap, settings.partitions, settings.replication_factor))
    log = (scratch / "worker.log").open("ab")
    worker = subprocess.Popen([sys.executable, "-m", "tools.cli", "worker"], env=env, stdout=log, stderr=log)
    rng = random.Random(args.seed)
    total = args.windows + args.shift_windows
    now = int(time.time() * 1000)
    first = now - now % (WINDOW_S * 1000) - (total + 5) * WINDOW_S * 1000
    shift_start = first + args.windows * WINDOW_S * 1000
    try:
        stationary, stamps = windows_of_items(rows, first, args.windows, args.per_window, rng)
        moved, moved_stamps = windows_of_items(
            rows, shift_start, args.shift_windows, args.per_window, rng, args.shift
        )
        stamps.update(moved_stamps)
        started = time.monotonic()
        run_sync(
            produce_items(
                bootstrap, RAW, stationary + moved, LocalCatalogue(), timestamp_of=lambda i: stamps[i["id"]]
            )
        )
        body = wait_judged(port, total, worker, timeout=600 + total * 2)
        seconds = time.monotonic() - started
        alerts = run_sync(_alerts(bootstrap))
    finally:
        worker.terminate()
        worker.wait(30)
        if broker:
            broker.stop()
    firing = [a for a in alerts if a["state"] == "firing"]
    false_alarms = [a for a in firing if to_millis(a["window_end"]) <= shift_start]
    in_shift = [a for a in firing if to_millis(a["window_end"]) > shift_start]
    summary = {
        "stationary": {
            "windows": args.windows,
            "items": len(stationary),
            "per_window": args.per_window,
            "false_alarms": len(false_alarms),
            "false_alarm_features": sorted(
                {f"{a['feature']}/{a['metric']}/{a['view']}" for a in false_alarms}
            ),
        },
        "shift": {
            "kind": args.shift,
            "windows": args.shift_windows,
            "items": len(moved),
            "alerts": [
                {
                    "feature": a["feature"],
                    "metric": a["metric"],
                    "view": a["view"],
                    "value": round(a["value"], 4),
                    "p_value": a["p_value"],
                    "window_start": to_millis(a["window_start"]),
                    "windows_after_shift": (to_millis(a["window_end"]) - shift_start) // (WINDOW_S * 1000)
                    - 1,
                }
                for a in in_shift
            ],
        },
        "seconds": round(seconds, 1),
        "worker_log": str(scratch / "worker.log"),
    }
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    features = {
        k: {x: v[x] for x in ("status", "psi", "js", "p_value", "sample_size", "hopping")}
        for k, v in body["features"].items()
    }
    print(
        json.dumps(
            {
                **{k: body[k] for k in ("status", "thresholds", "windows_judged", "late_reports")},
                "features": features,
            },
            ensure_ascii=False,
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

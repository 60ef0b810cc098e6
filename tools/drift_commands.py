"""``nomenclature drift``: rebuild a model's drift baseline, and print a worker's drift status."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from models.drift.baseline import DEFAULT_BINS, FEATURES, build_baseline
from models.registry.model_registry import ModelRegistry


def rebuild_baseline(registry: ModelRegistry, source: Path, model: str, bins: int = DEFAULT_BINS) -> str:
    """Replace the baseline of `model` with one built from the rows of `source` (CSV, TSV, JSONL, Parquet).

    The vocabulary of ``unseen_token_share`` stays the model's training vocabulary (from its current
    baseline): the reference rows say what traffic looks like, not what the model learnt.
    """
    from connectors.files.source import read_items

    current = registry.load_baseline(model)
    if current is None:
        raise ValueError(
            f"model {registry.get(model).version} has no baseline to take its training vocabulary from; "
            "retrain it (`nomenclature train`) to get one"
        )
    items = list(read_items(source))
    if not items:
        raise ValueError(f"{source}: no rows")
    unnamed = sum(1 for item in items if not item.get("name"))
    if unnamed:
        raise ValueError(f"{source}: {unnamed} row(s) without a name")
    classifier = registry.load(model)
    baseline = build_baseline(classifier, items, current.vocabulary, source=source.name, bins=bins)
    record = registry.set_baseline(classifier.version, baseline)
    assert record.baseline is not None
    return (
        f"baseline {baseline.version} of {classifier.version}: {baseline.rows} rows from {source.name} "
        f"(was {current.version}); running workers use it from their next start"
    )


def fetch_status(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/drift", timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def format_status(body: dict[str, Any]) -> str:
    if "features" not in body:
        return f"drift: {body.get('status')}: {body.get('detail', '')}"
    lines = []
    window = body.get("latest_window")
    if window:
        lines.append(
            f"latest window {_ms(window['window_start'])} – {_ms(window['window_end'])}  "
            f"baseline {window['baseline_version']}  model {window['model_version']}"
        )
    thresholds = body["thresholds"]
    lines.append(
        f"thresholds: PSI {thresholds['psi']} (natural log), JS {thresholds['js']} (distance, base 2), "
        f"p < {thresholds['alpha']}; windows judged {body['windows_judged']}, status {body['status']}"
    )
    header = f"{'feature':<20} {'status':<21} {'n':>7} {'psi':>8} {'js':>7} {'p':>9}  {'hopping psi/js':>15}"
    lines += [header, "-" * len(header)]
    for name in FEATURES:
        f = body["features"][name]
        hop = f.get("hopping") or {}
        hopping = f"{_num(hop.get('psi'))}/{_num(hop.get('js'))}" if hop.get("psi") is not None else "-"
        lines.append(
            f"{name:<20} {f['status']:<21} {_num(f['sample_size'], 0):>7} {_num(f['psi']):>8} "
            f"{_num(f['js']):>7} {_num(f['p_value'], p=True):>9}  {hopping:>15}"
        )
    return "\n".join(lines)


def _num(value: Any, digits: int = 3, p: bool = False) -> str:
    if value is None:
        return "-"
    if p:
        return f"{value:.1e}"
    return f"{value:.{digits}f}" if digits else str(value)


def _ms(value: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")

"""Drift, merged: every partition's window counts → PSI / Jensen–Shannon per feature → alerts with episodes.

One worker — the owner of ``<app id>-drift-counts``' single partition — merges the reports that every
worker sends for its partitions (`streams.drift.counts`). A report carries cumulative counts, so the
latest report of a (window, partition) replaces the earlier ones: repeats after a crash change nothing.

**When a window is judged.** Workers announce each source partition they are assigned, with or without
counts, so the monitor knows which to wait for. Window ``[s, s + W)`` is judged once every known
partition has either
passed it (stream time ≥ s + W + grace), or reported it closed, or gone idle: its worker has read it to its
high-water mark and its stream time has not advanced for ``NOMENCLATURE_DRIFT_IDLE_SECONDS`` (Flink's
idleness rule, so a quiet partition does not hold every window open, while a lagging one — records left to
read — still does). Windows are judged in order of start. Counts reported
for a window after it was judged are merged into its record (``late_reports``) but not judged again.

**Judging.** Per feature, on the merged counts: PSI and the Jensen–Shannon distance against the baseline's
reference counts (`models.drift.metrics`), and the G-test p-value. Two views: the tumbling window, and the
hopping view over the last ``NOMENCLATURE_DRIFT_HOPPING_WINDOWS`` windows (sums of their counts; it sees a
slow shift that single windows are too small to show). A view with fewer than
``NOMENCLATURE_DRIFT_MIN_SAMPLES`` items is not judged (``insufficient_samples``); a categorical feature the
reference never had (every reference row without it) is not judged either (``no_reference``).

A judged view is **drifted** for a metric when the value exceeds its threshold *and* p < ``ALPHA`` (the
threshold is the effect size users set; the test keeps a small window's noise from crossing it).

**Episodes.** Per (feature, metric, view): an episode starts when ``PERSISTENCE`` of the last
``PERSISTENCE_WINDOWS`` judged windows were drifted — one ``firing`` alert on ``nomenclature.drift`` — and
ends after ``CLEAR_WINDOWS`` judged windows in a row under ``CLEAR_RATIO`` × threshold — one ``resolved``
alert. Nothing is sent for the windows in between.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from models.drift.baseline import FEATURES, Baseline, CategoricalReference
from models.drift.metrics import g_test_p_value, js_distance, psi
from schemas import now_ms as clock
from streams.drift.counts import parse_window_key, window_key
from streams.settings import Settings

METRICS = ("psi", "js")
VIEWS = ("tumbling", "hopping")
CLEAR_RATIO = 0.8
HISTORY = 48  # judged windows kept for /drift
TOP_SHIFTS = 3

PARTITIONS_KEY = "partitions"
EPISODES_KEY = "episodes"
HISTORY_KEY = "history"
STATS_KEY = "stats"
WINDOW_PREFIX = "w:"


class DriftMonitor:
    """The merge-judge-alert logic over a plain state dict (persisted key by key by the caller)."""

    def __init__(self, settings: Settings, resolve: Callable[[str], Baseline | None]) -> None:
        self.settings = settings
        self.resolve = resolve  # baseline version -> the baseline (from the model registry)
        self.baselines: dict[str, Baseline] = {}
        self.window_ms = settings.drift_window_seconds * 1000
        self.grace_ms = settings.drift_grace_seconds * 1000
        self.idle_ms = settings.drift_idle_seconds * 1000
        self.thresholds = {"psi": settings.drift_psi_threshold, "js": settings.drift_js_threshold}
        self.partitions: dict[str, dict[str, int]] = {}
        self.windows: dict[str, dict[str, Any]] = {}
        self.episodes: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {
            "windows_judged": 0,
            "late_reports": 0,
            "late_items": {},
            "unknown_baseline": 0,
        }
        self.dirty: set[str] = set()

    # ---- state ---------------------------------------------------------------------------------

    def load(self, values: Mapping[str, Any]) -> None:
        """Restore from the persisted keys (``persisted_keys``)."""
        self.partitions = values.get(PARTITIONS_KEY) or {}
        self.episodes = values.get(EPISODES_KEY) or {}
        self.history = values.get(HISTORY_KEY) or []
        self.stats = values.get(STATS_KEY) or self.stats
        self.windows = {k[len(WINDOW_PREFIX) :]: v for k, v in values.items() if k.startswith(WINDOW_PREFIX)}

    def take_dirty(self) -> dict[str, bytes | None]:
        """The keys changed since the last call, with their JSON values (None: deleted)."""
        out: dict[str, bytes | None] = {}
        for key in self.dirty:
            if key.startswith(WINDOW_PREFIX):
                value = self.windows.get(key[len(WINDOW_PREFIX) :])
            else:
                value = {
                    PARTITIONS_KEY: self.partitions,
                    EPISODES_KEY: self.episodes,
                    HISTORY_KEY: self.history,
                    STATS_KEY: self.stats,
                }[key]
            out[key] = None if value is None else json.dumps(value, separators=(",", ":")).encode("utf-8")
        self.dirty = set()
        return out

    # ---- input ---------------------------------------------------------------------------------

    def ingest(self, report: Mapping[str, Any], now_ms: int) -> None:
        partition = str(report["partition"])
        stream_time = report.get("stream_time")
        known = self.partitions.get(partition)
        caught_up = bool(report.get("caught_up"))
        if known is None or (
            stream_time is not None and (known["stream_time"] is None or stream_time > known["stream_time"])
        ):
            self.partitions[partition] = {
                "stream_time": stream_time,
                "advanced_at": now_ms,
                "caught_up": caught_up,
            }
            self.dirty.add(PARTITIONS_KEY)
        elif known.get("caught_up") != caught_up:
            known["caught_up"] = caught_up
            if caught_up:  # idleness counts from when the partition has nothing left to read
                known["advanced_at"] = now_ms
            self.dirty.add(PARTITIONS_KEY)
        self.stats["late_items"][partition] = report.get("late_items", 0)
        self.dirty.add(STATS_KEY)
        for window in report["windows"]:
            if self._baseline(window["baseline_version"]) is None:
                self.stats["unknown_baseline"] += 1
                continue
            key = window_key(window["baseline_version"], window["start"])
            part = {k: window[k] for k in ("n", "counts", "closed")}
            record = self.windows.get(key)
            if record is None:
                last = self.stats.get("last_judged_start")
                if last is not None and window["start"] <= last:  # judged and forgotten long ago
                    self.stats["late_reports"] += 1
                    continue
                record = self.windows[key] = {
                    "model_version": window["model_version"],
                    "parts": {},
                    "judged": False,
                }
            if record["judged"]:
                if record["parts"].get(partition, {}).get("n") == part["n"]:
                    continue  # the same counts again (a worker re-reporting after a restart)
                self.stats["late_reports"] += 1
            record["parts"][partition] = part
            self.dirty.add(WINDOW_PREFIX + key)

    def _baseline(self, version: str) -> Baseline | None:
        if version not in self.baselines:
            found = self.resolve(version)
            if found is None:
                return None
            self.baselines[version] = found
        return self.baselines[version]

    # ---- judging -------------------------------------------------------------------------------

    def _ready(self, key: str, now_ms: int) -> bool:
        _, start = parse_window_key(key)
        end = start + self.window_ms
        parts = self.windows[key]["parts"]
        for partition, seen in self.partitions.items():
            part = parts.get(partition)
            if part is not None and part["closed"]:
                continue
            if seen["stream_time"] is not None and seen["stream_time"] >= end + self.grace_ms:
                continue
            if seen.get("caught_up") and now_ms - seen["advanced_at"] >= self.idle_ms:
                continue
            return False
        return True

    def judge_ready(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Judge every window that is ready, in order; returns the alerts (DriftAlert values) to send."""
        now_ms = clock() if now_ms is None else now_ms
        pending = sorted(
            (k for k, w in self.windows.items() if not w["judged"]), key=lambda k: parse_window_key(k)[1]
        )
        alerts: list[dict[str, Any]] = []
        for key in pending:
            if not self._ready(key, now_ms):
                break
            alerts.extend(self._judge(key, now_ms))
        self._forget_old()
        return alerts

    def _merged(self, keys: list[str], n_features: int) -> tuple[int, list[np.ndarray]]:
        total = 0
        sums: list[np.ndarray] | None = None
        for key in keys:
            for part in self.windows[key]["parts"].values():
                total += part["n"]
                arrays = [np.asarray(c, dtype=np.int64) for c in part["counts"]]
                sums = arrays if sums is None else [a + b for a, b in zip(sums, arrays, strict=True)]
        return total, sums or [np.zeros(0, dtype=np.int64)] * n_features

    def _judge(self, key: str, now_ms: int) -> list[dict[str, Any]]:
        baseline_version, start = parse_window_key(key)
        baseline = self._baseline(baseline_version)
        record = self.windows[key]
        if baseline is None:  # its model was removed from the registry since the counts arrived
            record["judged"] = True
            self.dirty.add(WINDOW_PREFIX + key)
            return []
        record["judged"] = True
        self.stats["windows_judged"] += 1
        self.stats["last_judged_start"] = max(start, self.stats.get("last_judged_start") or start)
        self.dirty.update({WINDOW_PREFIX + key, STATS_KEY})
        hop = self.settings.drift_hopping_windows
        views = {
            "tumbling": ([key], start),
            "hopping": (
                [
                    k
                    for k in self.windows
                    if parse_window_key(k)[0] == baseline_version
                    and start - (hop - 1) * self.window_ms <= parse_window_key(k)[1] <= start
                    and (self.windows[k]["judged"] or k == key)
                ],
                start - (hop - 1) * self.window_ms,
            ),
        }
        entry: dict[str, Any] = {
            "window_start": start,
            "window_end": start + self.window_ms,
            "baseline_version": baseline_version,
            "model_version": record["model_version"],
            "judged_at": now_ms,
            "views": {},
        }
        alerts = []
        for view, (keys, view_start) in views.items():
            n, merged = self._merged(keys, len(FEATURES))
            results = {}
            for index, feature in enumerate(FEATURES):
                reference = baseline.features[feature]
                result = self._measure(reference, merged[index], n)
                results[feature] = result
                for metric in METRICS:
                    alert = self._episode(feature, metric, view, result, n)
                    if alert is not None:
                        shifts = _top_shifts(reference, merged[index])
                        alerts.append(
                            {
                                "feature": feature,
                                "metric": metric,
                                "value": result[metric],
                                "threshold": self.thresholds[metric],
                                "p_value": result["p_value"],
                                "state": alert,
                                "severity": (
                                    "critical" if result[metric] >= 2 * self.thresholds[metric] else "warning"
                                ),
                                "view": view,
                                "window_start": view_start,
                                "window_end": start + self.window_ms,
                                "sample_size": n,
                                "baseline_version": baseline_version,
                                "model_version": record["model_version"],
                                "top_shifts": shifts,
                                "raised_at": now_ms,
                            }
                        )
            entry["views"][view] = {"start": view_start, "n": n, "features": results}
        self.history = [*self.history, entry][-HISTORY:]
        self.dirty.update({HISTORY_KEY, EPISODES_KEY})
        return alerts

    def _measure(self, reference: Any, counts: np.ndarray, n: int) -> dict[str, Any]:
        if isinstance(reference, CategoricalReference) and not reference.observed:
            return {"status": "no_reference", "psi": None, "js": None, "p_value": None}
        if n < self.settings.drift_min_samples:
            return {"status": "insufficient_samples", "psi": None, "js": None, "p_value": None}
        ref = list(reference.counts)
        value = {
            "psi": round(psi(ref, counts), 6),
            "js": round(js_distance(ref, counts), 6),
            "p_value": float(f"{g_test_p_value(ref, counts):.6g}"),
        }
        drifted = [m for m in METRICS if self._drifted(m, value)]
        return {"status": "drift" if drifted else "ok", "drifted": drifted, **value}

    def _drifted(self, metric: str, value: Mapping[str, Any]) -> bool:
        return value[metric] > self.thresholds[metric] and value["p_value"] < self.settings.drift_alpha

    def _episode(self, feature: str, metric: str, view: str, result: Mapping[str, Any], n: int) -> str | None:
        """Advance the (feature, metric, view) episode by one judged window; 'firing' / 'resolved' / None."""
        if result["status"] in ("no_reference", "insufficient_samples"):
            return None
        key = f"{feature}|{metric}|{view}"
        episode = self.episodes.setdefault(key, {"active": False, "recent": [], "below": 0})
        drifted = metric in result.get("drifted", [])
        k, of = self.settings.drift_persistence, self.settings.drift_persistence_windows
        episode["recent"] = [*episode["recent"], drifted][-max(of, 1) :]
        if not episode["active"]:
            if sum(episode["recent"]) >= k:
                episode.update(active=True, below=0)
                return "firing"
            return None
        if result[metric] < CLEAR_RATIO * self.thresholds[metric]:
            episode["below"] += 1
            if episode["below"] >= self.settings.drift_clear_windows:
                episode.update(active=False, below=0, recent=[])
                return "resolved"
        else:
            episode["below"] = 0
        return None

    def _forget_old(self) -> None:
        """Keep the judged windows the hopping view still needs; drop older ones."""
        judged = [parse_window_key(k)[1] for k, w in self.windows.items() if w["judged"]]
        if not judged:
            return
        horizon = max(judged) - self.settings.drift_hopping_windows * self.window_ms
        for key in [k for k, w in self.windows.items() if w["judged"] and parse_window_key(k)[1] <= horizon]:
            del self.windows[key]
            self.dirty.add(WINDOW_PREFIX + key)

    # ---- reading -------------------------------------------------------------------------------

    def snapshot(self, now_ms: int | None = None) -> dict[str, Any]:
        """What GET /drift shows."""
        now_ms = clock() if now_ms is None else now_ms
        latest = self.history[-1] if self.history else None
        features: dict[str, Any] = {}
        for feature in FEATURES:
            rows = [
                {
                    "window_start": h["window_start"],
                    "window_end": h["window_end"],
                    "n": h["views"]["tumbling"]["n"],
                    **_metrics_of(h["views"]["tumbling"]["features"][feature]),
                }
                for h in self.history
            ]
            current = latest["views"]["tumbling"]["features"][feature] if latest else None
            hopping = latest["views"]["hopping"]["features"][feature] if latest else None
            active = {
                f"{metric}/{view}": self.episodes.get(f"{feature}|{metric}|{view}", {}).get("active", False)
                for metric in METRICS
                for view in VIEWS
            }
            status = "pending" if current is None else current["status"]
            if any(active.values()):
                status = "drift"
            features[feature] = {
                "status": status,
                "psi": None if current is None else current["psi"],
                "js": None if current is None else current["js"],
                "p_value": None if current is None else current["p_value"],
                "sample_size": None if latest is None else latest["views"]["tumbling"]["n"],
                "hopping": None if hopping is None else _metrics_of(hopping),
                "episodes_active": active,
                "history": rows[-12:],
            }
        open_windows = [
            {"window_start": parse_window_key(k)[1], "n": sum(p["n"] for p in w["parts"].values())}
            for k, w in sorted(self.windows.items(), key=lambda kv: parse_window_key(kv[0])[1])
            if not w["judged"]
        ]
        return {
            "status": "drift" if any(f["status"] == "drift" for f in features.values()) else "ok",
            "baseline_versions": sorted(
                {parse_window_key(k)[0] for k in self.windows} | {h["baseline_version"] for h in self.history}
            ),
            "latest_window": None
            if latest is None
            else {k: latest[k] for k in ("window_start", "window_end", "baseline_version", "model_version")},
            "metrics": {
                "psi": "population stability index, natural log, additive smoothing 0.5 per bin",
                "js": "Jensen–Shannon distance, base 2, in [0, 1]",
                "p_value": "G-test of the window's counts against the baseline's proportions",
            },
            "thresholds": {**self.thresholds, "alpha": self.settings.drift_alpha},
            "settings": {
                "window_seconds": self.settings.drift_window_seconds,
                "hopping_windows": self.settings.drift_hopping_windows,
                "min_samples": self.settings.drift_min_samples,
                "persistence": {
                    "windows": self.settings.drift_persistence,
                    "of": self.settings.drift_persistence_windows,
                },
                "clear_windows": self.settings.drift_clear_windows,
                "grace_seconds": self.settings.drift_grace_seconds,
                "idle_seconds": self.settings.drift_idle_seconds,
            },
            "features": features,
            "open_windows": open_windows,
            "partitions": {
                p: {
                    **seen,
                    "idle": bool(seen.get("caught_up")) and now_ms - seen["advanced_at"] >= self.idle_ms,
                }
                for p, seen in sorted(self.partitions.items(), key=lambda kv: int(kv[0]))
            },
            **self.stats,
        }


def _metrics_of(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: result.get(k) for k in ("status", "psi", "js", "p_value")}


def _top_shifts(reference: Any, counts: np.ndarray) -> list[dict[str, Any]]:
    ref = np.asarray(reference.counts, dtype=np.float64)
    ref_share = ref / ref.sum() if ref.sum() else ref
    win_share = counts / counts.sum() if counts.sum() else counts.astype(np.float64)
    labels = reference.labels()
    order = np.argsort(-np.abs(win_share - ref_share), kind="stable")[:TOP_SHIFTS]
    return [
        {
            "bin": labels[i],
            "baseline_share": round(float(ref_share[i]), 4),
            "window_share": round(float(win_share[i]), 4),
        }
        for i in order
    ]

"""``GET /metrics`` (Prometheus text format) and ``GET /dashboard/data`` (this worker's last hour as series,
for ``GET /dashboard``), both from the runner's `streams.runtime.metrics.WorkerMetrics`.

Counters and histograms are updated by the classify agent, a micro-batch at a time; the model, drift and
shadow figures are read from live state at each scrape (`live_families`). Drift and the McNemar verdict
are cluster-wide state kept by one worker each (the drift monitor, the retraining coordinator): only the
worker hosting it exports them, so that summing over workers never counts them twice.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust
from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from streams.drift.agents import MonitorHost
from streams.lifecycle.agents import LifecycleHost
from streams.settings import Settings
from streams.web.views import Worker, consumer_lag


def live_families(
    runner: Worker, monitor: MonitorHost, lifecycle: LifecycleHost
) -> Callable[[], list[Metric]]:
    """What `WorkerMetrics.add_live` reads at each scrape: models, drift and shadow figures."""

    def families() -> list[Metric]:
        found: list[Metric] = [*_model_families(runner), *_drift_families(monitor)]
        found.extend(_shadow_families(runner, lifecycle))
        found.append(_review_family(runner))
        return found

    return families


def _model_families(runner: Worker) -> Iterable[Metric]:
    models = runner.models
    info = InfoMetricFamily(
        "nomenclature_model", "The models this worker scores with, by role.", labels=["role"]
    )
    for role, classifier in (("champion", models.champion), ("challenger", models.challenger)):
        if classifier is not None:
            info.add_metric(
                [role], {"version": classifier.version, "featurizer_version": classifier.featurizer_version}
            )
    yield info


def _review_family(runner: Worker) -> Metric:
    family = CounterMetricFamily(
        "nomenclature_review_items",
        "Review candidates by what became of them: queued, already_queued, evicted, moved.",
        labels=["outcome"],
    )
    for outcome, count in runner.review.outcomes.items():
        family.add_metric([outcome], count)
    return family


def _drift_families(monitor: MonitorHost) -> Iterable[Metric]:
    current = monitor.current()
    if current is None:  # another worker hosts the drift monitor
        return
    snapshot = current.snapshot()
    psi = GaugeMetricFamily(
        "nomenclature_drift_psi", "PSI of the latest judged window against the baseline.", labels=["feature"]
    )
    js = GaugeMetricFamily(
        "nomenclature_drift_js_distance",
        "Jensen–Shannon distance (base 2) of the latest judged window against the baseline.",
        labels=["feature"],
    )
    drifting = GaugeMetricFamily(
        "nomenclature_drift_active", "1 while a drift episode is active for the feature.", labels=["feature"]
    )
    for feature, row in snapshot["features"].items():
        if row["psi"] is not None:
            psi.add_metric([feature], row["psi"])
        if row["js"] is not None:
            js.add_metric([feature], row["js"])
        drifting.add_metric([feature], 1.0 if row["status"] == "drift" else 0.0)
    thresholds = GaugeMetricFamily(
        "nomenclature_drift_threshold", "Alert thresholds of the drift metrics.", labels=["metric"]
    )
    for metric, value in snapshot["thresholds"].items():
        thresholds.add_metric([metric], float(value))
    alerts = CounterMetricFamily(
        "nomenclature_drift_alerts", "Drift alerts this worker's monitor sent since it started."
    )
    alerts.add_metric([], float(monitor.alerts_sent))
    yield from (psi, js, drifting, thresholds, alerts)


def _shadow_families(runner: Worker, lifecycle: LifecycleHost) -> Iterable[Metric]:
    models = runner.models
    if models.challenger is not None:
        scored, agreed = runner.metrics.shadow_agreement(models.challenger.version)
        if scored:
            ratio = GaugeMetricFamily(
                "nomenclature_shadow_agreement_ratio",
                "Share of the items this worker scored in shadow on which challenger and champion agreed.",
                labels=["challenger", "champion"],
            )
            ratio.add_metric([models.challenger.version, models.champion.version], agreed / scored)
            yield ratio
    coordinator = lifecycle.current()
    state = None if coordinator is None else coordinator.snapshot()
    if state is None or state["in_shadow"] is None:
        return
    shadowed = state["in_shadow"]
    cycle = next((c for c in state["cycles"] if c.get("version") == shadowed), {})
    verdict = cycle.get("shadow")
    if not verdict:
        return
    p_value = GaugeMetricFamily(
        "nomenclature_shadow_mcnemar_p_value",
        "Exact McNemar p-value of the challenger in shadow against the champion, on corrected items "
        "(the retraining coordinator's, cluster-wide).",
        labels=["challenger", "champion"],
    )
    p_value.add_metric([shadowed, verdict.get("champion", "")], float(verdict["p_value"]))
    yield p_value


def metrics_view(runner: Worker) -> type[View]:
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            # set as a header: aiohttp refuses a content_type argument that carries a charset
            body = generate_latest(runner.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return MetricsView


def worker_identity(app: faust.App, settings: Settings, runner: Worker) -> dict[str, Any]:
    return {
        "app_id": settings.app_id,
        "url": str(app.conf.canonical_url).rstrip("/"),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "uptime_seconds": round(time.time() - runner.stats.started_at, 1),
    }


def dashboard_data_view(app: faust.App, settings: Settings, runner: Worker) -> type[View]:
    class DashboardData(View):
        async def get(self, request: Request) -> Response:
            metrics = runner.metrics
            return self.json(
                {
                    "worker": worker_identity(app, settings, runner),
                    "history": metrics.history.snapshot(),
                    "confidence": metrics.confidence_histogram(),
                }
            )

    return DashboardData


def sample(app: faust.App, runner: Worker) -> None:
    """The history's next sample (a timer calls it every NOMENCLATURE_DASHBOARD_REFRESH_SECONDS)."""
    runner.metrics.sample(consumer_lag(app, runner.stats))

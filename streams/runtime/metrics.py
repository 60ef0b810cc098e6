"""One worker's metrics: Prometheus instruments (``GET /metrics``) and the last hour of them as series
(``GET /dashboard/data``).

Everything is counted in the worker process, from what each micro-batch brings back from the scoring
processes (their results and the seconds they scored for), so the figures stay right with any number of
scoring processes and prometheus_client's multiprocess mode is not needed. Every worker exposes its own;
Prometheus adds them up across workers (``sum by (code) (rate(nomenclature_rejected_errors_total[5m]))``).

Per-item figures (end-to-end latency, confidence) go into `BulkHistogram`s: a micro-batch of a thousand
items is one numpy call, not a thousand ``observe`` calls under a lock.
"""

from __future__ import annotations

import math
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streams.pipeline.messages import BatchResult, RawMessage

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SCORING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
# a binary classifier's confidence in its label is at least 0.5
CONFIDENCE_EDGES = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))
HISTORY_SECONDS = 3600


class BulkHistogram(Collector):
    """A Prometheus histogram fed with arrays (`observe_many`), exposed by `collect`."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=float)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one is +Inf
        self.sum = 0.0

    def observe_many(self, values: np.ndarray) -> None:
        if values.size:
            # a value equal to a bound belongs to that bucket (Prometheus buckets are "less or equal")
            self.counts += np.bincount(
                np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts)
            )
            self.sum += float(values.sum())

    def collect(self) -> Iterator[Metric]:
        cumulative = np.cumsum(self.counts)
        buckets = [(floatToGoString(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


class LiveCollector(Collector):
    """Metrics read from the worker's state at each scrape (models, drift, shadow), from `families`."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families()


@dataclass
class _Interval:
    """What happened since the last history sample."""

    classified: int = 0
    rejected: Tally[str] = field(default_factory=Tally)
    batches: int = 0
    batch_items: int = 0
    scoring_seconds: float = 0.0
    latencies: list[np.ndarray] = field(default_factory=list)
    predict: Tally[str] = field(default_factory=Tally)  # POST /predict answers by status


@dataclass
class _Sample:
    at: float
    seconds: float
    classified: int
    rejected: dict[str, int]
    latency_p50: float | None
    latency_p99: float | None
    batch_size: float | None
    scoring_seconds: float | None
    lag: dict[str, int | None]
    predict: dict[str, int]


class History:
    """The last hour of samples, one every ``interval`` seconds (`WorkerMetrics.sample` takes them)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: deque[_Sample] = deque(maxlen=max(2, math.ceil(HISTORY_SECONDS / interval)))

    def snapshot(self) -> dict[str, Any]:
        samples = list(self.samples)
        codes = sorted({code for s in samples for code in s.rejected})
        partitions = sorted({tp for s in samples for tp in s.lag}, key=_partition_order)
        statuses = sorted({status for s in samples for status in s.predict})
        return {
            "interval_seconds": self.interval,
            "t": [round(s.at, 3) for s in samples],
            "seconds": [round(s.seconds, 3) for s in samples],  # each sample's span (the first may be longer)
            "classified_per_second": [_rate(s.classified, s.seconds) for s in samples],
            "rejected_per_second": {
                code: [_rate(s.rejected.get(code, 0), s.seconds) for s in samples] for code in codes
            },
            "latency_p50_seconds": [s.latency_p50 for s in samples],
            "latency_p99_seconds": [s.latency_p99 for s in samples],
            "batch_size_mean": [s.batch_size for s in samples],
            "scoring_seconds_mean": [s.scoring_seconds for s in samples],
            "lag": {tp: [s.lag.get(tp) for s in samples] for tp in partitions},
            "predict_per_second": {
                status: [_rate(s.predict.get(status, 0), s.seconds) for s in samples] for status in statuses
            },
        }


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 3) if seconds > 0 else 0.0


def _partition_order(name: str) -> tuple[str, int]:
    topic, _, partition = name.rpartition(":")
    return topic, int(partition) if partition.isdigit() else -1


class WorkerMetrics:
    """The worker's instruments, in a registry of its own (several apps may share one test process)."""

    def __init__(self, history_interval: float = 5.0) -> None:
        registry = self.registry = CollectorRegistry()
        self.items_in = Counter(
            "nomenclature_items_in", "Records read from the raw topics.", ["topic"], registry=registry
        )
        self.items_classified = Counter(
            "nomenclature_items_classified",
            "Items classified and published to nomenclature.classified.",
            ["topic"],
            registry=registry,
        )
        self.items_rejected = Counter(
            "nomenclature_items_rejected",
            "Records dead-lettered to nomenclature.rejected (duplicates included).",
            ["topic"],
            registry=registry,
        )
        self.rejected_errors = Counter(
            "nomenclature_rejected_errors",
            "Errors of dead-lettered records by code (a record with two errors counts under both codes).",
            ["topic", "code"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "nomenclature_micro_batch_items",
            "Records per micro-batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.scoring_seconds = Histogram(
            "nomenclature_scoring_duration_seconds",
            "Seconds a scoring process spent on one micro-batch (decode, validate, features, MLP, "
            "explanations, encode), measured in that process.",
            buckets=SCORING_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "nomenclature_micro_batch_duration_seconds",
            "Seconds from a micro-batch's arrival in the worker to its outputs delivered and inputs "
            "acknowledged.",
            buckets=SCORING_BUCKETS,
            registry=registry,
        )
        self.latency = BulkHistogram(
            "nomenclature_end_to_end_latency_seconds",
            "Seconds from a raw record's timestamp to the delivery of its output (replays excluded).",
            LATENCY_BUCKETS,
        )
        self.confidence = BulkHistogram(
            "nomenclature_prediction_confidence",
            "The champion's calibrated confidence in the label of each item it classified (ratio).",
            CONFIDENCE_EDGES[1:],
        )
        registry.register(self.latency)
        registry.register(self.confidence)
        self.consumer_lag = Gauge(
            "nomenclature_consumer_lag_records",
            "Records of an assigned raw partition not yet processed (fetched high-water mark minus the "
            "next offset to process), as of the last sample.",
            ["topic", "partition"],
            registry=registry,
        )
        self.predict_requests = Counter(
            "nomenclature_predict_requests",
            "POST /predict requests by HTTP status.",
            ["status"],
            registry=registry,
        )
        self.predict_items = Counter(
            "nomenclature_predict_items",
            "Items of POST /predict requests, by outcome (classified | rejected).",
            ["outcome"],
            registry=registry,
        )
        self.predict_queue_wait_seconds = Histogram(
            "nomenclature_predict_queue_wait_seconds",
            "Seconds a POST /predict request waited for a scoring slot.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.predict_queue_depth = Gauge(
            "nomenclature_predict_queue_depth", "POST /predict requests waiting.", registry=registry
        )
        self.shadow_items = Counter(
            "nomenclature_shadow_items",
            "Items the challenger in shadow scored beside the champion, by whether their labels agreed.",
            ["challenger", "agreed"],
            registry=registry,
        )
        ProcessCollector(registry=registry)  # the worker process's CPU, memory, open files
        self.history = History(history_interval)
        self._interval = _Interval()
        self._last_sample = time.time()
        self._shadow: dict[str, tuple[int, int]] = {}  # challenger -> (scored, agreed)

    def add_live(self, families: Callable[[], Iterable[Metric]]) -> None:
        """Metrics computed from live state at each scrape."""
        self.registry.register(LiveCollector(families))

    def batch(
        self,
        messages: Sequence[RawMessage],
        result: BatchResult,
        confidences: Sequence[float],
        scoring_seconds: float,
        batch_seconds: float,
        delivered_at: float,
        challenger: str | None = None,
    ) -> None:
        """One micro-batch, after its outputs were delivered at ``delivered_at`` (epoch seconds).
        ``result.counts``: (topic, outcome, code) per classified item and per error of a rejected one;
        ``result.shadow``: the items ``challenger`` scored in shadow, first time seen."""
        interval = self._interval
        counts = result.counts
        if challenger is not None and result.shadow:
            agreed = sum(1 for s in result.shadow if s.agreed)
            self.shadow_items.labels(challenger, "true").inc(agreed)
            self.shadow_items.labels(challenger, "false").inc(len(result.shadow) - agreed)
            scored_before, agreed_before = self._shadow.get(challenger, (0, 0))
            self._shadow[challenger] = (scored_before + len(result.shadow), agreed_before + agreed)
        classified: Tally[str] = Tally()
        errors: Tally[tuple[str, str]] = Tally()
        for topic, outcome, code in counts:
            if outcome == "classified":
                classified[topic] += 1
            else:
                errors[(topic, code)] += 1
        for topic, n in Tally(m.topic for m in messages).items():
            self.items_in.labels(topic).inc(n)
            self.items_classified.labels(topic).inc(classified[topic])
            self.items_rejected.labels(topic).inc(n - classified[topic])
        for (topic, code), n in errors.items():
            self.rejected_errors.labels(topic, code).inc(n)
            interval.rejected[code] += n
        self.batch_size.observe(len(messages))
        self.scoring_seconds.observe(scoring_seconds)
        self.batch_seconds.observe(batch_seconds)
        stamps = np.fromiter(
            (m.timestamp_ms for m in messages if m.timestamp_ms is not None and not m.replayed), dtype=float
        )
        latencies = np.maximum(delivered_at - stamps / 1000.0, 0.0)
        self.latency.observe_many(latencies)
        self.confidence.observe_many(np.asarray(confidences, dtype=float))
        interval.classified += sum(classified.values())
        interval.batches += 1
        interval.batch_items += len(messages)
        interval.scoring_seconds += scoring_seconds
        if latencies.size:
            interval.latencies.append(latencies)

    def sample(self, lag: dict[str, dict[str, int | None]], now: float | None = None) -> None:
        """Close the interval since the last sample into the history; ``lag`` is `streams.web.views.lag`'s
        answer (per ``topic:partition``), which also sets the lag gauges."""
        now = time.time() if now is None else now
        interval, self._interval = self._interval, _Interval()
        latencies = np.concatenate(interval.latencies) if interval.latencies else np.empty(0)
        p50, p99 = (None, None) if not latencies.size else np.percentile(latencies, [50, 99]).tolist()
        lags = {tp: row.get("lag") for tp, row in lag.items()}
        self.consumer_lag.clear()
        for tp, value in lags.items():
            if value is not None:
                topic, _, partition = tp.rpartition(":")
                self.consumer_lag.labels(topic, partition).set(value)
        batches = interval.batches
        self.history.samples.append(
            _Sample(
                at=now,
                seconds=max(now - self._last_sample, 1e-9),
                classified=interval.classified,
                rejected=dict(interval.rejected),
                latency_p50=None if p50 is None else round(p50, 6),
                latency_p99=None if p99 is None else round(p99, 6),
                batch_size=round(interval.batch_items / batches, 2) if batches else None,
                scoring_seconds=round(interval.scoring_seconds / batches, 6) if batches else None,
                lag=lags,
                predict=dict(interval.predict),
            )
        )
        self._last_sample = now

    def predict_answered(self, status: int, classified: int, rejected: int) -> None:
        """One ``POST /predict`` answer: its status and how many of its items were classified / refused."""
        self.predict_requests.labels(status=str(status)).inc()
        if classified:
            self.predict_items.labels(outcome="classified").inc(classified)
        if rejected:
            self.predict_items.labels(outcome="rejected").inc(rejected)
        self._interval.predict[str(status)] += 1

    def shadow_agreement(self, challenger: str) -> tuple[int, int]:
        """(items scored by both, items they labelled alike) for ``challenger`` on this worker."""
        scored, agreed = self._shadow.get(challenger, (0, 0))
        return scored, agreed

    def confidence_histogram(self) -> dict[str, Any]:
        """Items per confidence bin since the worker started (the last bin closes at 1.0)."""
        counts = self.confidence.counts
        return {
            "edges": list(CONFIDENCE_EDGES),
            "counts": [int(c) for c in counts[:-2]] + [int(counts[-2:].sum())],
        }

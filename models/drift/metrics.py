"""Distances between a window's bin counts and the baseline's: PSI, Jensen–Shannon, and a G-test.

* PSI = Σ (pᵢ − qᵢ) · ln(pᵢ / qᵢ), natural log, on proportions with additive smoothing: every bin's count
  gets ``SMOOTHING`` added, then the counts are renormalised, so an empty bin stays finite.
* Jensen–Shannon **distance** (the square root of the divergence) with base-2 logarithms, so it lies in
  [0, 1]; on the raw proportions (it is finite without smoothing). scipy's
  ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` gives the same number.
* G-test of the window's counts against the baseline's (smoothed) proportions, for the p-value that tells a
  real shift from the noise of a small window: G = 2 Σ oᵢ ln(oᵢ / eᵢ) is χ²-distributed with k − 1 degrees
  of freedom when the window is drawn from the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import chi2

SMOOTHING = 0.5


def smoothed(counts: Sequence[float], smoothing: float = SMOOTHING) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64) + smoothing
    return values / values.sum()


def psi(reference: Sequence[float], window: Sequence[float], smoothing: float = SMOOTHING) -> float:
    q = smoothed(reference, smoothing)
    p = smoothed(window, smoothing)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(reference: Sequence[float], window: Sequence[float]) -> float:
    q = np.asarray(reference, dtype=np.float64)
    p = np.asarray(window, dtype=np.float64)
    if q.sum() <= 0 or p.sum() <= 0:
        return 0.0
    q, p = q / q.sum(), p / p.sum()
    m = (p + q) / 2
    divergence = (_kl2(p, m) + _kl2(q, m)) / 2
    return float(np.sqrt(max(divergence, 0.0)))


def _kl2(a: np.ndarray, b: np.ndarray) -> float:
    mask = a > 0
    return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))


def g_test_p_value(
    reference: Sequence[float], window: Sequence[float], smoothing: float = SMOOTHING
) -> float:
    observed = np.asarray(window, dtype=np.float64)
    n = observed.sum()
    if n <= 0 or len(observed) < 2:
        return 1.0
    expected = smoothed(reference, smoothing) * n
    mask = observed > 0
    g = 2.0 * float(np.sum(observed[mask] * np.log(observed[mask] / expected[mask])))
    return float(chi2.sf(max(g, 0.0), len(observed) - 1))

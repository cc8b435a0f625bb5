"""Confidence intervals of the report: Wilson for top-1, a seeded bootstrap for bytes.

A campaign scores 32-64 images per condition, where a top-1 of 90 % is anywhere from about 80 %
to 95 %: every accuracy and payload the report prints comes with its 95 % interval.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Z95 = 1.959963984540054
"""The standard normal's 97.5 % quantile (a two-sided 95 % interval)."""
BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(hits: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (0-1) of a proportion of ``hits`` successes in ``n`` trials;
    (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` images resampled with
    replacement: ``statistic`` gets an index array (..., n) and returns the statistic of each
    row, shape (...), so all resamples are computed at once and paired measurements (the same
    images clean and attacked) are resampled together. Seeded."""
    if n <= 1:
        value = float(np.asarray(statistic(np.arange(n)[None]), dtype=float).reshape(-1)[0])
        return value, value
    rng = np.random.default_rng(seed)
    values = np.broadcast_to(statistic(rng.integers(0, n, (resamples, n))), (resamples,))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(values: np.ndarray, **options) -> tuple[float, float]:
    """Bootstrap interval of the mean of ``values`` (n,) (``options``:
    :func:`bootstrap_interval`'s)."""
    values = np.asarray(values, dtype=float)
    return bootstrap_interval(lambda i: values[i].mean(axis=-1), len(values), **options)


def change_interval(clean: np.ndarray, threatened: np.ndarray, **options) -> tuple[float, float]:
    """Bootstrap interval (%) of the change of the mean, ``100 * (mean(threatened) /
    mean(clean) - 1)``, over paired per-image values (n,) of the same images."""
    clean, threatened = np.asarray(clean, dtype=float), np.asarray(threatened, dtype=float)
    if len(clean) != len(threatened):
        raise ValueError(f"paired values needed: {len(clean)} clean, {len(threatened)} threatened")

    def change(i: np.ndarray) -> np.ndarray:
        base = clean[i].mean(axis=-1)
        safe = np.where(base != 0, base, 1.0)
        return np.where(base != 0, 100 * (threatened[i].mean(axis=-1) / safe - 1), 0.0)

    return bootstrap_interval(change, len(clean), **options)

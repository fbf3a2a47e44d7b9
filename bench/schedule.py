"""Arrival schedules for ``--request-rate``: absolute send offsets, computed before the level starts. Pure.

Inter-arrival gaps are gamma-distributed with shape ``burstiness`` and mean ``1 / rate``: ``burstiness = 1`` is a
Poisson process (exponential gaps), below 1 burstier, above 1 more regular. The offsets are cumulative sums, so
a late send never shifts the ones after it (the schedule is absolute, not "sleep gap after each send").
"""
from __future__ import annotations

import math

import numpy as np


def arrival_offsets_s(rng: np.random.Generator, n: int, rate_per_s: float, burstiness: float = 1.0) -> list[float]:
    """Send offsets in seconds from the level start for ``n`` requests; an infinite rate sends all at 0."""
    if n <= 0:
        return []
    if math.isinf(rate_per_s):
        return [0.0] * n
    if rate_per_s <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be positive")
    theta = 1.0 / (rate_per_s * burstiness)
    gaps = rng.gamma(shape=burstiness, scale=theta, size=n)
    gaps[0] = 0.0  # the first request goes at the start of the level
    return [float(x) for x in np.cumsum(gaps)]

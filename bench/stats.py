"""Distribution statistics. Empty input gives None: a level where nothing succeeded has no latency, not 0 ms."""
from __future__ import annotations

from typing import Iterable

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def describe(values: Iterable[float | None]) -> dict[str, float] | None:
    """``{mean, p50, p90, p95, p99, min, max}`` of the non-None values (linear-interpolated percentiles), or None."""
    arr = np.fromiter((v for v in values if v is not None), dtype=float)
    if arr.size == 0:
        return None
    pct = np.percentile(arr, PERCENTILES)
    out = {"mean": float(arr.mean())}
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)})
    out["min"] = float(arr.min())
    out["max"] = float(arr.max())
    return out

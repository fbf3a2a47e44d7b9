"""Service-level objectives for goodput: ``--slo ttft=500ms,tpot=50ms,e2e=10s``.

A request is *good* when it succeeded and every metric named in the SLO is at or under its threshold (a metric that
could not be measured, e.g. TTFT without streaming, makes the request not good). Goodput = good requests / duration.
"""
from __future__ import annotations

import re

from .metrics import RequestMetrics

SLO_METRICS = {"ttft": "ttft_ms", "ttfat": "ttfat_ms", "tpot": "tpot_ms", "e2e": "e2e_ms", "itl": "itl_ms"}
_UNITS_MS = {"ms": 1.0, "s": 1000.0, "": 1.0, "us": 0.001}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|us|)\s*$")


def parse_duration_ms(text: str) -> float:
    """'50ms' -> 50.0, '2s' -> 2000.0, '0.5s' -> 500.0, bare numbers are milliseconds. Raises ValueError."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (examples: 500ms, 2s, 50)")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_slo(text: str) -> dict[str, float]:
    """Parse ``name=duration,...`` into ``{"ttft_ms": 500.0, ...}``. Raises ValueError naming what is wrong."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in SLO_METRICS:
            raise ValueError(f"{part!r} is not NAME=DURATION with NAME one of {', '.join(SLO_METRICS)}")
        out[SLO_METRICS[name]] = parse_duration_ms(value)
    if not out:
        raise ValueError("no objective given (example: ttft=500ms,tpot=50ms)")
    return out


def is_good(m: RequestMetrics, slo: dict[str, float]) -> bool:
    if not m.ok:
        return False
    for key, limit in slo.items():
        if key == "itl_ms":
            if not m.itl_ms or max(m.itl_ms) > limit:
                return False
            continue
        value = getattr(m, key)
        if value is None or value > limit:
            return False
    return True

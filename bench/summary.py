"""One summary entry per load level, derived from the raw records (and nothing else but the run's SLO).

Level-wide quantities (``D`` = duration from the first measured send to the last measured end, seconds):

- ``output_tokens_per_s`` = sum of output tokens of successful requests / ``D``
- ``total_tokens_per_s`` = sum of (prompt + output) tokens of successful requests / ``D``
- ``requests_per_s`` = successful requests / ``D``; ``requests_per_min`` = 60 x that (RPM)
- ``goodput`` = requests meeting every SLO / ``D`` (and as a fraction of measured requests)
- ``achieved_concurrency`` = sum of request durations / ``D`` (Little's law: the mean number in flight)

``D`` holds the level's edges (a closed loop's last requests draining with fewer than ``c`` in flight, an open
loop's requests finishing after the last arrival), so the rates above understate what the server sustains at that
load. The steady-state figures leave the edges out (window rules, formulas and minimums in ``bench/steady.py``):

- ``steady_window_s`` = ``W``: closed loop, from the first moment ``c`` requests are in flight to the moment the
  count falls below ``c`` for good; open loop, from the first to the last measured send. Never before the last
  warm-up request ended. None when there is none, or under 1 s, or with under 10 observations (stream events;
  non-streaming requests) inside.
- ``steady_output_tokens_per_s`` = tokens of successful requests arriving inside the window / ``W`` (stream
  events at their arrival; a non-streaming request's tokens spread evenly over its ``[send, end]``)
- ``steady_requests_per_s`` = sum over successful requests of the share of ``[send, end]`` inside the window / ``W``
- ``steady_in_flight_mean`` = time-weighted mean requests in flight inside the window (about ``c`` for a closed
  loop: a sanity figure)

Latency statistics use successful requests only; ``itl_ms`` pools every gap of every request (token-weighted).
Warm-up requests are kept in the records but left out of everything here, except that the steady window never
starts before the last of them ended (they occupy the server).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from . import errors
from .metrics import RequestMetrics, derive
from .records import RequestRecord
from .slo import is_good
from .stats import describe
from .steady import steady_state

NS_PER_S = 1e9
STAT_FIELDS = ("ttft_ms", "ttfat_ms", "itl_ms", "tpot_ms", "e2e_ms", "per_request_output_tokens_per_s",
               "decode_tokens_per_s", "input_tokens", "output_tokens")
STAT_KEYS = ("mean", "p50", "p90", "p95", "p99", "min", "max")


def summarize_level(label: str, records: Iterable[RequestRecord], *, concurrency: int | None,
                    request_rate: float | None, slo: dict[str, float] | None = None) -> dict[str, Any]:
    records = list(records)
    measured = [r for r in records if not r.warmup]
    metrics = [derive(r) for r in measured]
    ok = [m for m in metrics if m.ok]
    error_counts = Counter(m.error_class for m in metrics if not m.ok)
    entry: dict[str, Any] = {
        "phase": label,
        "concurrency": concurrency,
        "request_rate": request_rate,
        "requests": len(measured),
        "ok": len(ok),
        "errors": dict(sorted(error_counts.items())),
        "error_rate": (len(measured) - len(ok)) / len(measured) if measured else None,
    }
    entry["ttft_ms"] = describe(m.ttft_ms for m in ok)
    entry["ttfat_ms"] = describe(m.ttfat_ms for m in ok)
    entry["itl_ms"] = describe(x for m in ok for x in m.itl_ms)
    entry["tpot_ms"] = describe(m.tpot_ms for m in ok)
    entry["e2e_ms"] = describe(m.e2e_ms for m in ok)
    entry["per_request_output_tokens_per_s"] = describe(m.per_request_output_tokens_per_s for m in ok)
    entry["decode_tokens_per_s"] = describe(m.decode_tokens_per_s for m in ok)
    entry["input_tokens"] = describe(m.prompt_tokens for m in ok)
    entry["output_tokens"] = describe(m.output_tokens for m in ok)
    entry["tokens_estimated"] = any(m.tokens_estimated for m in ok) if ok else None
    entry["prompt_tokens_estimated"] = any(m.prompt_tokens is None for m in ok) if ok else None
    entry["itl_estimated"] = any(m.itl_estimated for m in ok) if ok else None

    duration_s = _duration_s(metrics)
    entry["duration_s"] = duration_s
    rate = (lambda x: x / duration_s) if duration_s else (lambda x: None)
    out_tokens = sum(m.output_tokens or 0 for m in ok)
    prompt_tokens = sum(_prompt_tokens(m, r) for m, r in zip(metrics, measured) if m.ok)
    entry["output_tokens_per_s"] = rate(out_tokens) if ok else None
    entry["total_tokens_per_s"] = rate(out_tokens + prompt_tokens) if ok else None
    rps = rate(len(ok)) if ok else None
    entry["requests_per_s"] = rps
    entry["requests_per_min"] = rps * 60 if rps is not None else None
    entry["achieved_concurrency"] = (
        sum((m.end_ns - m.send_ns) for m in metrics if m.end_ns is not None) / NS_PER_S / duration_s
        if duration_s else None)
    steady = steady_state(records, concurrency=concurrency, request_rate=request_rate)
    entry["steady_window_s"] = steady.window_s
    entry["steady_output_tokens_per_s"] = steady.output_tokens_per_s
    entry["steady_requests_per_s"] = steady.requests_per_s
    entry["steady_in_flight_mean"] = steady.in_flight_mean
    entry["goodput"] = _goodput(metrics, slo, duration_s)
    retry = [r.retry_after_s for r in measured if r.retry_after_s is not None]
    entry["retry_after_s_max"] = max(retry) if retry else None
    return entry


def _prompt_tokens(m: RequestMetrics, r: RequestRecord) -> int:
    if m.prompt_tokens is not None:
        return m.prompt_tokens
    return r.input_len_requested or 0


def _duration_s(metrics: list[RequestMetrics]) -> float | None:
    ends = [m.end_ns for m in metrics if m.end_ns is not None]
    if not ends:
        return None
    span = (max(ends) - min(m.send_ns for m in metrics)) / NS_PER_S
    return span if span > 0 else None


def _goodput(metrics: list[RequestMetrics], slo: dict[str, float] | None, duration_s: float | None) -> Any:
    if not slo:
        return None
    good = sum(1 for m in metrics if is_good(m, slo))
    return {
        "slo": slo,
        "good_requests": good,
        "requests_per_s": good / duration_s if duration_s else None,
        "fraction": good / len(metrics) if metrics else None,
    }


def fatal_error(records: Iterable[RequestRecord]) -> RequestRecord | None:
    """The first record failing with a fatal class (auth, balance, unknown model), if no request succeeded."""
    first_fatal = None
    for r in records:
        if r.error_class is None:
            return None
        if first_fatal is None and r.error_class in errors.FATAL:
            first_fatal = r
    return first_fatal


def flatten(entry: dict[str, Any]) -> dict[str, Any]:
    """One flat row for ``summary.csv``: ``ttft_ms: {p50: ...}`` becomes ``ttft_ms_p50``; errors ``errors_<class>``."""
    row: dict[str, Any] = {}
    for key, value in entry.items():
        if key == "errors":
            for cls, n in value.items():
                row[f"errors_{cls}"] = n
        elif key == "goodput":
            row["goodput_requests_per_s"] = value["requests_per_s"] if value else None
            row["goodput_fraction"] = value["fraction"] if value else None
        elif key in STAT_FIELDS:
            for sub in STAT_KEYS:
                row[f"{key}_{sub}"] = value[sub] if value else None
        elif isinstance(value, dict):
            for sub, v in flatten(value).items():
                row[f"{key}_{sub}"] = v
        else:
            row[key] = value
    return row

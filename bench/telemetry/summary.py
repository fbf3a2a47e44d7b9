"""Per-phase summary of the samples: pure, from a DataFrame (or samples.csv) and (label, start_ns, end_ns) phases.

For each phase, the rows with start_ns <= t_ns <= end_ns are summarised:
- gauges (memory, utilisation, power, RAM, VIRT/RES, CPU, KV-cache usage, queue lengths, loop lag):
  `<column>_peak` = max and `<column>_mean` = arithmetic mean of the non-empty cells (rows are evenly spaced, so
  this is a time average);
- across GPUs, per row: gpu_util_pct = mean over the GPUs, gpu_power_w_total = sum over the GPUs,
  gpu_mem_used_bytes_total = sum over the GPUs (by the sampler); a row where any chosen GPU is empty has no
  cross-GPU value (a partial sum would show a drop that did not happen);
- counters (server tokens, preemptions) and histogram count/sum: the increase over [start_ns, end_ns]. Each counter
  is first made continuous over the whole run (a value lower than the one before means the server restarted and
  counts from 0, so the step is the new value itself, as Prometheus' increase() does), then read at start_ns and at
  end_ns by linear interpolation between the neighbouring samples (clamped to the first and last sample);
  `preemptions_delta`, `prompt_tokens_delta`, `generation_tokens_delta`,
  `server_generation_tokens_per_s` = generation_tokens_delta / duration_s,
  `server_ttft_mean_s` = delta(sum) / delta(count) of vllm:time_to_first_token_seconds (so for ITL, end-to-end).

Anything not measured in the phase is None, never 0. Every phase dict has the same keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.telemetry.gpu import GPU_FIELDS

PEAK_MEAN: tuple[str, ...] = (
    "gpu_mem_used_bytes_total", "gpu_util_pct", "gpu_power_w_total",
    "host_ram_used_bytes", "host_swap_used_bytes", "host_cpu_pct",
    "server_virt_bytes", "server_res_bytes", "server_cpu_pct", "server_gpu_mem_bytes",
    "kv_cache_usage_pct", "requests_running", "requests_waiting",
    "in_flight", "client_cpu_pct", "client_loop_lag_ms", "sampler_cpu_pct",
)
PER_GPU_PEAK_MEAN = tuple(f for f in GPU_FIELDS if f != "mem_total_bytes")
COUNTER_DELTAS = {
    "preemptions_total": "preemptions_delta",
    "prompt_tokens_total": "prompt_tokens_delta",
    "generation_tokens_total": "generation_tokens_delta",
}
HISTOGRAM_MEANS = {"server_ttft": "server_ttft_mean_s", "server_itl": "server_itl_mean_s",
                   "server_e2e": "server_e2e_mean_s"}


def gpu_indices(columns: list[str] | pd.Index) -> list[int]:
    """The GPUs a samples table has columns for, from its `gpu<i>_mem_used_bytes` columns."""
    out = []
    for c in columns:
        if c.startswith("gpu") and c.endswith("_mem_used_bytes") and c[3:-len("_mem_used_bytes")].isdigit():
            out.append(int(c[3:-len("_mem_used_bytes")]))
    return sorted(out)


def load_samples(path: Path | str) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"phase": "string", "wall_time": "string"})


def _with_cross_gpu(df: pd.DataFrame, gpus: list[int]) -> pd.DataFrame:
    df = df.copy()
    if gpus:
        util = df[[f"gpu{i}_util_pct" for i in gpus]].astype(float)
        power = df[[f"gpu{i}_power_w" for i in gpus]].astype(float)
        df["gpu_util_pct"] = util.mean(axis=1, skipna=False)
        df["gpu_power_w_total"] = power.sum(axis=1, skipna=False, min_count=len(gpus))
    return df


def _py(value: float, column: str) -> int | float:
    return int(round(value)) if "_bytes" in column else float(value)


def _peak_mean(rows: pd.DataFrame, column: str) -> tuple[int | float | None, float | None]:
    if column not in rows:
        return None, None
    s = pd.to_numeric(rows[column], errors="coerce").dropna()
    if s.empty:
        return None, None
    return _py(s.max(), column), float(s.mean())


def _increase(t_ns: pd.Series, values: pd.Series, start_ns: int, end_ns: int) -> float | None:
    """How much a counter rose over [start_ns, end_ns]; None when there are not two samples to tell by."""
    mask = values.notna()
    if mask.sum() < 2:
        return None
    t = (t_ns[mask].to_numpy(dtype=np.int64) - int(t_ns[mask].iloc[0])).astype(float)
    v = values[mask].to_numpy(dtype=float)
    t0 = int(t_ns[mask].iloc[0])
    lo, hi = float(start_ns - t0), float(end_ns - t0)
    if hi < t[0] or lo > t[-1]:
        return None
    steps = np.diff(v)
    steps = np.where(steps >= 0, steps, v[1:])  # a drop is a restart: everything counted since is new
    cumulative = np.concatenate(([0.0], np.cumsum(steps)))
    return float(np.interp(hi, t, cumulative) - np.interp(lo, t, cumulative))


def _column(df: pd.DataFrame, name: str) -> pd.Series | None:
    return pd.to_numeric(df[name], errors="coerce") if name in df else None


def summarize_phase(df: pd.DataFrame, start_ns: int, end_ns: int) -> dict:
    """One phase's summary from a samples table that already has the cross-GPU columns (see summarize_samples)."""
    gpus = gpu_indices(df.columns)
    t = pd.to_numeric(df["t_ns"], errors="coerce") if "t_ns" in df else pd.Series(dtype="int64")
    rows = df[(t >= start_ns) & (t <= end_ns)] if len(df) else df
    duration_s = (end_ns - start_ns) / 1e9
    out: dict = {"n_samples": int(len(rows)), "duration_s": duration_s, "gpus": gpus}
    for col in PEAK_MEAN:
        out[f"{col}_peak"], out[f"{col}_mean"] = _peak_mean(rows, col)
    for i in gpus:
        for field in PER_GPU_PEAK_MEAN:
            col = f"gpu{i}_{field}"
            out[f"{col}_peak"], out[f"{col}_mean"] = _peak_mean(rows, col)
        out[f"gpu{i}_mem_total_bytes"] = _peak_mean(rows, f"gpu{i}_mem_total_bytes")[0]
    for col, key in COUNTER_DELTAS.items():
        values = _column(df, col)
        out[key] = None if values is None else _increase(t, values, start_ns, end_ns)
    gen = out["generation_tokens_delta"]
    out["server_generation_tokens_per_s"] = gen / duration_s if gen is not None and duration_s > 0 else None
    for prefix, key in HISTOGRAM_MEANS.items():
        count, total = _column(df, f"{prefix}_count"), _column(df, f"{prefix}_sum_s")
        d_count = None if count is None else _increase(t, count, start_ns, end_ns)
        d_sum = None if total is None else _increase(t, total, start_ns, end_ns)
        out[key] = d_sum / d_count if d_count and d_sum is not None and d_count > 0 else None
    return out


def summarize_samples(samples: pd.DataFrame | Path | str, phases: list[tuple[str, int, int]]) -> dict[str, dict]:
    """phases: (label, start_ns, end_ns) on the samples' clock (t_ns) -> {label: summary}; see the module doc."""
    df = samples if isinstance(samples, pd.DataFrame) else load_samples(samples)
    df = _with_cross_gpu(df, gpu_indices(df.columns))
    return {label: summarize_phase(df, start_ns, end_ns) for label, start_ns, end_ns in phases}

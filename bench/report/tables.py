"""Run folders as tidy pandas tables, the input of every chart and of the notebooks.

- `levels_table(runs)`: one row per (run, level), the summary's keys flattened as in `summary.csv`
  (`ttft_ms_p50`, `telemetry_server_res_bytes_peak`, ...) plus `run`, `order`, `x` (the load axis value) and
  `level_marker` (an index shared by equal level labels across runs).
- `requests_table(runs)`: one row per measured request (warm-up left out, as in the summary), with the metrics of
  `bench.metrics.derive` and its ITL gaps as a tuple.
- `samples_table(runs)`: `samples.csv` of every run that has one, with `t_s` = seconds since the run started.
- `field_table(levels)`: the table a capacity meeting reads (concurrency, GPU memory, VIRT, RES, tokens/s per request,
  aggregate tokens/s, TTFT p50/p99), in display units.
- `runs_table(runs)`: one row per run: name, endpoint, model, hardware, start, status.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench.metrics import derive
from bench.records import read_records
from bench.summary import flatten

from .load import RunData, run_parts
from .style import GB

X_CONCURRENCY = "concurrency (requests in flight)"
X_RATE = "request rate (requests/s)"
X_ACHIEVED = "achieved concurrency (mean requests in flight)"


def load_axis(levels: list[dict[str, Any]]) -> tuple[str, str]:
    """(summary key, axis label) for the load axis: target concurrency when every level has one, else the request
    rate when every level has a finite one, else the achieved concurrency (Little's law)."""
    def finite(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    if levels and all(finite(lv.get("concurrency")) for lv in levels):
        return "concurrency", X_CONCURRENCY
    if levels and all(finite(lv.get("request_rate")) for lv in levels):
        return "request_rate", X_RATE
    return "achieved_concurrency", X_ACHIEVED


def levels_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per (run, level) with every summary key flattened (None stays NaN, never 0)."""
    all_levels = [lv for r in runs for lv in r.levels]
    key, label = load_axis(all_levels)
    rows = []
    for run in runs:
        for order, level in enumerate(run.levels):
            row = {"run": run.name, "run_dir": str(run.run_dir), "order": order, "level": level.get("phase")}
            row.update(flatten(level))
            row["x"] = level.get(key)
            rows.append(row)
    table = _numeric(pd.DataFrame(rows))
    table.attrs["x_key"], table.attrs["x_label"] = key, label
    # one marker per level label, ordered by load, shared by runs that measured the same level
    firsts = table.groupby("level", sort=False)["x"].min().sort_values(kind="stable")
    table["level_marker"] = table["level"].map({lv: i for i, lv in enumerate(firsts.index)})
    return table


def _numeric(table: pd.DataFrame) -> pd.DataFrame:
    """Columns of numbers and Nones (a key no level measured) become float columns with NaN."""
    for name in table.columns:
        col = table[name]
        if col.dtype == object and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                       for v in col):
            table[name] = pd.to_numeric(col.astype("float64"))
    return table


def requests_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per measured request, metrics from `bench.metrics.derive` (the summary's own derivation)."""
    rows = []
    for run in runs:
        if not run.requests_path.is_file():
            continue
        origin = run.run.get("started_monotonic_ns")
        for record in read_records(run.requests_path):
            if record.warmup:
                continue
            m = derive(record)
            start = origin if origin is not None else m.send_ns
            rows.append({
                "run": run.name, "level": record.phase, "request_id": record.request_id, "ok": m.ok,
                "error_class": m.error_class, "ttft_ms": m.ttft_ms, "ttfat_ms": m.ttfat_ms, "tpot_ms": m.tpot_ms,
                "e2e_ms": m.e2e_ms, "per_request_output_tokens_per_s": m.per_request_output_tokens_per_s,
                "decode_tokens_per_s": m.decode_tokens_per_s, "output_tokens": m.output_tokens,
                "prompt_tokens": m.prompt_tokens, "itl_ms": m.itl_ms,
                "send_s": (m.send_ns - start) / 1e9,
                "end_s": None if m.end_ns is None else (m.end_ns - start) / 1e9,
            })
    columns = ["run", "level", "request_id", "ok", "error_class", "ttft_ms", "ttfat_ms", "tpot_ms", "e2e_ms",
               "per_request_output_tokens_per_s", "decode_tokens_per_s", "output_tokens", "prompt_tokens", "itl_ms",
               "send_s", "end_s"]
    return pd.DataFrame(rows, columns=columns)


def samples_table(runs: list[RunData]) -> pd.DataFrame:
    """Every run's telemetry samples, `t_s` counted from the run's start on the shared monotonic clock."""
    from bench.telemetry.summary import load_samples
    frames = []
    for run in runs:
        if not run.samples_path.is_file():
            continue
        try:
            df = load_samples(run.samples_path)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        if df.empty or "t_ns" not in df:
            continue
        origin = run.run.get("started_monotonic_ns") or int(df["t_ns"].iloc[0])
        df.insert(0, "run", run.name)
        df.insert(1, "t_s", (df["t_ns"] - origin) / 1e9)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["run", "t_s", "t_ns"])
    return pd.concat(frames, ignore_index=True, sort=False)


def phases_table(runs: list[RunData]) -> pd.DataFrame:
    """Each run's level windows on the samples' clock: run, level, start_s, end_s."""
    rows = []
    for run in runs:
        origin = run.run.get("started_monotonic_ns")
        phases = run.run.get("phases") or []
        if origin is None and phases:
            origin = min(p["start_ns"] for p in phases)
        for p in phases:
            rows.append({"run": run.name, "level": p["label"], "start_s": (p["start_ns"] - origin) / 1e9,
                         "end_s": (p["end_ns"] - origin) / 1e9})
    return pd.DataFrame(rows, columns=["run", "level", "start_s", "end_s"])


FIELD_COLUMNS = {
    "run": "run",
    "level": "level",
    "concurrency": "concurrency",
    "gpu_mem_gb": "GPU memory peak (GB)",
    "virt_gb": "server VIRT peak (GB)",
    "res_gb": "server RES peak (GB)",
    "per_request_tps": "tokens/s per request (mean)",
    "aggregate_tps": "aggregate output tokens/s",
    "steady_tps": "steady output tokens/s",
    "ttft_p50_ms": "TTFT p50 (ms)",
    "ttft_p99_ms": "TTFT p99 (ms)",
    "ok": "ok / requests",
}


def _col(levels: pd.DataFrame, name: str) -> pd.Series:
    return levels[name] if name in levels else pd.Series(np.nan, index=levels.index)


def field_table(levels: pd.DataFrame) -> pd.DataFrame:
    """concurrency | GPU memory | VIRT | RES | tokens/s per request | aggregate tokens/s | TTFT p50/p99, in display
    units (GB = 1e9 bytes, peaks over the level). Unmeasured values stay NaN (shown as '–')."""
    out = pd.DataFrame({
        "run": levels["run"], "level": levels["level"], "concurrency": _col(levels, "concurrency"),
        "gpu_mem_gb": _col(levels, "telemetry_gpu_mem_used_bytes_total_peak") / GB,
        "virt_gb": _col(levels, "telemetry_server_virt_bytes_peak") / GB,
        "res_gb": _col(levels, "telemetry_server_res_bytes_peak") / GB,
        "per_request_tps": _col(levels, "per_request_output_tokens_per_s_mean"),
        "aggregate_tps": _col(levels, "output_tokens_per_s"),
        "steady_tps": _col(levels, "steady_output_tokens_per_s"),
        "ttft_p50_ms": _col(levels, "ttft_ms_p50"), "ttft_p99_ms": _col(levels, "ttft_ms_p99"),
        "ok": [f"{int(o)}/{int(n)}" for o, n in zip(levels["ok"], levels["requests"])],
    })
    return out.rename(columns=FIELD_COLUMNS).reset_index(drop=True)


def runs_table(runs: list[RunData]) -> pd.DataFrame:
    rows = []
    for run in runs:
        parts = run_parts(run)
        rows.append({"run": run.name, "label": parts["label"] or "–", "endpoint": parts["endpoint"],
                     "model": parts["model"], "hardware": parts["hardware"],
                     "api": (run.run.get("target") or {}).get("api"),
                     "started (UTC)": run.run.get("started_at"), "status": run.run.get("status"),
                     "levels": ", ".join(str(lv.get("phase")) for lv in run.levels),
                     "folder": str(run.run_dir)})
    return pd.DataFrame(rows)

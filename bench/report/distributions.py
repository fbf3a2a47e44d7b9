"""TTFT and ITL distributions per load level, as empirical CDFs (one colour per run, one panel per level).

Up to 400 values (TTFT of a level's requests, usually) the curve is the exact empirical CDF, a step of 1/n at each
value. More values (a level's pooled ITL gaps can be 150,000) are drawn through their quantiles at q = 0, 1/400,
..., 1, linear-interpolated as `bench.stats.describe` computes p50/p90/p99, so the curve crosses 0.5, 0.9 and 0.99
exactly at the summary's percentiles, in 401 points.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from . import style
from .style import Chart, styled

QUANTILES = np.linspace(0.0, 1.0, 401)
MAX_STEPS = 400
METRICS = (("ttft_ms", "TTFT (ms)", "requests", "no successful streamed request"),
           ("itl_ms", "ITL (ms)", "inter-token gaps", "no inter-token gap"))
MAX_COLUMNS = 4


def cdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(x, q, steps): up to MAX_STEPS values, the sorted values and q = i/n (i = 1..n), to draw as steps; beyond,
    the values' linear-interpolated quantiles at QUANTILES, to draw as a line."""
    if values.size <= MAX_STEPS:
        return np.sort(values), np.arange(1, values.size + 1) / values.size, True
    return np.quantile(values, QUANTILES), QUANTILES, False


def _values(requests: pd.DataFrame, run: str, level: str, metric: str) -> np.ndarray:
    part = requests[(requests["run"] == run) & (requests["level"] == level) & requests["ok"]]
    if metric == "itl_ms":
        return np.fromiter((g for gaps in part["itl_ms"] for g in gaps), dtype=float)
    return part[metric].dropna().to_numpy(dtype=float)


@styled
def latency_cdf_chart(requests: pd.DataFrame, level_order: list[str], where: str,
                      colors: dict[str, str] | None = None) -> Chart:
    """Rows: TTFT, then ITL; columns: levels in `level_order` (wrapped after 4); lines: runs."""
    runs = list(dict.fromkeys(requests["run"]))
    colors = colors or style.run_colors(runs)
    ncols = max(1, min(MAX_COLUMNS, len(level_order)))
    blocks = max(1, math.ceil(len(level_order) / ncols))
    fig, axes = style.new_figure(2 * blocks, ncols, width=max(6.0, 3.3 * ncols + 0.6), height=3.0 * 2 * blocks + 1.2)
    rows = []
    for m, (metric, xlabel, what, none) in enumerate(METRICS):
        for i, level in enumerate(level_order):
            ax = axes[(i // ncols) * 2 + m][i % ncols]
            all_x = []
            for run in runs:
                values = _values(requests, run, level, metric)
                if values.size == 0:
                    continue
                x, q, steps = cdf_points(values)
                if steps:  # from 0 below the smallest value, up 1/n at each value
                    ax.step(np.r_[x[0], x], np.r_[0.0, q], where="post", color=colors[run], linewidth=1.4)
                else:
                    ax.plot(x, q, color=colors[run], linewidth=1.4)
                all_x.append(x)
                rows += [{"run": run, "level": level, "metric": metric, "x": xv, "q": qv, "n": int(values.size),
                          "kind": "values" if steps else "quantiles"} for xv, qv in zip(x, q)]
            ax.set_title(f"{'TTFT' if metric == 'ttft_ms' else 'ITL'} at {level}")
            if not all_x:
                style.no_data(ax, f"{none} at {level}")
                continue
            # log scale only when the bulk (p1..p99 of every curve) spans 50x, not for one stray gap
            low = min(float(np.quantile(x, 0.01)) for x in all_x)
            high = max(float(np.quantile(x, 0.99)) for x in all_x)
            top = max(float(x[-1]) for x in all_x)
            if not style.log_if_wide(ax, [low, high], axis="x", ratio=50.0) and top > 3 * high > 0:
                # a few stragglers would squeeze the bulk into a corner: cut the axis and say where the tail ends
                ax.set_xlim(left=0, right=1.5 * high)
                ax.text(0.98, 0.04, f"tail to {style.plain_number(round(top, 1))} ms →", transform=ax.transAxes,
                        ha="right", va="bottom", fontsize=7, color="#555555")
            for q in (0.5, 0.99):
                ax.axhline(q, color="#999999", linewidth=0.6, linestyle=":")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"fraction of {what} ≤ x")
        for j in range(len(level_order), blocks * ncols):
            axes[(j // ncols) * 2 + m][j % ncols].set_visible(False)
    style.title(fig, "TTFT and inter-token latency distributions (CDF) per level", where)
    handles = [Line2D([], [], color=colors[r]) for r in runs]
    style.legend_below(fig, handles, runs)
    caption = ("Each curve is the fraction of requests (TTFT) or of token gaps (ITL) at or under x; dotted lines mark "
               "the median and p99. A long flat tail to the right is queueing or a stall; a tail beyond the axis is "
               "marked with its maximum.")
    return Chart("latency_cdf", fig, pd.DataFrame(rows), caption)

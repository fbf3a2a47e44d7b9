"""Charts of the per-level summary: throughput, latency percentiles, and throughput against latency.

Each function takes the levels table (`tables.levels_table`) and returns a `Chart` whose `data` holds exactly the
plotted points, in the summary's own units unless the `unit` column says otherwise:

- `throughput_chart`: aggregate output tokens/s (`output_tokens_per_s`) and mean per-request output tokens/s
  (`per_request_output_tokens_per_s_mean`) against the load; sizing predictions dashed on top.
- `latency_chart`: TTFT, TPOT and E2E p50/p90/p99 against the load, SLO limits as horizontal lines.
- `pareto_chart`: aggregate output tokens/s against mean per-request tokens/s and against TTFT p99, one point per
  level, with the Pareto frontier of all points.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from . import style
from .predict import Prediction
from .style import Chart, styled

SLO_COLOR = "#B22222"


def _colors(levels: pd.DataFrame, colors: dict[str, str] | None) -> dict[str, str]:
    return colors or style.run_colors(levels["run"])


def _runs(levels: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(levels["run"]))


def _run_handles(runs: Sequence[str], colors: dict[str, str], marker: str = "o") -> list[Line2D]:
    return [Line2D([], [], color=colors[r], marker=marker, label=r) for r in runs]


@styled
def throughput_chart(levels: pd.DataFrame, where: str, predictions: Sequence[Prediction] = (),
                     colors: dict[str, str] | None = None) -> Chart:
    """Aggregate and per-request output tokens/s against the load (the knee: where the first flattens and the
    second falls), with sizing's prediction dashed in the run's colour when there is one."""
    colors = _colors(levels, colors)
    x_label = levels.attrs.get("x_label", "concurrency")
    fig, axes = style.new_figure(1, 2, width=10.5, height=4.6)
    panels = (("output_tokens_per_s", "aggregate output tokens/s", "all requests together"),
              ("per_request_output_tokens_per_s_mean", "output tokens/s per request (mean)", "what one user sees"))
    # runs with the same plan and token counts share one prediction: one grey line, not several on top of each other
    by_plan: dict[str, list[Prediction]] = {}
    for pred in predictions:
        by_plan.setdefault(pred.description, []).append(pred)
    shared = [(group[0], colors.get(group[0].run, style.PREDICTED_COLOR) if len(group) == 1 else style.PREDICTED_COLOR,
               [p.run for p in group]) for group in by_plan.values()]
    rows = []
    for ax, (key, ylabel, subtitle) in zip(axes[0], panels):
        for run in _runs(levels):
            part = levels[levels["run"] == run].sort_values("x")
            part = part[part["x"].notna() & part[key].notna()] if key in part else part.iloc[0:0]
            ax.plot(part["x"], part[key], marker="o", color=colors[run], label=run)
            rows += [{"run": run, "level": lv, "x": x, "metric": key, "value": v, "source": "measured"}
                     for lv, x, v in zip(part["level"], part["x"], part[key])]
            if key == "output_tokens_per_s":
                _mark_errors(ax, part)
                steady = levels[levels["run"] == run].sort_values("x")
                if "steady_output_tokens_per_s" in steady:
                    steady = steady[steady["x"].notna() & steady["steady_output_tokens_per_s"].notna()]
                    if len(steady):
                        ax.plot(steady["x"], steady["steady_output_tokens_per_s"], marker="s", markersize=4,
                                linestyle=":", color=colors[run])
                        rows += [{"run": run, "level": lv, "x": x, "metric": "steady_output_tokens_per_s",
                                  "value": v, "source": "measured"}
                                 for lv, x, v in zip(steady["level"], steady["x"], steady["steady_output_tokens_per_s"])]
        for pred, color, runs in shared:
            t = pred.table
            pkey = "output_tokens_per_s" if key == "output_tokens_per_s" else "per_request_output_tokens_per_s"
            ax.plot(t["concurrency"], t[pkey], linestyle="--", color=color, alpha=0.85)
            rows += [{"run": " / ".join(runs), "level": None, "x": c, "metric": key, "value": v, "source": "sizing"}
                     for c, v in zip(t["concurrency"], t[pkey])]
        style.level_axis(ax, levels["x"], x_label)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel.split(' (')[0]}: {subtitle}")
        if not any(r["metric"] == key and r["source"] == "measured" for r in rows):
            style.no_data(ax, "no request succeeded: no tokens/s")
        else:
            ax.set_ylim(bottom=0)
    style.title(fig, "Output tokens/s against load", where)
    handles = _run_handles(_runs(levels), colors)
    labels = [h.get_label() for h in handles]
    if any(r["metric"] == "steady_output_tokens_per_s" for r in rows):
        handles.append(Line2D([], [], linestyle=":", marker="s", markersize=4, color="0.4"))
        labels.append("steady state (no ramp-up or drain)")
    for pred, color, runs in shared:
        handles.append(Line2D([], [], linestyle="--", color=color))
        labels.append(f"predicted ({pred.description})" + (f" for {len(runs)} runs" if len(runs) > 1 else ""))
    style.legend_below(fig, handles, labels)
    caption = ("Left: tokens/s of all requests together; right: tokens/s one request gets (N / E2E). The knee is "
               "where the left curve flattens while the right one falls. A level with failed requests says how many "
               "(its tokens/s count the successes).")
    if any(r["metric"] == "steady_output_tokens_per_s" for r in rows):
        caption += (" Squares, dotted: steady-state tokens/s, without the level's ramp-up and drain (docs/metrics.md)"
                    " — what a server sustains at that load, and what a prediction models.")
    if predictions:
        caption += " Dashed: the sizing prediction for the same model and hardware."
    return Chart("throughput", fig, pd.DataFrame(rows), caption)


def _mark_errors(ax, part: pd.DataFrame) -> None:
    """Say beside a level's point how many of its requests failed (its tokens/s counts the successes only)."""
    for _, r in part.iterrows():
        failed = int(r["requests"] - r["ok"]) if pd.notna(r.get("requests")) else 0
        if failed > 0:
            ax.annotate(f"{failed}/{int(r['requests'])} failed", xy=(r["x"], r["output_tokens_per_s"]),
                        xytext=(4, -10), textcoords="offset points", fontsize=7, color=SLO_COLOR)


LATENCY_PANELS = (("ttft_ms", "TTFT", "time to first token (ms)", 1.0),
                  ("tpot_ms", "TPOT", "time per output token (ms)", 1.0),
                  ("e2e_ms", "E2E", "end-to-end latency (s)", 1e-3))


@styled
def latency_chart(levels: pd.DataFrame, where: str, slos: dict[str, dict[str, float]] | None = None,
                  colors: dict[str, str] | None = None) -> Chart:
    """TTFT, TPOT and E2E at p50 (solid), p90 (dashed) and p99 (dotted) against the load; `slos` maps a run to
    its SLO (`{"ttft_ms": 500.0, ...}`), drawn as red horizontal lines."""
    colors = _colors(levels, colors)
    x_label = levels.attrs.get("x_label", "concurrency")
    fig, axes = style.new_figure(1, 3, width=12.0, height=4.4)
    rows = []
    limits = {}
    for slo in (slos or {}).values():
        for key, value in (slo or {}).items():
            limits.setdefault(key, set()).add(value)
    for ax, (key, name, ylabel, scale) in zip(axes[0], LATENCY_PANELS):
        plotted = []
        for run in _runs(levels):
            part = levels[levels["run"] == run].sort_values("x")
            for pct, ls in style.PERCENTILE_STYLES.items():
                col = f"{key}_{pct}"
                if col not in part:
                    continue
                sub = part[part[col].notna() & part["x"].notna()]
                if sub.empty:
                    continue
                ax.plot(sub["x"], sub[col] * scale, linestyle=ls, marker="o", markersize=3.5, color=colors[run])
                plotted += list(sub[col] * scale)
                rows += [{"run": run, "level": lv, "x": x, "metric": key, "percentile": pct, "value": v * scale,
                          "unit": "s" if scale != 1.0 else "ms"} for lv, x, v in zip(sub["level"], sub["x"], sub[col])]
        for limit in sorted(limits.get(key, ())):
            ax.axhline(limit * scale, color=SLO_COLOR, linewidth=1.2, alpha=0.8)
            ax.annotate(f"SLO {style.plain_number(limit * scale)} {'s' if scale != 1.0 else 'ms'}",
                        xy=(0.0, limit * scale), xycoords=("axes fraction", "data"), xytext=(3, 2),
                        textcoords="offset points", ha="left", va="bottom", fontsize=7, color=SLO_COLOR)
            plotted.append(limit * scale)
        style.level_axis(ax, levels["x"], x_label)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{name} p50 / p90 / p99")
        if not plotted:
            style.no_data(ax, f"no {name}: no request succeeded" + (" with streaming" if key != "e2e_ms" else ""))
        elif not style.log_if_wide(ax, plotted):
            ax.set_ylim(bottom=0)
    style.title(fig, "Latency percentiles against load", where)
    handles = _run_handles(_runs(levels), colors)
    style.legend_below(fig, handles, [h.get_label() for h in handles])
    keys = [Line2D([], [], color="#333333", linestyle=ls) for ls in style.PERCENTILE_STYLES.values()]
    names = list(style.PERCENTILE_STYLES)
    if limits:
        keys.append(Line2D([], [], color=SLO_COLOR))
        names.append("SLO (--slo)")
    style.legend_right(fig, keys, names, title="percentile")
    caption = ("p50 solid, p90 dashed, p99 dotted. TTFT grows first when requests queue; TPOT grows as the batch "
               "grows; a log axis is used when values span more than 30x.")
    return Chart("latency", fig, pd.DataFrame(rows), caption)


def pareto_front(points: np.ndarray, x_better: str) -> np.ndarray:
    """Indices of the points no other point beats on both axes (y: higher is better; x: `higher` or `lower`)."""
    sign = 1.0 if x_better == "higher" else -1.0
    keep = []
    for i, (x, y) in enumerate(points):
        dominated = any((sign * x2 >= sign * x and y2 >= y) and (sign * x2 > sign * x or y2 > y)
                        for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            keep.append(i)
    return np.array(keep, dtype=int)


PARETO_PANELS = (("per_request_output_tokens_per_s_mean", "output tokens/s per request (mean)", "higher",
                  "per-request speed (right is better)"),
                 ("ttft_ms_p99", "TTFT p99 (ms)", "lower", "TTFT p99 (left is better)"))


@styled
def pareto_chart(levels: pd.DataFrame, where: str, colors: dict[str, str] | None = None) -> Chart:
    """Aggregate output tokens/s against per-request speed and against TTFT p99: one marker per level, one colour
    per run; the grey step line is the Pareto frontier of all points (up is always better)."""
    colors = _colors(levels, colors)
    fig, axes = style.new_figure(1, 2, width=10.5, height=4.6)
    rows = []
    marker_of = dict(zip(levels["level"], levels["level_marker"]))
    for ax, (key, xlabel, better, subtitle) in zip(axes[0], PARETO_PANELS):
        usable = levels[levels[key].notna() & levels["output_tokens_per_s"].notna()] if key in levels else levels[:0]
        for run in _runs(usable):
            part = usable[usable["run"] == run].sort_values("x")
            ax.plot(part[key], part["output_tokens_per_s"], color=colors[run], linewidth=1, alpha=0.5)
            for _, r in part.iterrows():
                ax.plot([r[key]], [r["output_tokens_per_s"]], linestyle="none", color=colors[run], markersize=7,
                        marker=style.MARKERS[int(r["level_marker"]) % len(style.MARKERS)])
                rows.append({"run": run, "level": r["level"], "x_metric": key, "x": r[key],
                             "output_tokens_per_s": r["output_tokens_per_s"], "frontier": False})
        if usable.empty:
            style.no_data(ax, "no level has both values")
            continue
        panel = rows[len(rows) - len(usable):]
        pts = np.array([[r["x"], r["output_tokens_per_s"]] for r in panel], dtype=float)
        front = pareto_front(pts, better)
        order = front[np.argsort(pts[front, 0])]
        ax.step(pts[order, 0], pts[order, 1], where="post" if better == "lower" else "pre", color="#777777",
                linestyle="--", linewidth=1, zorder=0)
        for k in front:
            panel[int(k)]["frontier"] = True
        if key.startswith("ttft"):
            style.log_if_wide(ax, pts[:, 0], axis="x")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("aggregate output tokens/s")
        ax.set_title(f"Throughput vs {subtitle}")
        ax.set_ylim(bottom=0)
    style.title(fig, "Throughput against latency (up is better)", where)
    runs = _runs(levels)
    style.legend_below(fig, [Line2D([], [], color=colors[r], linewidth=3) for r in runs], runs)
    level_order = sorted(marker_of, key=marker_of.get)
    keys = [Line2D([], [], linestyle="none", marker=style.MARKERS[marker_of[lv] % len(style.MARKERS)],
                   color="#333333") for lv in level_order]
    keys.append(Line2D([], [], color="#777777", linestyle="--"))
    style.legend_right(fig, keys, [str(lv) for lv in level_order] + ["Pareto\nfrontier"], title="level")
    caption = ("Each marker is one level of one run. Points on the dashed frontier are the best trade-offs: no other "
               "level gives more throughput at the same or better latency.")
    return Chart("pareto", fig, pd.DataFrame(rows), caption)

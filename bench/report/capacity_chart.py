"""The figure of a `bench capacity` run: which loads met the objectives, how closely, and which objective gave way.

Left: the share of each level's requests that met every objective against the load, passes filled and failures
hollow, the `--goodput-min` line, and the answer marked. Right: for each objective, the share of successful
requests over its threshold: the one that rises first is what limits the deployment (TTFT when requests queue for
admission, TPOT when the batch grows). Drawn only for runs that are capacity searches (``run.capacity`` in
summary.json).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib.lines import Line2D

from . import style
from .style import Chart, styled

SLO_COLOR = "#c0392b"
OBJECTIVE_STYLES = {"ttft": "-", "ttfat": "-.", "tpot": "--", "itl": ":", "e2e": (0, (5, 1, 1, 1))}


def capacity_rows(name: str, found: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measured level of a capacity search, ordered by load."""
    rows = []
    for p in sorted(found.get("probes") or [], key=lambda p: p["load"]):
        rows.append({"run": name, "source": "measured", "level": p["phase"], "load": p["load"], "passed": p["passed"],
                     "good_fraction": p.get("good_fraction"), "error_rate": p.get("error_rate"),
                     **{f"missed_{k}": v for k, v in (p.get("missed") or {}).items()}})
    return rows


@styled
def capacity_chart(searches: Sequence[tuple[str, dict[str, Any]]], where: str,
                   colors: dict[str, str] | None = None, predicted: dict[str, int] | None = None) -> Chart:
    """``searches``: (run name, its ``capacity`` dict) for each capacity run; ``predicted``: run name -> sizing's
    predicted capacity for it (a dotted line)."""
    predicted = predicted or {}
    colors = colors or style.run_colors(name for name, _ in searches)
    fig, axes = style.new_figure(1, 2, width=10.5, height=4.6)
    left, right = axes[0]
    rows: list[dict[str, Any]] = []
    loads: list[float] = []
    unit = "concurrency (requests in flight)"
    thresholds = set()
    for name, found in searches:
        color = colors.get(name, "#333333")
        if name in predicted:
            left.axvline(predicted[name], color=color, linewidth=1.2, linestyle=":", alpha=0.9)
            left.annotate(f"sizing predicts {predicted[name]}", xy=(predicted[name], 50), xytext=(-12, 0),
                          textcoords="offset points", fontsize=8, color=color, rotation=90, va="center")
            loads.append(predicted[name])
            rows.append({"run": name, "level": None, "load": predicted[name], "passed": None,
                         "good_fraction": None, "source": "sizing"})
        part = pd.DataFrame(capacity_rows(name, found))
        if not part.empty:  # a level cut short (or that measured nothing) was not judged: no point for it
            part = part[part["passed"].notna()]
        if part.empty:
            continue
        rows += part.to_dict("records")
        loads += list(part["load"])
        if found.get("by") == "rate":
            unit = "request rate (requests/s)"
        good = part["good_fraction"].astype(float) * 100
        left.plot(part["load"], good, color=color, linewidth=1.2, alpha=0.7)
        passed = part["passed"].astype(bool)
        left.plot(part["load"][passed], good[passed], linestyle="none", marker="o", color=color, markersize=7)
        left.plot(part["load"][~passed], good[~passed], linestyle="none", marker="o", markerfacecolor="white",
                  markeredgecolor=color, markersize=7)
        goodput_min = (found.get("criteria") or {}).get("goodput_min")
        if goodput_min is not None:
            thresholds.add(goodput_min * 100)
        best = found.get("max_load")
        if best is not None:
            left.axvline(best, color=color, linewidth=1, linestyle="--", alpha=0.8)
            left.annotate(f"capacity {style.plain_number(best)}", xy=(best, 2), xytext=(4, 0),
                          textcoords="offset points", fontsize=8, color=color, rotation=90, va="bottom")
        for col in [c for c in part.columns if c.startswith("missed_")]:
            objective = col[len("missed_"):]
            right.plot(part["load"], part[col].astype(float) * 100, color=color,
                       linestyle=OBJECTIVE_STYLES.get(objective, "-"), marker=".", linewidth=1.4)
    for t in sorted(thresholds):
        left.axhline(t, color=SLO_COLOR, linewidth=1.1, alpha=0.8)
        left.annotate(f"pass: >= {style.plain_number(t)}%", xy=(0.0, t), xycoords=("axes fraction", "data"),
                      xytext=(3, -10), textcoords="offset points", fontsize=7, color=SLO_COLOR)
    for ax in (left, right):
        style.level_axis(ax, loads, unit)
        ax.set_ylim(-2, 102)
    left.set_ylabel("requests meeting every objective (%)")
    left.set_title("met the SLO: filled = pass, hollow = fail")
    right.set_ylabel("successful requests over the threshold (%)")
    right.set_title("which objective gives way")
    if not rows:
        style.no_data(left, "no capacity search in these runs")
    style.title(fig, "Capacity search", where)
    handles = [Line2D([], [], color=colors.get(name, "#333333"), marker="o") for name, _ in searches]
    labels = [f"{name}: {_answer(found)}" for name, found in searches]
    style.legend_below(fig, handles, labels)
    objectives = sorted({c[len("missed_"):] for r in rows for c in r if c.startswith("missed_")})
    if objectives:
        style.legend_right(fig, [Line2D([], [], color="#333333", linestyle=OBJECTIVE_STYLES.get(o, "-"))
                                 for o in objectives], objectives, title="objective")
    caption = ("Each level the search measured, by load." + (" Dotted: the capacity sizing predicts for the same "
               "deployment and objectives (mean TTFT/TPOT; bench judges --goodput-min of the requests)."
               if predicted else "") + " Left: the share of its requests that succeeded and met "
               "every objective; a level passes at or above the line (--goodput-min) with errors under "
               "--max-error-rate; the dashed vertical line is the answer, the highest pass below every failure. "
               "Right: per objective, the share of successful requests over its threshold — the first to rise "
               "is what limits the deployment. docs/capacity.md says how the search chooses.")
    return Chart("capacity", fig, pd.DataFrame(rows), caption)


def _answer(found: dict[str, Any]) -> str:
    best = found.get("max_load")
    unit = found.get("unit", "")
    provisional = "" if found.get("complete", True) else " (provisional: the search did not finish)"
    if best is None:
        return "no load met the objectives" + provisional
    return (f"{'at least ' if found.get('limited_by_search_limit') else ''}{style.plain_number(best)} {unit}"
            + provisional)

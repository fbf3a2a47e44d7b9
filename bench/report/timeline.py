"""Telemetry over time for one run: GPU memory and utilisation, host RAM, the server's RES and the KV cache,
with each load level shaded and the requests in flight on a second axis (samples.csv, docs/telemetry.md).

Only the panels whose columns hold a value are drawn (no GPU, no panel); `Chart.notes` names the ones left out.
"""
from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from bench.telemetry.summary import gpu_indices

from . import style
from .style import GB, Chart, styled

IN_FLIGHT_COLOR = "#888888"
PHASE_SHADES = ("#EDEDED", "#F8F8F8")


def _panels(samples: pd.DataFrame) -> list[tuple[str, str, list[tuple[str, str, float]]]]:
    """(title, y label, [(column, series label, divisor)]) for every panel the samples can fill."""
    gpus = gpu_indices(samples.columns)
    mem = [(f"gpu{i}_mem_used_bytes", f"GPU {i}", GB) for i in gpus]
    if len(gpus) > 1:
        mem.append(("gpu_mem_used_bytes_total", "all GPUs", GB))
    util = [(f"gpu{i}_util_pct", f"GPU {i}", 1.0) for i in gpus]
    return [
        ("GPU memory used", "GB", mem),
        ("GPU utilisation (a kernel was running)", "%", util),
        ("host RAM used", "GB", [("host_ram_used_bytes", "host", GB)]),
        ("server process RES (with its children)", "GB", [("server_res_bytes", "server RES", GB)]),
        ("KV cache usage (server metrics)", "%", [("kv_cache_usage_pct", "KV cache", 1.0)]),
    ]


def _has(samples: pd.DataFrame, column: str) -> bool:
    return column in samples and pd.to_numeric(samples[column], errors="coerce").notna().any()


def _shade_phases(ax, phases: pd.DataFrame) -> None:
    for k, (_, p) in enumerate(phases.iterrows()):
        ax.axvspan(p["start_s"], p["end_s"], color=PHASE_SHADES[k % 2], zorder=0, linewidth=0)
        ax.axvline(p["start_s"], color="#BBBBBB", linewidth=0.6, zorder=0)


def _label_phases(ax, phases: pd.DataFrame) -> None:
    """Each level's label above the top panel; a level too narrow for its label gets it turned upright."""
    if phases.empty:
        return
    span = max(float(phases["end_s"].max() - phases["start_s"].min()), 1e-9)
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for _, p in phases.iterrows():
        narrow = (p["end_s"] - p["start_s"]) / span < 0.08
        ax.text((p["start_s"] + p["end_s"]) / 2, 1.01, str(p["level"]), transform=trans, ha="center", va="bottom",
                fontsize=7, color="#333333", rotation=90 if narrow else 0)


@styled
def timeline_chart(samples: pd.DataFrame, phases: pd.DataFrame, where: str, name: str = "timeline") -> Chart | None:
    """One run's samples (`t_s` in seconds from its start) and its level windows (`start_s`, `end_s`, `level`);
    None when no panel has data."""
    panels = [(t, u, [s for s in series if _has(samples, s[0])]) for t, u, series in _panels(samples)]
    drawn = [p for p in panels if p[2]]
    missing = [t for t, _, s in panels if not s]
    if samples.empty or not drawn:
        return None
    fig, axes = style.new_figure(len(drawn), 1, width=10.0, height=1.75 * len(drawn) + 1.6, sharex=True)
    rows = []
    in_flight = pd.to_numeric(samples.get("in_flight"), errors="coerce") if "in_flight" in samples else None
    t = samples["t_s"]
    for k, (ax, (panel, unit, series)) in enumerate(zip(axes[:, 0], drawn)):
        twin = None
        if in_flight is not None and in_flight.notna().any():
            # the in-flight line and the level shading live on the twin axis, drawn beneath the panel's own data
            twin = ax.twinx()
            twin.step(t, in_flight, where="post", color=IN_FLIGHT_COLOR, linewidth=0.9, alpha=0.9)
            twin.set_ylim(0, max(1.0, float(in_flight.max())) * 1.15)
            twin.set_ylabel("in flight", color=IN_FLIGHT_COLOR, fontsize=8)
            twin.tick_params(axis="y", colors=IN_FLIGHT_COLOR, labelsize=7)
            twin.spines["right"].set_visible(True)
            twin.grid(False)
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
            if k == 0:
                rows += [{"panel": "in_flight", "series": "requests in flight", "column": "in_flight", "t_s": a,
                          "value": b, "unit": "requests"} for a, b in zip(t, in_flight)]
        _shade_phases(twin if twin is not None else ax, phases)
        if k == 0:
            _label_phases(ax, phases)
        for j, (column, label, divisor) in enumerate(series):
            values = pd.to_numeric(samples[column], errors="coerce") / divisor
            color = "#000000" if column.endswith("_total") else style.PALETTE[j % len(style.PALETTE)]
            ax.plot(t, values, color=color, linewidth=1.4, label=label, zorder=3)
            rows += [{"panel": panel, "series": label, "column": column, "t_s": a, "value": b, "unit": unit}
                     for a, b in zip(t, values)]
        if len(series) > 1:
            ax.legend(loc="upper left", fontsize=7, frameon=True, framealpha=0.8, ncols=min(len(series), 8))
        ax.set_ylabel(unit)
        ax.set_title(panel, loc="left", fontsize=9, pad=14 if k == 0 else 4)
        high = ax.get_ylim()[1]
        ax.set_ylim(0, high * (1.25 if len(series) > 1 else 1.08) if high > 0 else 1)
        if unit == "%":
            ax.set_ylim(0, 105 if len(series) == 1 else 125)
    axes[-1, 0].set_xlabel("time since the run started (s)")
    style.title(fig, "GPU, host and server memory over time, levels shaded", where)
    handles = [Patch(color=PHASE_SHADES[0], label="a load level (labelled on top)"),
               Line2D([], [], color=IN_FLIGHT_COLOR, label="requests in flight (right axis)")]
    style.legend_below(fig, handles, [h.get_label() for h in handles])
    notes = [f"not in this run's telemetry: {', '.join(missing)}"] if missing else []
    caption = ("Shaded bands are the load levels; the grey step line is the requests in flight. Memory that keeps "
               "rising across levels is the KV cache or a leak; a flat GPU memory line is vLLM's pre-allocation.")
    return Chart(name, fig, pd.DataFrame(rows), caption, notes)

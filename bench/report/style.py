"""The one look of every gpucap figure (`bench report`, the notebooks, and `sizing` charts).

Figures are plain `matplotlib.figure.Figure` objects drawn on the headless Agg canvas: pyplot is never imported, so
no global backend is switched, no window can open, and nothing piles up in pyplot's figure registry. A chart
function takes plain data and returns a :class:`Chart` (the figure plus the exact table it plotted); saving is the
caller's business (:func:`save`).

The look: one colour per run (colour-blind-safe Okabe-Ito order), a title that says what is shown and where it
was measured, units on every axis, legends below the axes (never over the data), and a constrained layout so
labels do not overlap.
"""
from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

GB = 1e9  # bytes in a GB, as the console prints them

# Okabe & Ito (2008), colour-blind safe, with their yellow (unreadable on white) swapped for Tol's wine; black last.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#882255", "#000000")
PERCENTILE_STYLES: dict[str, str] = {"p50": "-", "p90": "--", "p99": ":"}
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
PREDICTED_COLOR = "#555555"
DPI = 110
P = ParamSpec("P")
R = TypeVar("R")

RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    "svg.fonttype": "none",
}


@dataclass
class Chart:
    """A drawn figure and the data behind it: `data` holds exactly the plotted points (tidy, one row per point)."""

    name: str                       # file stem: throughput, latency, ...
    figure: Figure
    data: pd.DataFrame
    caption: str = ""               # one sentence: how to read it
    notes: list[str] = field(default_factory=list)

    def png_bytes(self) -> bytes:
        return png_bytes(self.figure)

    def __repr__(self) -> str:
        return f"<Chart {self.name}: {self.figure.get_suptitle().splitlines()[0] if self.figure.get_suptitle() else ''}>"

    def _repr_png_(self) -> bytes:  # Jupyter shows a Chart as its picture
        return self.png_bytes()


def styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Run a chart function under the house rcParams (fonts, grid, spines): matplotlib reads them as each artist is
    created, so the whole drawing, not only the figure's creation, happens inside the context."""
    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)
    return wrapper


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 10.0, height: float = 4.2, sharex: bool | str = False,
               sharey: bool | str = False) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure on the Agg canvas and its 2-D array of axes (call inside a `styled` function)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    return fig, axes


def run_colors(names: Iterable[str]) -> dict[str, str]:
    """A fixed colour per run name, in order of first appearance (the same run keeps its colour in every chart)."""
    out: dict[str, str] = {}
    for name in names:
        if name not in out:
            out[name] = PALETTE[len(out) % len(PALETTE)]
    return out


def series_styles(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Line styles for many series: the palette's colours, then again dashed, then dotted (24 distinct)."""
    out: dict[str, dict[str, str]] = {}
    for name in names:
        if name not in out:
            k = len(out)
            out[name] = {"color": PALETTE[k % len(PALETTE)], "linestyle": ("-", "--", ":")[(k // len(PALETTE)) % 3]}
    return out


def title(fig: Figure, what: str, where: str) -> None:
    """The figure title: what is shown, then (smaller, on its own line) where it was measured."""
    fig.suptitle(f"{what}\n{where}", fontsize=RC["figure.titlesize"])


def legend_below(fig: Figure, handles: Sequence, labels: Sequence[str], *, title: str | None = None,
                 ncols: int | None = None) -> None:
    """A figure legend under the axes, so it never covers data; long labels get one column each."""
    if not handles:
        return
    if ncols is None:
        longest = max(len(label) for label in labels)
        ncols = max(1, min(len(labels), int(110 // max(longest + 6, 1))))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False, title=title,
               fontsize=RC["legend.fontsize"], title_fontsize=RC["legend.fontsize"])


def legend_right(fig: Figure, handles: Sequence, labels: Sequence[str], *, title: str | None = None) -> None:
    """A small key (line styles, markers) to the right of the axes, beside a `legend_below` of the runs."""
    if handles:
        fig.legend(handles, labels, loc="outside right upper", ncols=1, frameon=False, title=title,
                   fontsize=RC["legend.fontsize"], title_fontsize=RC["legend.fontsize"])


def level_axis(ax, values: Iterable[float], label: str) -> None:
    """An x axis for load levels (concurrency or request rate): log-scaled when they span 8x or more, with a tick
    at every measured level and plain-number tick labels."""
    vals = sorted({float(v) for v in values if v is not None and v > 0})
    ax.set_xlabel(label)
    if not vals:
        return
    if vals[-1] / vals[0] >= 8:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        pad = (vals[-1] / vals[0]) ** 0.06
        ax.set_xlim(vals[0] / pad, vals[-1] * pad)
    elif len(vals) == 1:
        ax.set_xlim(vals[0] * 0.5, vals[0] * 1.5)
    log = ax.get_xscale() == "log"
    ticks = _spaced(vals, log)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))


def _spaced(vals: list[float], log: bool, most: int = 12) -> list[float]:
    """The tick values to label: at most `most`, none closer to the previous than 1/12 of the axis (so labels
    never overlap); the largest is always kept."""
    pos = [np.log10(v) for v in vals] if log else list(vals)
    gap = (pos[-1] - pos[0]) / most if len(pos) > 1 else 0.0
    kept: list[int] = []
    for i in range(len(vals)):
        if not kept or pos[i] - pos[kept[-1]] >= gap:
            kept.append(i)
    if kept[-1] != len(vals) - 1:
        if len(kept) > 1 and pos[-1] - pos[kept[-1]] < gap:
            kept.pop()
        kept.append(len(vals) - 1)
    return [vals[i] for i in kept]


def log_if_wide(ax, values: Iterable[float], axis: str = "y", ratio: float = 30.0) -> bool:
    """Switch an axis to log scale when the positive values span more than `ratio`; returns whether it did."""
    vals = [float(v) for v in values if v is not None and v > 0]
    if vals and max(vals) / min(vals) > ratio:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        plain_log_labels(ax.yaxis if axis == "y" else ax.xaxis)
        return True
    return False


def plain_log_labels(axis) -> None:
    """Log-axis tick labels as plain numbers (100, 1,000; 20, 50 between decades) instead of 10^2."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: plain_number(v) if f"{v:.0e}"[0] in "25" else ""))


def plain_number(value: float) -> str:
    """1 -> '1', 2.5 -> '2.5', 1000 -> '1,000', 0.25 -> '0.25'."""
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.3g}"


def no_data(ax, message: str) -> None:
    """Mark an axis that has nothing to show with one sentence instead of leaving it blank."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#555555",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def png_base64(fig: Figure) -> str:
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def save(chart: Chart, out_dir: Path, formats: Sequence[str] = ("png", "svg")) -> dict[str, Path]:
    """Write the chart as `<out_dir>/<name>.<fmt>` for each format; returns {format: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        path = out_dir / f"{chart.name}.{fmt}"
        chart.figure.savefig(path, format=fmt, dpi=DPI)
        paths[fmt] = path
    return paths


def save_all(charts: Iterable[Chart], out_dir: Path | str | None, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Save every chart into out_dir (nothing when out_dir is None); returns the files written."""
    if out_dir is None:
        return []
    return [path for chart in charts for path in save(chart, Path(out_dir), formats).values()]

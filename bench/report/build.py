"""`make_report`: run folders in, figures (PNG and SVG) and one self-contained HTML page out.

    from bench.report import make_report
    html = make_report([Path("results/example-sim")], Path("/tmp/report"))

The figures: throughput.png, latency.png, latency_cdf.png, pareto.png (when more than one level is compared),
capacity.png (for `bench capacity` runs), timeline.png (one run) or timeline_<k>.png (one per run, k = 1, 2, ... in the order given). `build_report` is the
same without writing anything, for the notebook.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import style
from .capacity_chart import capacity_chart
from .charts import latency_chart, pareto_chart, throughput_chart
from .distributions import latency_cdf_chart
from .load import RunData, load_runs, where
from .predict import Prediction, SizingTarget, predict
from .style import Chart
from .tables import field_table, levels_table, phases_table, requests_table, runs_table, samples_table
from .timeline import timeline_chart

HTML_NAME = "report.html"


@dataclass
class Report:
    runs: list[RunData]
    levels: pd.DataFrame
    requests: pd.DataFrame
    samples: pd.DataFrame
    phases: pd.DataFrame
    charts: list[Chart]
    predictions: list[Prediction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def field(self) -> pd.DataFrame:
        return field_table(self.levels)

    @property
    def runs_table(self) -> pd.DataFrame:
        return runs_table(self.runs)

    def chart(self, name: str) -> Chart | None:
        """The chart of that name (throughput, latency, latency_cdf, pareto, timeline...), None if not drawn."""
        return next((c for c in self.charts if c.name == name), None)

    @property
    def timelines(self) -> list[Chart]:
        return [c for c in self.charts if c.name.startswith("timeline")]


def level_order(levels: pd.DataFrame) -> list[str]:
    """Level labels ordered by load (the shared marker index)."""
    firsts = levels.drop_duplicates("level").sort_values(["level_marker"])
    return [str(lv) for lv in firsts["level"]]


def predictions_for(runs: Sequence[RunData], sizing: SizingTarget | None) -> tuple[list[Prediction], list[str]]:
    preds, notes = [], []
    for run in runs:
        pred, note = predict(run, sizing)
        if pred is not None:
            preds.append(pred)
            notes.append(f"{run.name}: {pred.description}")
        elif note:
            notes.append(note)
    return preds, notes


def build_report(runs: Sequence[RunData], *, overlay_sizing: bool = True,
                 sizing: SizingTarget | None = None) -> Report:
    """Every table and chart of a report, in memory."""
    runs = list(runs)
    levels = levels_table(runs)
    requests = requests_table(runs)
    samples = samples_table(runs)
    phases = phases_table(runs)
    colors = style.run_colors(r.name for r in runs)
    place = where(runs)
    notes = [f"{r.name}: summary.json was missing; re-derived from requests.jsonl" for r in runs if r.summary_rederived]
    predictions: list[Prediction] = []
    if overlay_sizing:
        predictions, sizing_notes = predictions_for(runs, sizing)
        notes += sizing_notes
    charts = [throughput_chart(levels, place, predictions, colors),
              latency_chart(levels, place, {r.name: r.slo for r in runs if r.slo}, colors)]
    if not requests.empty:
        charts.append(latency_cdf_chart(requests, level_order(levels), place, colors))
    else:
        notes.append("no requests.jsonl in any run: no latency distributions")
    if len(levels) > 1:
        charts.append(pareto_chart(levels, place, colors))
    searches = [(r.name, r.capacity) for r in runs if r.capacity]
    if searches:
        charts.append(capacity_chart(searches, place, colors,
                                     {p.run: p.capacity for p in predictions if p.capacity is not None}))
    for k, run in enumerate(runs, start=1):
        name = "timeline" if len(runs) == 1 else f"timeline_{k}"
        chart = timeline_chart(samples[samples["run"] == run.name] if not samples.empty else samples,
                               phases[phases["run"] == run.name], run.name, name)
        if chart is None:
            notes.append(f"{run.name}: no telemetry samples (samples.csv), no timeline")
            continue
        notes += [f"{run.name}: {n}" for n in chart.notes]
        charts.append(chart)
    return Report(runs=runs, levels=levels, requests=requests, samples=samples, phases=phases, charts=charts,
                  predictions=predictions, notes=notes)


def default_out_dir(run_dirs: Sequence[Path]) -> Path:
    """One run: <RUN_DIR>/report; several: report-<name of each>/ beside the first (the name says what)."""
    run_dirs = [Path(p) for p in run_dirs]
    if len(run_dirs) == 1:
        return run_dirs[0] / "report"
    name = "compare-" + "-vs-".join(p.resolve().name for p in run_dirs)
    return run_dirs[0].resolve().parent / name[:120]


def write_report(report: Report, out_dir: Path, formats: Sequence[str] = ("png", "svg")) -> Path:
    """Write every figure (PNG always, plus `formats`), the field table as CSV, and report.html into out_dir;
    returns the HTML's path."""
    from .html import render_html
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {}
    for chart in report.charts:
        paths = style.save(chart, out_dir, tuple(dict.fromkeys(("png", *formats))))
        pngs[chart.name] = paths["png"].read_bytes()  # drawn once, embedded as written
    report.field.to_csv(out_dir / "field_table.csv", index=False)
    path = out_dir / HTML_NAME
    path.write_text(render_html(report, pngs), encoding="utf-8")
    return path


def make_report(run_dirs: list[Path], out_dir: Path, *, overlay_sizing: bool = True,
                sizing: SizingTarget | None = None, formats: Sequence[str] = ("png", "svg")) -> Path:
    """Load the runs, draw every chart, write PNG/SVG figures and report.html into out_dir; returns the HTML path.

    NotARunError (one sentence naming the folder) when a folder is not a run; OSError when out_dir cannot be
    written."""
    report = build_report(load_runs(run_dirs), overlay_sizing=overlay_sizing, sizing=sizing)
    try:
        return write_report(report, Path(out_dir), formats)
    finally:
        for chart in report.charts:
            chart.figure.clear()

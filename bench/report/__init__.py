"""Reports: plots, run comparison and the HTML page, from run folders (`bench report`, `bench run --report`).

    from bench.report import make_report, load_runs, build_report
    make_report([Path("results/example-sim")], Path("/tmp/report"))   # -> /tmp/report/report.html

Layout: `style` (the one look, shared with sizing figures), `load` (run folders, run names), `tables` (tidy pandas
tables), `charts` / `distributions` / `timeline` (pure chart functions: data in, `Chart` out), `predict` (the
sizing overlay), `sizing_charts` (the sizing explorer's tables and charts), `html` (the page), `build`
(`make_report`), `cli` (`bench report`).
"""
from __future__ import annotations

from .build import Report, build_report, default_out_dir, make_report
from .cli import add_arguments, main
from .load import NotARunError, RunData, load_run, load_runs
from .predict import SizingTarget
from .style import Chart

__all__ = ["Chart", "NotARunError", "Report", "RunData", "SizingTarget", "add_arguments", "build_report",
           "default_out_dir", "load_run", "load_runs", "main", "make_report"]

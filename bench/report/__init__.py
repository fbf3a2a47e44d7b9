"""Reports: plots, run comparison and the HTML page, from run folders (`bench report`, `bench run --report`).

    from bench.report import make_report, load_runs, build_report
    make_report([Path("results/example-sim")], Path("/tmp/report"))   # -> /tmp/report/report.html

Layout: `style` (the one look, shared with sizing figures), `load` (run folders, run names), `tables` (tidy pandas
tables), `charts` / `distributions` / `timeline` (pure chart functions: data in, `Chart` out), `predict` (the
sizing overlay), `sizing_charts` (the sizing explorer's tables and charts), `html` (the page), `build`
(`make_report`), `cli` (`bench report`).

Importing this package is cheap: matplotlib and pandas load when a report function is first used, so `bench --help`
does not pay for them.
"""
from __future__ import annotations

import importlib
from typing import Any

from .cli import add_arguments, main

_LAZY = {"Report": "build", "build_report": "build", "default_out_dir": "build", "make_report": "build",
         "NotARunError": "load", "RunData": "load", "load_run": "load", "load_runs": "load",
         "SizingTarget": "predict", "Chart": "style"}

__all__ = ["Chart", "NotARunError", "Report", "RunData", "SizingTarget", "add_arguments", "build_report",
           "default_out_dir", "load_run", "load_runs", "main", "make_report"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

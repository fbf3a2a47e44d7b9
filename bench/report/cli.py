"""`bench report RUN_DIR [RUN_DIR ...] [--out DIR]`: the figures and the HTML page of one run or several side by side.

A folder that is not a run is one sentence naming it, exit 2; an --out that cannot be written, exit 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2


def _count(text: str) -> int:
    from ..cli import int_at_least
    return int_at_least(1, "GPUs")(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run folders written by `bench run` (several: compared side by side)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where the figures and report.html go (default: RUN_DIR/report for one run, "
                             "compare-<names> beside the first run for several)")
    parser.add_argument("--no-sizing", action="store_true",
                        help="do not overlay the sizing prediction on the measured throughput")
    parser.add_argument("--sizing-model", default=None, metavar="MODEL",
                        help="model to size for the overlay (default: the run's model), e.g. qwen2.5-7b-instruct")
    parser.add_argument("--sizing-gpu", default=None, metavar="GPU",
                        help="card to size on (default: from the run's --hardware, e.g. '4x V100-32G')")
    parser.add_argument("--sizing-gpus", type=_count, default=None, metavar="N",
                        help="GPU count for the overlay (default: the run's --hardware count, else sizing's minimum)")
    parser.add_argument("--sizing-quant", default=None, metavar="QUANT",
                        help="quantization for the overlay (default: the model's released precision)")
    parser.add_argument("--no-svg", action="store_true", help="write PNG figures only")


def main(args: argparse.Namespace) -> int:
    from .build import build_report, default_out_dir, write_report
    from .load import NotARunError, load_runs
    from .predict import SizingTarget

    try:
        runs = load_runs(args.run_dirs)
    except NotARunError as e:
        print(f"bench report: RUN_DIR {e.path} is not a bench run folder: {e.reason}.", file=sys.stderr)
        return EXIT_USAGE
    sizing = None
    if args.sizing_model or args.sizing_gpu or args.sizing_gpus or args.sizing_quant:
        sizing = SizingTarget(model=args.sizing_model, gpu=args.sizing_gpu, gpus=args.sizing_gpus,
                              quant=args.sizing_quant)
    report = build_report(runs, overlay_sizing=not args.no_sizing, sizing=sizing)
    out_dir = args.out if args.out is not None else default_out_dir(args.run_dirs)
    try:
        path = write_report(report, out_dir, ("png",) if args.no_svg else ("png", "svg"))
    except OSError as e:
        print(f"bench report: cannot write the report into --out {out_dir}: {e.strerror or e}.", file=sys.stderr)
        return 1
    finally:
        for chart in report.charts:
            chart.figure.clear()
    for note in report.notes:
        print(f"note: {note}")
    print(f"Report: {path} ({len(report.charts)} figures in {path.parent})")
    return 0

"""`sizing calibrate`'s workflow: run folders -> the measured deployment -> the fit -> the calibration profile.

    request = CalibrateRequest(run_dirs=("results/x",), fit_on=(1,))
    doc = calibrate_runs(request, created_at="2026-01-01T00:00:00+00:00")   # the profile (a dict), not written

Reads files (the runs, the optional probe profile); writes none and prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sizing.calibrate import calibrate
from sizing.errors import SizingError
from sizing.gpus import resolve_gpu
from sizing.models import resolve_model
from sizing.profile import calibration_profile, ceilings, load_profile
from sizing.quants import quant_support, resolve_quant
from sizing.recommend import default_quant
from sizing.runs import decide_deployment, read_run


@dataclass(frozen=True)
class CalibrateRequest:
    run_dirs: tuple[str, ...]
    fit_on: tuple[int, ...] | None = None          # concurrencies to fit on (None: every level)
    explicit: dict[str, Any] = field(default_factory=dict)   # model, gpu, gpus, quant, engine given as flags
    probe_path: str | None = None                  # a profile holding `sizing probe` measurements of the card


def calibrate_runs(request: CalibrateRequest, created_at: str) -> dict[str, Any]:
    if not request.run_dirs:
        raise SizingError("RUN_DIR", "give at least one RUN_DIR (a folder `bench run` wrote).")
    runs = [read_run(path) for path in request.run_dirs]
    dep = decide_deployment(runs, request.explicit)
    levels = [lv for run in runs for lv in run.levels]
    if not levels:
        why = "; ".join(s for run in runs for s in run.skipped) or "summary.json lists no level"
        raise SizingError("RUN_DIR", f"no level of {', '.join(request.run_dirs)} can be used: {why}.")
    present = sorted({lv.concurrency for lv in levels})
    wanted = set(request.fit_on) if request.fit_on else set(present)
    missing = sorted(wanted - set(present))
    if missing:
        raise SizingError("--on", f"--on {','.join(map(str, missing))}: the runs have levels at concurrency "
                                  f"{', '.join(map(str, present))}.")
    fit_on = {lv.key for lv in levels if lv.concurrency in wanted}
    card, limits = None, {}
    if request.probe_path:
        card = load_profile(request.probe_path, flag="--probe").card
        if not card or not card.get("measured"):
            raise SizingError("--probe", f"--probe {request.probe_path}: that profile holds no probe measurements "
                                         f"(`sizing probe --out {request.probe_path}` adds them).")
        if card.get("gpu") != dep.gpu:
            raise SizingError("--probe", f"--probe {request.probe_path} measured {card.get('name')}, but the runs "
                                         f"are of {dep.gpu}; probe that card.")
        gpu = resolve_gpu(dep.gpu)
        quant = resolve_quant(dep.quant) if dep.quant else default_quant(resolve_model(dep.model), gpu)
        limits = ceilings(card, tuple(dict.fromkeys((quant_support(quant, gpu).compute, gpu.activation_dtype))))
    cal = calibrate(dep, levels, fit_on, ceilings=limits)
    return calibration_profile(cal, runs, card, created_at)

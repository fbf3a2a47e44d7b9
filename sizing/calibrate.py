"""Calibrating sizing on measurements: fit a few speed factors of one engine and card family to measured levels,
and report every level's error before and after.

Fitted (every other factor stays as in efficiency.json):
  from TPOT (any fitted level)                         bw_efficiency, layer_floor_s
  from TTFT (fitted levels at concurrency 1)           compute_efficiency, ttft_overhead_s
minimising, as `sizing.fit` does,
  sum over fitted levels of log(pred_tpot / tpot)^2 + log(pred_ttft / ttft)^2 (concurrency 1 only)
  + 0.01 x sum over fitted factors of log(value / before)^2
Each level is predicted by sizing's closed-loop estimate (sizing.serving.estimate) at the concurrency its measured
requests saw (requests in flight while they decoded, from requests.jsonl: a level ramps up and drains, so a level
of 100 sees fewer), with its measured mean prompt and output lengths, on the deployment's layout.
TTFT above concurrency 1 is predicted and reported but not fitted: bench starts a level's workers together, so those first tokens wait behind a burst of
prefills that sizing's steady-state TTFT does not model.
A card's measured ceiling (`sizing probe`) bounds the efficiencies: bw_efficiency <= measured / datasheet bandwidth,
compute_efficiency <= measured / datasheet matmul rate.
Pure: takes values, returns values; no files, no printing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

import numpy as np

from sizing.errors import SizingError
from sizing.factors import Factors, FactorTable, load_factor_table
from sizing.fit import BOUNDS, REGULARIZATION, nelder_mead
from sizing.gpus import resolve_gpu
from sizing.layout import Layout
from sizing.models import resolve_model
from sizing.plan import Evaluation, evaluate
from sizing.recommend import Request, build_plan
from sizing.runs import Deployment, MeasuredLevel
from sizing.serving import estimate

TPOT_FACTORS = ("bw_efficiency", "layer_floor_s")
TTFT_FACTORS = ("compute_efficiency", "ttft_overhead_s")


@dataclass(frozen=True)
class Predicted:
    tpot_s: float
    ttft_s: float


def relative_error(predicted: float | None, measured: float | None) -> float | None:
    """predicted / measured - 1 (+0.10: the model says 10% more time than was measured); None when either is."""
    if predicted is None or measured is None or measured <= 0:
        return None
    return predicted / measured - 1.0


@dataclass(frozen=True)
class LevelFit:
    level: MeasuredLevel
    fitted: bool                 # used in the fit (else: predicted)
    before: Predicted
    after: Predicted

    def error(self, metric: str, which: str) -> float | None:
        """metric 'tpot' | 'ttft', which 'before' | 'after'."""
        measured = getattr(self.level, f"{metric}_s")
        return relative_error(getattr(getattr(self, which), f"{metric}_s"), measured)


@dataclass(frozen=True)
class Calibration:
    deployment: Deployment
    engine: str                  # the factor group's engine key (efficiency.json)
    family: str                  # the card family the factors apply to
    layout: Layout
    quant: str                   # the quantization sizing evaluated (the released precision when none was named)
    before: Factors
    after: Factors
    fitted: tuple[str, ...]      # factor names the fit changed
    ceilings: dict[str, float]   # upper bounds from the probe
    levels: tuple[LevelFit, ...]

    def median_abs_error(self, metric: str, which: str, fitted: bool = False) -> float | None:
        """Median |error| over the predicted levels (fitted=False) or the fitted ones."""
        errors = [abs(e) for lf in self.levels if lf.fitted == fitted
                  if (e := lf.error(metric, which)) is not None]
        return statistics.median(errors) if errors else None


def deployment_evaluation(dep: Deployment, input_len: int, output_len: int,
                          table: FactorTable | None = None) -> Evaluation:
    """sizing's evaluation of the measured deployment for requests of this shape (the server's layout when known)."""
    table = table or load_factor_table()
    entry, card = resolve_model(dep.model), resolve_gpu(dep.gpu)
    request = Request(model=dep.model, gpu=card.key, quant=dep.quant, gpus=dep.gpus, input_len=input_len,
                      output_len=output_len, concurrency=(1,), engine=dep.engine, alternatives=False)
    ev = build_plan(entry, card, request, table).evaluation
    if dep.layout:
        layout = Layout(tp=dep.layout["tp"], pp=dep.layout["pp"], dp=dep.layout["dp"],
                        ep=dep.layout["tp"] if ev.setup.arch.is_moe else 1)
        if layout != ev.layout:
            ev = evaluate(ev.setup, ev.workload, layout)
    if not ev.runs:
        raise SizingError("--gpus", f"sizing says {dep.model} ({ev.setup.quant.key}) cannot run on {dep.gpus} x "
                                    f"{dep.gpu}: {ev.reason}; check --gpus and --quant.")
    return ev


def predict(ev: Evaluation, factors: Factors, concurrency: int) -> Predicted:
    """TPOT and TTFT sizing predicts at `concurrency` with these factors (the evaluation fixes layout and memory)."""
    perf = replace(ev.perf, factors=factors)
    e = estimate(perf, concurrency, ev.max_running, ev.workload.input_len, ev.workload.output_len, None)
    return Predicted(tpot_s=e.tpot_s, ttft_s=e.ttft_s)


def _shape(level: MeasuredLevel) -> tuple[int, int]:
    return max(1, round(level.input_tokens)), max(1, round(level.output_tokens))


def free_factors(fit_levels: list[MeasuredLevel]) -> tuple[str, ...]:
    """What the chosen levels can constrain: TPOT -> bandwidth and per-layer cost; idle TTFT -> compute, overhead."""
    free: tuple[str, ...] = ()
    if any(lv.tpot_s for lv in fit_levels):
        free += TPOT_FACTORS
    if any(lv.ttft_s and lv.concurrency == 1 for lv in fit_levels):
        free += TTFT_FACTORS
    return free


def fit_factors(before: Factors, free: tuple[str, ...], residuals, ceilings: dict[str, float]) -> Factors:
    """Nelder-Mead in log space on `residuals(factors) -> list of log errors`, pulled towards `before`."""
    bounds = {n: (BOUNDS[n][0], min(BOUNDS[n][1], ceilings.get(n, math.inf))) for n in free}
    prior = np.log([getattr(before, n) for n in free])
    start = np.log([min(max(getattr(before, n), bounds[n][0]), bounds[n][1]) for n in free])

    def factors_of(x: np.ndarray) -> Factors:
        return before.with_values(**{n: min(max(math.exp(v), bounds[n][0]), bounds[n][1]) for n, v in zip(free, x)})

    def objective(x: np.ndarray) -> float:
        return float(sum(r * r for r in residuals(factors_of(x))) + REGULARIZATION * np.sum((x - prior) ** 2))

    return factors_of(nelder_mead(objective, start))


def calibrate(dep: Deployment, levels: list[MeasuredLevel], fit_on: set[tuple[str, int]],
              table: FactorTable | None = None, ceilings: dict[str, float] | None = None) -> Calibration:
    """Fit the factors of `dep`'s engine and card family on the levels whose key is in `fit_on`; predict them all."""
    table = table or load_factor_table()
    ceilings = dict(ceilings or {})
    evaluations = {shape: deployment_evaluation(dep, *shape, table) for shape in sorted({_shape(lv) for lv in levels})}
    some = next(iter(evaluations.values()))
    before = some.setup.factors
    fit_levels = [lv for lv in levels if lv.key in fit_on]
    free = free_factors(fit_levels)
    if not free:
        raise SizingError("--on", "--on: the chosen levels measured neither TPOT nor TTFT at concurrency 1; "
                                  "nothing to fit.")

    def residuals(factors: Factors) -> list[float]:
        out = []
        for lv in fit_levels:
            p = predict(evaluations[_shape(lv)], factors, lv.model_concurrency)
            if lv.tpot_s:
                out.append(math.log(p.tpot_s / lv.tpot_s))
            if lv.ttft_s and lv.concurrency == 1:
                out.append(math.log(p.ttft_s / lv.ttft_s))
        return out

    after = fit_factors(before, free, residuals, ceilings)
    fits = tuple(LevelFit(level=lv, fitted=lv.key in fit_on,
                          before=predict(evaluations[_shape(lv)], before, lv.model_concurrency),
                          after=predict(evaluations[_shape(lv)], after, lv.model_concurrency)) for lv in levels)
    return Calibration(deployment=dep, engine=some.setup.engine.factors_key, family=some.setup.gpu.family,
                       layout=some.layout, quant=some.setup.quant.key, before=before, after=after, fitted=free, ceilings=ceilings, levels=fits)

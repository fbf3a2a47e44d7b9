"""The `sizing` prediction for a measured run, to draw over its curves: how far is reality from the plan?

What is sized: the run's model (`run.json` target.model) on its hardware (`run.json` hardware, "4x V100-32G" ->
4 GPUs of the catalog card V100-32G), or what the user names (`--sizing-model/--sizing-gpu/--sizing-gpus`).
When either cannot be resolved in the sizing catalogs, there is no overlay and one note says why.

The plan comes from `sizing.api.plan(model, gpu, quant, gpus, input_len=, output_len=)` with the run's mean prompt
and output tokens per successful request; its estimate at each concurrency c is sizing's own
(`Plan.estimate`, the numbers `sizing recommend --concurrency` prints). Two curves are drawn:

- aggregate output tokens/s = sizing's `output_tokens_per_s` (running requests / TPOT);
- per-request output tokens/s, put on the measured definition `N / E2E` (docs/metrics.md):
  `N / (ttft_s + (N - 1) * tpot_s)` with N the mean output tokens, sizing's TTFT (queueing included) and TPOT.
  (sizing's own `per_request_output_tokens_per_s` is `1 / tpot_s`, the decode rate, which ignores the TTFT that a
  measured N / E2E includes.)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .load import RunData

HARDWARE = re.compile(r"^\s*(?:(\d+)\s*[x×*]\s*)?(.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class SizingTarget:
    """What to size: a sizing model name, a sizing GPU name, the GPU count (None: sizing's minimum) and the
    quantization (None: the model's released precision). A field left None by the user is taken from run.json."""

    model: str | None = None
    gpu: str | None = None
    gpus: int | None = None
    quant: str | None = None


@dataclass
class Prediction:
    run: str                    # the run's display name
    target: SizingTarget
    description: str            # "sizing: qwen2.5-7b-instruct bf16 on 1x h100-sxm (TP 1)"
    table: pd.DataFrame         # concurrency, per_request_output_tokens_per_s, output_tokens_per_s, ttft_s, tpot_s,
                                # measured_level (True at a concurrency the run measured)
    capacity: int | None = None  # for a `bench capacity` run by concurrency with ttft/tpot objectives: the largest
                                 # concurrency whose predicted (mean) TTFT and TPOT meet them; None: none or not asked


def target_from_run(run: RunData, given: SizingTarget | None = None) -> tuple[SizingTarget | None, str | None]:
    """(target, None), each field from `given` or else from run.json (model; hardware "4x V100-32G" -> 4 x
    V100-32G), or (None, why not). A GPU given without a count means sizing's minimum count."""
    given = given or SizingTarget()
    model = given.model or (run.run.get("target") or {}).get("model")
    gpu, count = given.gpu, given.gpus
    if gpu is None:
        hardware = run.run.get("hardware")
        if not hardware:
            return None, "its run.json names no --hardware (pass --sizing-gpu, and --sizing-gpus)"
        match = HARDWARE.match(str(hardware))
        gpu = match.group(2) if match else str(hardware)
        if count is None and match and match.group(1):
            count = int(match.group(1))
    if not model:
        return None, "its run.json names no model (pass --sizing-model)"
    return SizingTarget(model=str(model), gpu=str(gpu), gpus=count, quant=given.quant), None


def _mean_tokens(run: RunData, key: str) -> float | None:
    """Mean of `key` ('input_tokens'/'output_tokens') over successful requests of all levels, weighted by ok."""
    total = weight = 0.0
    for level in run.levels:
        stats, ok = level.get(key), level.get("ok") or 0
        if stats and stats.get("mean") is not None and ok:
            total += stats["mean"] * ok
            weight += ok
    return total / weight if weight else None


def concurrency_grid(levels: list[int]) -> list[int]:
    """The measured levels plus about 8 points per decade between them, for a smooth predicted line."""
    lo, hi = min(levels), max(levels)
    dense = np.unique(np.round(np.geomspace(lo, hi, max(2, int(8 * math.log10(max(hi / lo, 1.0))) + 1))))
    return sorted({int(v) for v in dense} | set(levels))


def predict(run: RunData, target: SizingTarget | None = None) -> tuple[Prediction | None, str | None]:
    """The sizing prediction at the run's concurrency levels (what `target` leaves None comes from run.json), or
    (None, one sentence saying why there is none)."""
    from sizing.api import SizingError, plan
    levels = [lv.get("concurrency") for lv in run.levels]
    if not levels or any(not isinstance(c, int) or c < 1 for c in levels):
        return None, f"no sizing overlay for {run.name}: sizing predicts closed-loop concurrency levels only"
    emulated = run.run.get("sim") or {}
    if target is None and (run.run.get("target") or {}).get("simulated"):
        if not emulated.get("gpu"):
            return None, (f"no sizing overlay for {run.name}: the simulated endpoint runs no model on a GPU (pass "
                          "--sizing-model and --sizing-gpu to draw a prediction anyway)")
        # `bench run --sim-model M --sim-gpu G`: the emulated deployment is what to predict
        target = SizingTarget(model=emulated.get("model"), gpu=emulated.get("gpu"), gpus=emulated.get("gpus"),
                              quant=emulated.get("quant"))
    target, why = target_from_run(run, target)
    if target is None:
        return None, f"no sizing overlay for {run.name}: {why}"
    input_len, output_len = _mean_tokens(run, "input_tokens"), _mean_tokens(run, "output_tokens")
    if not input_len or not output_len:
        return None, f"no sizing overlay for {run.name}: no successful request reported its token counts"
    try:
        p = plan(target.model, target.gpu, quant=target.quant, gpus=target.gpus, input_len=round(input_len),
                 output_len=max(1, round(output_len)))
    except SizingError as e:
        return None, f"no sizing overlay for {run.name}: {e}"
    ev = p.evaluation
    if p.max_concurrency < 1 or not ev.runs:
        return None, (f"no sizing overlay for {run.name}: sizing says {target.model} does not run on "
                      f"{p.gpus}x {ev.setup.gpu.key} ({p.reason})")
    n = output_len
    rows = []
    for c in concurrency_grid(levels):
        e = p.estimate(c)
        rows.append({"concurrency": c, "output_tokens_per_s": e.output_tokens_per_s,
                     "per_request_output_tokens_per_s": n / (e.ttft_s + (n - 1) * e.tpot_s),
                     "ttft_s": e.ttft_s, "tpot_s": e.tpot_s, "measured_level": c in levels})
    layout = ev.layout
    shape = f"TP {layout.tp}" + (f" PP {layout.pp}" if layout.pp > 1 else "") + (f" DP {layout.dp}" if layout.dp > 1
                                                                                  else "")
    description = (f"sizing: {ev.setup.model.key} {ev.setup.quant.key} on {p.gpus}x {ev.setup.gpu.key} ({shape}), "
                   f"{round(input_len)} in + {round(output_len)} out tokens")
    return Prediction(run=run.name, target=target, description=description, table=pd.DataFrame(rows),
                      capacity=_predicted_capacity(run, p)), None


def _predicted_capacity(run: RunData, p) -> int | None:
    """sizing's largest concurrency meeting the run's ttft/tpot objectives (``sizing recommend --slo``'s answer, on
    mean TTFT and TPOT), for a capacity search by concurrency whose objectives sizing models; else None."""
    spec = run.capacity or {}
    slo = (spec.get("criteria") or {}).get("slo") or {}
    if spec.get("by") != "concurrency" or not slo or set(slo) - {"ttft_ms", "tpot_ms"}:
        return None

    from sizing.serving import max_concurrency_meeting  # the search `sizing recommend --slo` prints
    ev = p.evaluation
    return max_concurrency_meeting(ev.perf, p.max_concurrency, ev.workload.input_len, ev.workload.output_len,
                                   slo_tpot_s=slo["tpot_ms"] / 1e3 if "tpot_ms" in slo else None,
                                   slo_ttft_s=slo["ttft_ms"] / 1e3 if "ttft_ms" in slo else None)

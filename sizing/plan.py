"""Evaluating one deployment: a model, a card, a quantization, an engine and a layout -> memory, speed, fit.

`evaluate()` is the single place where the pieces meet: geometry (what each GPU holds and reads), memory (the
engine's rule), performance (decode step, prefill) and the serving estimates at each concurrency.
`search()` finds the smallest GPU count with a valid layout that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sizing.engines import Engine, Interconnect
from sizing.factors import Factors, FactorTable
from sizing.geometry import Geometry, build_geometry
from sizing.gpus import Gpu
from sizing.layout import Layout, candidate_layouts, layout_problem
from sizing.memory import MemoryBreakdown, memory_per_gpu
from sizing.models import ModelEntry
from sizing.params import ParamCounts, count_params
from sizing.perf import PerfModel, build_perf_model
from sizing.quants import KvDtype, Quant, Support, quant_support
from sizing.serving import Estimate, estimate, max_concurrency_meeting

MAX_GPUS = 1024


@dataclass(frozen=True)
class Workload:
    context_tokens: int                 # max model length the engine is started with
    input_len: int = 1024
    output_len: int = 512
    concurrency: tuple[int, ...] = (1, 10, 100)
    slo_tpot_s: float | None = None
    slo_ttft_s: float | None = None

    @property
    def request_tokens(self) -> int:
        return self.input_len + self.output_len

    @property
    def target_tokens(self) -> int:
        """KV tokens the target needs: the largest concurrency x (input + output), and one full context."""
        return max(max(self.concurrency) * self.request_tokens, self.context_tokens)


@dataclass(frozen=True)
class Setup:
    """Everything fixed before the layout is chosen."""

    model: ModelEntry
    gpu: Gpu
    quant: Quant
    kv_dtype: KvDtype
    engine: Engine
    factors: Factors
    interconnects: dict[str, Interconnect]
    memory_fraction: float | None = None
    max_num_seqs: int | None = None

    @property
    def kv_value_bytes(self) -> float:
        return self.kv_dtype.value_bytes()

    @property
    def arch(self):
        """The architecture of the checkpoint this quantization is served from."""
        return self.model.arch_for(self.quant.key)


@dataclass(frozen=True)
class Evaluation:
    setup: Setup
    workload: Workload
    layout: Layout
    support: Support
    params: ParamCounts
    geometry: Geometry
    memory: MemoryBreakdown
    perf: PerfModel
    max_running: int
    estimates: tuple[Estimate, ...]
    slo_max_concurrency: int | None
    price_per_hour_usd: float | None
    fits: bool
    reason: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return self.layout.gpus

    @property
    def runs(self) -> bool:
        """The engine starts (weights fit, one full-context sequence fits) even if the target concurrency does not
        fit at once: the estimates then include queueing."""
        return self.max_running > 0


def factors_for(table: FactorTable, engine: Engine, gpu: Gpu) -> Factors:
    return table.lookup(engine.factors_key, gpu.family)


def evaluate(setup: Setup, workload: Workload, layout: Layout) -> Evaluation:
    """Memory, speed and fit of `setup` on `layout`."""
    arch = setup.arch
    params = count_params(arch)
    support = quant_support(setup.quant, setup.gpu)
    geometry = build_geometry(arch, params, setup.quant, setup.kv_value_bytes, layout)
    memory = memory_per_gpu(geometry, setup.engine, setup.gpu, layout.tp, arch.vocab_size, workload.input_len,
                            workload.target_tokens, workload.context_tokens, setup.memory_fraction, layout.dp,
                            setup.max_num_seqs)
    perf = build_perf_model(geometry, setup.gpu, layout, support, setup.factors, setup.engine.pipeline_overlap,
                            setup.interconnects)
    engine_limit = (setup.max_num_seqs or setup.engine.max_num_seqs(setup.gpu)) * layout.dp
    kv_limit = memory.kv_capacity_tokens // workload.request_tokens
    max_running = max(1, min(engine_limit, kv_limit))
    price = None if setup.gpu.price_per_hour_usd is None else setup.gpu.price_per_hour_usd * layout.gpus
    estimates = tuple(estimate(perf, c, max_running, workload.input_len, workload.output_len, price)
                      for c in workload.concurrency)
    slo = None
    if workload.slo_tpot_s is not None or workload.slo_ttft_s is not None:
        slo = max_concurrency_meeting(perf, max_running, workload.input_len, workload.output_len,
                                      workload.slo_tpot_s, workload.slo_ttft_s)
    problem = layout_problem(arch, setup.quant, setup.gpu, setup.engine, layout)
    fits = support.ok and problem is None and memory.fits
    runs = support.ok and problem is None and memory.starts
    reason = "" if fits else (support.reason if not support.ok else problem or memory.reason)
    return Evaluation(setup=setup, workload=workload, layout=layout, support=support, params=params,
                      geometry=geometry, memory=memory, perf=perf, max_running=max_running if runs else 0,
                      estimates=estimates, slo_max_concurrency=slo, price_per_hour_usd=price, fits=fits, reason=reason)


def _lower_bound_gpus(setup: Setup) -> int:
    """No fewer GPUs than total weights / usable memory per card."""
    arch = setup.arch
    one = build_geometry(arch, count_params(arch), setup.quant, setup.kv_value_bytes, Layout(1, 1))
    fraction = setup.memory_fraction or setup.engine.memory_fraction
    usable = setup.gpu.memory_bytes * fraction
    return max(1, math.floor(one.weight_bytes_per_gpu / usable))


def evaluate_count(setup: Setup, workload: Workload, gpus: int, fastest: bool = False) -> Evaluation | None:
    """The layout for exactly `gpus` GPUs; None when no layout is valid for that count.

    Default: the first fitting layout in preference order (one replica, largest TP). With `fastest` (a count the
    user gave): among all fitting layouts, data-parallel replicas included, the one with the shortest decode step
    at concurrency 1 (then the highest throughput at the largest concurrency), so more GPUs never decode slower."""
    layouts = candidate_layouts(setup.arch, setup.quant, setup.gpu, setup.engine, gpus,
                                replicas=fastest and setup.engine.supports_dp)
    first = None
    fitting: list[Evaluation] = []
    for layout in layouts:
        result = evaluate(setup, workload, layout)
        if result.fits:
            if not fastest:
                return result
            fitting.append(result)
        first = first or result
    if fitting:
        ctx = workload.input_len + workload.output_len / 2
        return min(fitting, key=lambda ev: (round(ev.perf.decode_step_s(1, ctx), 9),
                                            -ev.estimates[-1].output_tokens_per_s))
    return first


def search(setup: Setup, workload: Workload, max_gpus: int = MAX_GPUS) -> Evaluation | None:
    """The smallest GPU count with a valid layout that fits; None when nothing up to `max_gpus` does."""
    if not quant_support(setup.quant, setup.gpu).ok:
        return None
    for gpus in range(_lower_bound_gpus(setup), max_gpus + 1):
        result = evaluate_count(setup, workload, gpus)
        if result is not None and result.fits:
            return result
    return None

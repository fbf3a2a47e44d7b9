"""`sizing recommend`: turn what a person asks (model, card, quantization, context, concurrency) into plans.

`recommend(request)` validates the request (SizingError naming the flag on bad input), then for one card returns
one Plan, and without a card one Plan per card (cheapest deployment first when prices are known).
Without --quant a plan uses the model's released precision (fp16 on cards without bf16) and lists the other
quantizations that fit under `alternatives`. A plan that does not fit says what would (suggestions).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sizing.engines import Engine, load_engines, load_interconnects, resolve_engine
from sizing.errors import SizingError
from sizing.explain import reasoning
from sizing.factors import FactorTable, load_factor_table
from sizing.gpus import Gpu, load_gpus, resolve_gpu
from sizing.launch import launch_command
from sizing.layout import Layout
from sizing.models import ModelEntry, resolve_model
from sizing.plan import (
    MAX_GPUS,
    Evaluation,
    Setup,
    Workload,
    evaluate,
    evaluate_count,
    factors_for,
    search,
)
from sizing.quants import (
    KvDtype,
    Quant,
    applies_to_model,
    kv_support,
    load_quants,
    quant_support,
    resolve_kv_dtype,
    resolve_quant,
)
from sizing.result import Plan
from sizing.serving import break_even

DEFAULT_CONTEXT_TOKENS = 8192


@dataclass(frozen=True)
class Request:
    """What `sizing recommend` was asked, as typed (names are resolved by `recommend`)."""

    model: str
    gpu: str | None = None
    quant: str | None = None
    gpus: int | None = None
    context_tokens: int | None = None
    input_len: int = 1024
    output_len: int = 512
    concurrency: tuple[int, ...] = (1, 10, 100)
    slo_tpot_s: float | None = None
    slo_ttft_s: float | None = None
    kv_dtype: str = "auto"
    engine: str | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    price_per_hour_usd: float | None = None
    api_price_per_million_usd: float | None = None
    alternatives: bool = True       # list other quantizations that fit even when this plan fits (default quant)
    calibration: Any = None         # a sizing.profile.Profile (`--calibration FILE`): fitted factors, probe ceilings


@dataclass(frozen=True)
class Recommendation:
    model: ModelEntry
    plans: tuple[Plan, ...]
    single_gpu: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        if self.single_gpu:
            return self.plans[0].to_dict()
        return {"model": self.model.key, "gpu": None, "plans": [p.to_dict() for p in self.plans],
                "notes": list(self.notes)}


# -- checks on the request -------------------------------------------------------------------------------------
def default_quant(model: ModelEntry, gpu: Gpu) -> Quant:
    """The released precision: fp8 for DeepSeek-R1/V3, bf16 for most others, fp16 on cards without bf16."""
    released = model.arch.released_dtype
    if released == "bf16" and not gpu.has_bf16:
        released = "fp16"
    return resolve_quant(released)


def engine_for(quant: Quant, engine: Engine | None) -> Engine:
    engines = load_engines()
    if engine is None:
        return engines["llama.cpp"] if quant.is_gguf else engines["vllm"]
    gguf_engine = engine.layer_split_only and engine.key != "transformers"
    if quant.is_gguf and not gguf_engine:
        raise SizingError("--engine", f"--engine {engine.key} does not serve GGUF files ({quant.key}); "
                                      f"use --engine llama.cpp or a non-GGUF --quant.")
    if gguf_engine and not (quant.is_gguf or quant.key in ("bf16", "fp16")):
        raise SizingError("--engine", f"--engine {engine.key} serves GGUF files and 16-bit weights, not {quant.key}; "
                                      f"pick a GGUF --quant (q4_k_m, q8_0, ...) or --engine vllm.")
    return engine


def check_context(model: ModelEntry, context: int, input_len: int, output_len: int) -> None:
    limit = model.arch.max_context_tokens
    if context > limit:
        extra = ""
        if model.extended_context_tokens:
            extra = (f"; {model.extended_context_tokens:,} needs {model.extended_context_how} in a config.json "
                     f"passed as --model path/config.json")
        raise SizingError("--context", f"--context {context:,} exceeds {model.key}'s limit of {limit:,} tokens "
                                       f"(max_position_embeddings); give --context {limit} or less{extra}.")
    if input_len + output_len > context:
        raise SizingError("--input-len", f"--input-len {input_len:,} + --output-len {output_len:,} = "
                                         f"{input_len + output_len:,} tokens do not fit in --context {context:,}; "
                                         f"raise --context or shorten the request.")


def check_quant(quant: Quant, model: ModelEntry, gpu: Gpu | None, explicit: bool) -> None:
    if not applies_to_model(quant, model.arch):
        raise SizingError("--quant", f"--quant {quant.key} exists only for models of type "
                                     f"{', '.join(quant.models)} (DeepSeek-R1/V3), not {model.key} "
                                     f"({model.arch.model_type}); `sizing quants` lists the others.")
    if explicit and gpu is not None:
        support = quant_support(quant, gpu)
        if not support.ok:
            raise SizingError("--quant", f"--quant {quant.key} cannot run on --gpu {gpu.key}: {support.reason}.")


def _workload(req: Request, model: ModelEntry) -> Workload:
    context = req.context_tokens
    if context is None:
        context = max(min(DEFAULT_CONTEXT_TOKENS, model.arch.max_context_tokens), req.input_len + req.output_len)
    check_context(model, context, req.input_len, req.output_len)
    return Workload(context_tokens=context, input_len=req.input_len, output_len=req.output_len,
                    concurrency=tuple(req.concurrency), slo_tpot_s=req.slo_tpot_s, slo_ttft_s=req.slo_ttft_s)


# -- building plans ----------------------------------------------------------------------------------------------
def _setup(model: ModelEntry, gpu: Gpu, quant: Quant, kv: KvDtype, engine: Engine, req: Request,
           table: FactorTable) -> Setup:
    if req.price_per_hour_usd is not None:
        gpu = gpu.with_price(req.price_per_hour_usd)
    return Setup(model=model, gpu=gpu, quant=quant, kv_dtype=kv, engine=engine, factors=factors_for(table, engine, gpu),
                 interconnects=load_interconnects(), memory_fraction=req.gpu_memory_utilization,
                 max_num_seqs=req.max_num_seqs)


def _evaluate(setup: Setup, workload: Workload, gpus: int | None) -> tuple[Evaluation, bool]:
    """(evaluation, whether the count was searched). Always returns an evaluation so a plan can show numbers."""
    if gpus is not None:
        found = evaluate_count(setup, workload, gpus, fastest=True)
        if found is None:
            fallback = evaluate(setup, workload, Layout(tp=gpus, pp=1, ep=gpus if setup.arch.is_moe else 1))
            return fallback, False
        return found, False
    found = search(setup, workload)
    if found is not None:
        return found, True
    single = evaluate(setup, workload, Layout(tp=1, pp=1))
    if not single.support.ok:
        return single, True
    return replace(single, reason=f"no layout of up to {MAX_GPUS} GPUs fits; on one GPU {single.reason}"), True


def _alternative(setup: Setup, workload: Workload, gpus: int | None) -> dict | None:
    ev, _ = _evaluate(setup, workload, gpus)
    if not ev.fits:
        return None
    first = ev.estimates[0]
    return {"quant": setup.quant.key, "engine": setup.engine.key, "gpus": ev.gpus, "layout": ev.layout.as_dict(),
            "weights_per_gpu_bytes": round(ev.memory.weights_bytes),
            "per_request_output_tokens_per_s": round(first.per_request_output_tokens_per_s, 3),
            "concurrency": first.concurrency, "max_concurrency": ev.max_running}


def alternatives(model: ModelEntry, gpu: Gpu, chosen: Quant, kv: KvDtype, req: Request, workload: Workload,
                 table: FactorTable, engine: Engine | None) -> list[dict]:
    """Other quantizations that fit (at --gpus N, or at their own minimum count), fewest GPUs first."""
    out = []
    for quant in load_quants():
        if quant.key == chosen.key or not applies_to_model(quant, model.arch) or not quant_support(quant, gpu).ok:
            continue
        try:
            eng = engine_for(quant, engine)
        except SizingError:
            continue
        if kv_support(kv, gpu) is not None:
            continue
        found = _alternative(_setup(model, gpu, quant, kv, eng, req, table), workload, req.gpus)
        if found:
            out.append(found)
    out.sort(key=lambda a: (a["gpus"], -a["per_request_output_tokens_per_s"]))
    return out


def larger_counts(gpus: int, per_node: int) -> list[int]:
    """The counts people deploy beyond a searched minimum: the next power of two inside a node, the next whole node,
    and one node more (a minimum such as 21 = TP1 x PP21, because TP must divide the heads, is rarely what anyone
    runs; 24 = TP8 x PP3 is)."""
    out = []
    if gpus < per_node:
        out.append(1 << gpus.bit_length())  # the next power of two above the minimum
    whole = -(-gpus // per_node) * per_node
    if whole != gpus:
        out.append(whole)
    if gpus >= per_node:
        out.append(whole + per_node)
    return sorted({n for n in out if gpus < n <= MAX_GPUS})


def more_gpus(ev: Evaluation) -> list[dict]:
    """The plan at each of :func:`larger_counts` (fastest layout for that count): speed, batch room and price, so
    the minimum can be weighed against what a few more GPUs buy."""
    out = []
    for n in larger_counts(ev.gpus, ev.setup.gpu.gpus_per_node):
        bigger = evaluate_count(ev.setup, ev.workload, n, fastest=True)
        if bigger is None or not bigger.fits:
            continue
        first, last = bigger.estimates[0], bigger.estimates[-1]
        out.append({"gpus": n, "layout": bigger.layout.as_dict(),
                    "concurrency": [first.concurrency, last.concurrency],
                    "per_request_output_tokens_per_s": round(first.per_request_output_tokens_per_s, 3),
                    "output_tokens_per_s_at_max_concurrency": round(last.output_tokens_per_s, 3),
                    "max_concurrency": bigger.max_running, "price_per_hour_usd": bigger.price_per_hour_usd})
    return out


def suggestions(ev: Evaluation, alts: list[dict], req: Request) -> list[str]:
    """What would fit when this plan does not: more GPUs, another quantization, a shorter context."""
    if ev.fits:
        return []
    out: list[str] = []
    if ev.support.ok:
        more = search(ev.setup, ev.workload)
        if more is not None and more.gpus != ev.gpus:
            out.append(f"more GPUs: {more.gpus} x {ev.setup.gpu.key} fit {ev.setup.quant.key} "
                       f"(TP {more.layout.tp} x PP {more.layout.pp}).")
    for alt in alts[:3]:
        out.append(f"another quantization: {alt['quant']} fits on {alt['gpus']} GPU{'s' if alt['gpus'] > 1 else ''} "
                   f"({alt['per_request_output_tokens_per_s']:.1f} tokens/s per request).")
    m = ev.memory
    if ev.support.ok and m.fixed_bytes <= m.budget_bytes and m.kv_capacity_tokens > 0:
        requests = m.kv_capacity_tokens // ev.workload.request_tokens
        out.append(f"a shorter context or fewer requests: on {ev.gpus} GPU{'s' if ev.gpus > 1 else ''} the KV cache "
                   f"holds {m.kv_capacity_tokens:,} tokens, e.g. --context {min(m.kv_capacity_tokens, ev.workload.context_tokens):,} "
                   f"with up to {requests:,} concurrent requests of {ev.workload.request_tokens:,} tokens.")
    elif ev.support.ok and m.fixed_bytes > m.budget_bytes:
        out.append("a shorter context does not help: the weights alone do not fit.")
    return out


def build_plan(model: ModelEntry, gpu: Gpu, req: Request, table: FactorTable | None = None) -> Plan:
    """The plan for one card (the heart of `sizing recommend --gpu` and of `sizing.api.plan`)."""
    table = table or load_factor_table()
    workload = _workload(req, model)
    explicit = req.quant is not None
    quant = resolve_quant(req.quant) if explicit else default_quant(model, gpu)
    check_quant(quant, model, gpu, explicit)
    kv = resolve_kv_dtype(req.kv_dtype)
    kv_problem = kv_support(kv, gpu)
    if kv_problem:
        raise SizingError("--kv-cache-dtype", f"--kv-cache-dtype {kv.key}: {kv_problem}.")
    engine_choice = resolve_engine(req.engine) if req.engine else None
    engine = engine_for(quant, engine_choice)
    profile = req.calibration
    if profile is not None:
        profile.check(gpu, engine)
        table = profile.table(table)
    setup = _setup(model, gpu, quant, kv, engine, req, table)
    if profile is not None:
        setup = replace(setup, factors=profile.capped(setup.factors, gpu, quant_support(quant, gpu)))
    ev, searched = _evaluate(setup, workload, req.gpus)
    want = not ev.fits or (req.alternatives and not explicit)   # what else fits: always when this does not
    alts = alternatives(model, gpu, quant, kv, req, workload, table, engine_choice) if want else []
    be = None
    if req.api_price_per_million_usd is not None and ev.price_per_hour_usd is not None and ev.fits:
        best = max(e.output_tokens_per_s for e in ev.estimates)
        be = break_even(req.api_price_per_million_usd, ev.price_per_hour_usd, best)
    note = profile.describe(gpu) if profile is not None else None
    return Plan(evaluation=ev, searched=searched, reasoning=tuple(reasoning(ev, searched, note)),
                launch_command=launch_command(ev) if ev.fits else None, alternatives=tuple(alts),
                suggestions=tuple(suggestions(ev, alts, req)), break_even=be,
                more_gpus=tuple(more_gpus(ev)) if searched and ev.fits and req.alternatives else (),
                api_price_per_million_usd=req.api_price_per_million_usd,
                extras={"calibration": profile.path} if profile is not None else {})


def _sort_key(plan: Plan) -> tuple:
    price = plan.evaluation.price_per_hour_usd
    return (not plan.fits, price is None, price if price is not None else 0.0, plan.gpus)


def recommend(req: Request, table: FactorTable | None = None) -> Recommendation:
    """Plans for the request: one card, or every card in the catalog (fitting and cheapest first)."""
    model = resolve_model(req.model)
    if req.gpus is not None and req.gpus < 1:
        raise SizingError("--gpus", f"--gpus must be at least 1, got {req.gpus}.")
    if req.gpu_memory_utilization is not None and not 0.05 <= req.gpu_memory_utilization <= 1.0:
        raise SizingError("--gpu-memory-utilization", f"--gpu-memory-utilization must be between 0.05 and 1, "
                                                      f"got {req.gpu_memory_utilization}.")
    if req.gpu is not None:
        gpu = resolve_gpu(req.gpu)
        return Recommendation(model=model, plans=(build_plan(model, gpu, req, table),), single_gpu=True)
    if req.quant is not None:
        check_quant(resolve_quant(req.quant), model, None, True)
    plans = []
    skipped = []
    if req.calibration is not None:
        skipped.append(f"calibration {req.calibration.path} applied to {req.calibration.family} cards only")
    for gpu in load_gpus():
        if req.quant is not None and not quant_support(resolve_quant(req.quant), gpu).ok:
            skipped.append(f"{gpu.key}: {quant_support(resolve_quant(req.quant), gpu).reason}")
            continue
        if kv_support(resolve_kv_dtype(req.kv_dtype), gpu) is not None:
            skipped.append(f"{gpu.key}: {kv_support(resolve_kv_dtype(req.kv_dtype), gpu)}")
            continue
        calibration = req.calibration if req.calibration is not None and req.calibration.applies_to_card(gpu) else None
        plans.append(build_plan(model, gpu, replace(req, gpu=gpu.key, alternatives=False, calibration=calibration),
                                table))
    plans.sort(key=_sort_key)
    return Recommendation(model=model, plans=tuple(plans), single_gpu=False, notes=tuple(skipped))

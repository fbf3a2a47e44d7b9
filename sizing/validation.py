"""Predicted vs measured for every validation case, and the summary `sizing validate` prints.

Speed rows compare tokens/s (per request, or aggregate for max-throughput runs); prefill rows compare prompt
tokens/s; fit rows check that the documented GPU count fits and is the smallest valid count under the engine's
layout rules; memory rows compare the memory the run needs with what was reported (for vLLM, which preallocates,
the check is that the need fits inside the reported amount).
Errors are (predicted - measured) / measured. Leave-one-out (LOO) predictions refit the row's factor group without
that row, so a row that alone determines a factor shows how far off the model is without it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from sizing.cases import Case, load_cases
from sizing.engines import load_interconnects, resolve_engine
from sizing.factors import FactorTable
from sizing.gpus import resolve_gpu
from sizing.layout import Layout
from sizing.models import resolve_model
from sizing.plan import (
    Evaluation,
    Setup,
    Workload,
    evaluate,
    evaluate_count,
    factors_for,
    search,
)
from sizing.quants import resolve_kv_dtype, resolve_quant
from sizing.serving import estimate
from sizing.units import GB, GiB


@dataclass(frozen=True)
class Prepared:
    case: Case
    evaluation: Evaluation
    family: str
    factors_engine: str


@dataclass(frozen=True)
class ValidationRow:
    id: str
    check: str
    label: str
    measured: float
    predicted: float | None
    unit: str
    error_pct: float | None
    ok: bool | None               # fit/memory checks
    scored: bool
    group: str                    # factor group the row is fitted in ('' = none: a pure prediction)
    loo_predicted: float | None
    loo_error_pct: float | None
    detail: str
    interpretation: str
    source: str

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _workload(case: Case, concurrency: int) -> Workload:
    request = case.input_len + case.output_len
    context = case.context_tokens or max(request, 4096)
    return Workload(context_tokens=context, input_len=case.input_len, output_len=case.output_len,
                    concurrency=(concurrency,))


def _setup(case: Case, table: FactorTable) -> Setup:
    model, gpu = resolve_model(case.model), resolve_gpu(case.gpu)
    engine = resolve_engine(case.engine)
    return Setup(model=model, gpu=gpu, quant=resolve_quant(case.quant), kv_dtype=resolve_kv_dtype(case.kv_dtype),
                 engine=engine, factors=factors_for(table, engine, gpu), interconnects=load_interconnects(),
                 memory_fraction=case.memory_fraction, max_num_seqs=case.max_num_seqs)


def prepare(case: Case, table: FactorTable) -> Prepared:
    """Everything about a case that does not depend on the speed factors."""
    setup = _setup(case, table)
    workload = _workload(case, case.concurrency or 1)
    arch = setup.arch
    if case.tp is not None:
        tp, pp = case.tp, case.pp or 1
        layout = Layout(tp=tp, pp=pp, ep=tp if arch.is_moe and tp > 1 else 1, dp_attention=case.dp_attention)
        evaluation = evaluate(setup, workload, layout)
    else:
        evaluation = evaluate_count(setup, workload, case.gpus)
    return Prepared(case=case, evaluation=evaluation, family=setup.gpu.family, factors_engine=setup.engine.factors_key)


def predict_speed(prepared: Prepared, table: FactorTable) -> float:
    """The measured quantity predicted with `table`'s factors (tokens/s)."""
    case, ev = prepared.case, prepared.evaluation
    factors = table.lookup(prepared.factors_engine, prepared.family)
    perf = replace(ev.perf, factors=factors)
    if case.check == "prefill":
        return case.input_len / (perf.prefill_s(case.input_len) - factors.ttft_overhead_s)
    concurrency = case.concurrency or ev.max_running
    est = estimate(perf, concurrency, ev.max_running, case.input_len, case.output_len, None)
    return est.output_tokens_per_s if case.aggregate else est.per_request_output_tokens_per_s


def group_of(prepared: Prepared, table: FactorTable) -> tuple[str, str] | None:
    """The most specific factor group with free values that this row belongs to."""
    for family in (prepared.family, "*"):
        for group in table.groups:
            if group.engine == prepared.factors_engine and group.family == family and group.free:
                return group.engine, group.family
    return None


def is_fit_row(prepared: Prepared) -> bool:
    return prepared.case.scored and prepared.case.check in ("speed", "prefill")


def _label(case: Case) -> str:
    conc = "max" if case.concurrency is None else str(case.concurrency)
    return f"{case.model} {case.quant} {case.gpus}x{case.gpu} {case.engine} c={conc}"


def _memory_row(p: Prepared) -> tuple[float, float, bool, str]:
    """(measured bytes, predicted bytes needed, ok, detail) for a memory case."""
    case, ev = p.case, p.evaluation
    unit = GiB if case.measured_unit == "GiB" else GB
    measured = case.measured * unit
    tp = ev.layout.tp
    stages = ev.geometry.stages
    kv = ev.workload.target_tokens * sum(s.kv_bytes_per_token for s in stages) * tp / ev.geometry.kv_shards
    needed = (sum(s.weight_bytes for s in stages) * tp + ev.gpus * (ev.memory.activation_bytes + ev.memory.overhead_bytes)
              + kv)
    if ev.setup.engine.kv_rule == "fraction_of_total":
        implied = measured / (ev.memory.capacity_bytes * ev.gpus)
        ok = abs(needed - measured) <= 0.10 * measured
        detail = (f"needs {needed / GB:.1f} GB for {ev.workload.target_tokens:,} KV tokens vs {measured / GB:.1f} GB "
                  f"reported; vLLM preallocates capacity x utilization ({ev.memory.reserved_bytes * ev.gpus / GB:.1f} GB "
                  f"at the default 0.9; the report implies ~{implied:.2f})")
        return measured, needed, ok, detail
    return measured, needed, ev.fits, f"fits on {ev.gpus}: {'yes' if ev.fits else 'no (' + ev.reason + ')'}"


def _fit_row(p: Prepared) -> tuple[bool, str, int | None]:
    case, ev = p.case, p.evaluation
    minimum = search(ev.setup, ev.workload)
    min_gpus = None if minimum is None else minimum.gpus
    ok = ev.fits and min_gpus == case.gpus
    detail = (f"fits on {case.gpus}: {'yes' if ev.fits else 'no (' + ev.reason + ')'}; smallest valid count under "
              f"{ev.setup.engine.name}'s layout rules: {min_gpus}")
    return ok, detail, min_gpus


def validate(table: FactorTable, loo_tables: dict[str, FactorTable] | None = None,
             cases: tuple[Case, ...] | None = None) -> list[ValidationRow]:
    """One row per case. `loo_tables` maps a case id to the table refitted without it (see sizing.fit)."""
    rows = []
    for case in cases or load_cases():
        p = prepare(case, table)
        group = group_of(p, table)
        group_name = f"{group[0]}/{group[1]}" if group and is_fit_row(p) else ""
        source = f"{case.measurement.source_title} ({case.measurement.source_url})"
        if case.check in ("speed", "prefill"):
            predicted = predict_speed(p, table)
            error = (predicted - case.measured) / case.measured * 100
            loo_pred = loo_err = None
            if loo_tables and case.id in loo_tables and case.scored:
                loo_pred = predict_speed(prepare(case, loo_tables[case.id]), loo_tables[case.id])
                loo_err = (loo_pred - case.measured) / case.measured * 100
            ev = p.evaluation
            detail = (f"TP{ev.layout.tp} PP{ev.layout.pp}{' dp-attn' if ev.layout.dp_attention else ''}, "
                      f"running {case.concurrency or ev.max_running}, {ev.support.mode} {ev.support.compute}"
                      + ("" if ev.fits else f"; does not fit as given: {ev.reason}"))
            rows.append(ValidationRow(case.id, case.check, _label(case), case.measured, predicted, "tok/s", error, None,
                                      case.scored, group_name, loo_pred, loo_err, detail, case.interpretation, source))
        elif case.check == "fit":
            ok, detail, min_gpus = _fit_row(p)
            rows.append(ValidationRow(case.id, "fit", _label(case), float(case.gpus), min_gpus, "GPUs", None, ok,
                                      case.scored, "", None, None, detail, case.interpretation, source))
        else:
            measured, needed, ok, detail = _memory_row(p)
            unit = GiB if case.measured_unit == "GiB" else GB
            error = (needed - measured) / measured * 100
            rows.append(ValidationRow(case.id, "memory", _label(case), measured / unit, needed / unit,
                                      case.measured_unit or "GB", error, ok, case.scored, "", None, None, detail,
                                      case.interpretation, source))
    return rows


@dataclass(frozen=True)
class Summary:
    speed_rows: int
    median_abs_error_pct: float | None
    median_abs_loo_error_pct: float | None
    within_25_pct: int
    worst: tuple[ValidationRow, ...]
    fit_checks: int
    fit_correct: int
    memory_checks: int
    memory_ok: int
    median_abs_memory_error_pct: float | None
    unscored: int

    def as_dict(self) -> dict:
        return {"speed_rows": self.speed_rows, "median_abs_error_pct": self.median_abs_error_pct,
                "median_abs_loo_error_pct": self.median_abs_loo_error_pct, "within_25_pct": self.within_25_pct,
                "worst": [r.id for r in self.worst], "fit_checks": self.fit_checks, "fit_correct": self.fit_correct,
                "memory_checks": self.memory_checks, "memory_ok": self.memory_ok,
                "median_abs_memory_error_pct": self.median_abs_memory_error_pct, "unscored": self.unscored}


def summarize(rows: list[ValidationRow]) -> Summary:
    speed = [r for r in rows if r.scored and r.check in ("speed", "prefill") and r.error_pct is not None]
    errors = [abs(r.error_pct) for r in speed]
    loo = [abs(r.loo_error_pct) for r in speed if r.loo_error_pct is not None]
    fits = [r for r in rows if r.scored and r.check == "fit"]
    mems = [r for r in rows if r.scored and r.check == "memory"]
    mem_errors = [abs(r.error_pct) for r in mems if r.error_pct is not None]
    return Summary(
        speed_rows=len(speed), median_abs_error_pct=statistics.median(errors) if errors else None,
        median_abs_loo_error_pct=statistics.median(loo) if loo else None,
        within_25_pct=sum(1 for e in errors if e <= 25.0),
        worst=tuple(sorted(speed, key=lambda r: -abs(r.error_pct))[:3]),
        fit_checks=len(fits), fit_correct=sum(1 for r in fits if r.ok),
        memory_checks=len(mems), memory_ok=sum(1 for r in mems if r.ok),
        median_abs_memory_error_pct=statistics.median(mem_errors) if mem_errors else None,
        unscored=sum(1 for r in rows if not r.scored))

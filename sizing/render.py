"""Text rendering of plans, catalogs and validation results. Pure: every function returns a string."""

from __future__ import annotations

from collections.abc import Sequence

from sizing.gpus import Gpu
from sizing.models import ModelEntry
from sizing.params import count_params
from sizing.quants import Quant, quant_support
from sizing.recommend import Recommendation
from sizing.result import Plan
from sizing.units import GB, format_duration, format_gb
from sizing.validation import Summary, ValidationRow


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """A plain fixed-width table; columns listed in `right` are right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else (f"{value:,.1f}" if value < 1000 else f"{value:,.0f}")


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.3f}" if value < 10 else f"${value:,.2f}"


def _layout(plan: Plan) -> str:
    return _layout_text(plan.evaluation.layout.as_dict())


def _layout_text(lay: dict) -> str:
    """A layout as ``Layout.as_dict`` gives it, in words: TP8 PP3 EP8, x2 replicas, DP-attn."""
    text = (f"TP{lay['tp']}" + (f" PP{lay['pp']}" if lay["pp"] > 1 else "") + (f" EP{lay['ep']}" if lay["ep"] > 1
            else "") + (f" x{lay['dp']} replicas" if lay["dp"] > 1 else ""))
    return text + (" DP-attn" if lay["dp_attention"] else "")


def render_plan(plan: Plan) -> str:
    ev = plan.evaluation
    setup, m = ev.setup, ev.memory
    status = "fits" if plan.fits else f"DOES NOT FIT: {plan.reason}"
    count = ("minimum" if plan.fits else "searched") if plan.searched else "given"
    title = (f"{setup.model.key} on {ev.gpus} x {setup.gpu.name} ({count}) - {setup.quant.key}, {setup.engine.name}, "
             f"{_layout(plan)} - {status}")
    shape = (f"request: {ev.workload.input_len:,} in + {ev.workload.output_len:,} out tokens, "
             f"context {ev.workload.context_tokens:,}, KV cache {setup.kv_dtype.key}")
    out = [title, shape]
    if ev.support.ok:
        out.append(f"memory per GPU: weights {format_gb(m.weights_bytes)} + KV cache {format_gb(m.kv_needed_bytes)} "
                   f"+ activations {format_gb(m.activation_bytes)} + overhead {format_gb(m.overhead_bytes, 2)} "
                   f"= {format_gb(m.total_bytes)} of {format_gb(m.capacity_bytes)}"
                   + (f" ({setup.engine.name} reserves {format_gb(m.reserved_bytes)}, KV pool "
                      f"{format_gb(max(m.kv_pool_bytes, 0))})" if setup.engine.kv_rule != "on_demand" else ""))
        out.append(f"KV capacity: {m.kv_capacity_tokens:,} tokens -> {plan.max_concurrency:,} requests at once")
    if ev.runs:
        if not plan.fits:
            out.append("it starts, but the target does not fit at once: the estimates include queueing")
        rows = [[e.concurrency, e.running, _rate(e.per_request_output_tokens_per_s), _rate(e.output_tokens_per_s),
                 format_duration(e.tpot_s), format_duration(e.ttft_s), _money(e.cost_per_million_output_tokens_usd)]
                for e in ev.estimates]
        out.append("")
        out.append(table(["concurrency", "running", "tok/s per request", "tok/s total", "TPOT", "TTFT",
                          "$ per 1M out"], rows, right=range(7)))
    if ev.workload.slo_tpot_s is not None or ev.workload.slo_ttft_s is not None:
        targets = ", ".join(t for t in (
            f"TPOT <= {format_duration(ev.workload.slo_tpot_s)}" if ev.workload.slo_tpot_s else "",
            f"TTFT <= {format_duration(ev.workload.slo_ttft_s)}" if ev.workload.slo_ttft_s else "") if t)
        best = ev.slo_max_concurrency
        out.append(f"\nlargest concurrency meeting {targets}: {best if best is not None else 'none (not even 1)'}")
        slo = ",".join(f"{name}={seconds * 1e3:g}ms" for name, seconds in
                       (("ttft", ev.workload.slo_ttft_s), ("tpot", ev.workload.slo_tpot_s)) if seconds is not None)
        out.append(f"(predicted from mean TTFT/TPOT; measure it on the deployment: bench capacity --base-url URL "
                   f"--slo {slo} --input-len {ev.workload.input_len} --output-len {ev.workload.output_len} "
                   "--ignore-eos)")
    if ev.price_per_hour_usd is not None:
        out.append(f"\ncost: {ev.gpus} x {_money(setup.gpu.price_per_hour_usd)}/h = {_money(ev.price_per_hour_usd)}/h "
                   f"({setup.gpu.price_source})")
    if plan.break_even is not None:
        be = plan.break_even
        verdict = "cheaper than the API at full load" if be.cheaper_at_full_load else "never cheaper than the API"
        out.append(f"break-even vs API at {_money(be.api_price_per_million_usd)} per 1M output tokens: sustain "
                   f"{be.tokens_per_s_needed:,.0f} output tokens/s ({be.tokens_per_month_needed / 1e9:,.2f}B tokens "
                   f"per month); this deployment peaks at {be.max_output_tokens_per_s:,.0f} tokens/s -> {verdict}")
    elif plan.api_price_per_million_usd is not None and ev.price_per_hour_usd is None:
        out.append(f"break-even: no hourly price for {setup.gpu.key}; give --price USD_PER_GPU_HOUR")
    out.append("\nwhy:")
    out.extend(f"  - {line}" for line in plan.reasoning)
    if plan.launch_command:
        out.append(f"\nlaunch: {plan.launch_command}")
    if plan.more_gpus:
        c0, c1 = plan.more_gpus[0]["concurrency"]
        out.append(f"\nmore GPUs ({setup.gpu.gpus_per_node} per node; the fastest layout for each count):")
        rows = [[ev.gpus, _layout(plan), _rate(ev.estimates[0].per_request_output_tokens_per_s),
                 _rate(ev.estimates[-1].output_tokens_per_s), ev.max_running, _money(ev.price_per_hour_usd)]]
        for a in plan.more_gpus:
            rows.append([a["gpus"], _layout_text(a["layout"]), _rate(a["per_request_output_tokens_per_s"]),
                         _rate(a["output_tokens_per_s_at_max_concurrency"]), a["max_concurrency"],
                         _money(a["price_per_hour_usd"])])
        out.append(table(["GPUs", "layout", f"tok/s per req (c={c0})", f"tok/s total (c={c1})", "max conc.", "$/h"],
                         rows, right=(0, 2, 3, 4, 5)))
    if plan.alternatives:
        out.append("\nother quantizations that fit:")
        rows = [[a["quant"], a["engine"], a["gpus"], f"TP{a['layout']['tp']}" + (f" PP{a['layout']['pp']}" if
                a['layout']['pp'] > 1 else ""), format_gb(a["weights_per_gpu_bytes"]),
                 _rate(a["per_request_output_tokens_per_s"]), a["max_concurrency"]] for a in plan.alternatives]
        out.append(table(["quant", "engine", "GPUs", "layout", "weights/GPU", "tok/s (c=1)", "max conc."], rows,
                         right=(2, 4, 5, 6)))
    if plan.suggestions:
        out.append("\nwhat would fit:")
        out.extend(f"  - {s}" for s in plan.suggestions)
    return "\n".join(out)


def render_comparison(rec: Recommendation) -> str:
    rows = []
    for plan in rec.plans:
        ev = plan.evaluation
        first = ev.estimates[0] if ev.estimates and ev.support.ok else None
        last = ev.estimates[-1] if ev.estimates and ev.support.ok else None
        note = ""
        if not plan.fits:
            note = plan.reason or ""
            if plan.alternatives:
                alt = plan.alternatives[0]
                note = f"{alt['quant']} fits on {alt['gpus']}"
        rows.append([ev.setup.gpu.key, ev.setup.quant.key, ev.gpus if plan.fits else "-",
                     _layout(plan) if plan.fits else "-", "yes" if plan.fits else "no",
                     _rate(first.per_request_output_tokens_per_s) if first and plan.fits else "-",
                     _rate(last.output_tokens_per_s) if last and plan.fits else "-",
                     _money(ev.price_per_hour_usd) if plan.fits else "-",
                     _money(last.cost_per_million_output_tokens_usd) if last and plan.fits else "-", note[:70]])
    conc = rec.plans[0].evaluation.workload.concurrency if rec.plans else (1,)
    head = (f"{rec.model.key}: every card, fitting and cheapest first (tokens/s per request at c={conc[0]}, "
            f"total at c={conc[-1]})")
    text = head + "\n\n" + table(["gpu", "quant", "GPUs", "layout", "fits", "tok/s/req", "tok/s total", "$/h",
                                  "$ per 1M", "note"], rows, right=(2, 5, 6, 7, 8))
    if rec.notes:
        text += "\n\nskipped:\n" + "\n".join(f"  - {n}" for n in rec.notes)
    return text


def render_models(models: Sequence[ModelEntry]) -> str:
    rows = []
    for m in models:
        p = count_params(m.arch)
        kv = (m.arch.num_layers * (m.arch.mla.kv_lora_rank + m.arch.mla.qk_rope_head_dim) * 2 if m.arch.mla
              else 2 * m.arch.num_layers * m.arch.num_kv_heads * m.arch.head_dim * 2)
        attn = "MLA" if m.arch.mla else ("MHA" if m.arch.num_kv_heads == m.arch.num_heads else
                                        f"GQA {m.arch.num_heads}/{m.arch.num_kv_heads}")
        rows.append([m.key, f"{p.total / 1e9:.2f}B", f"{p.active / 1e9:.2f}B" if m.arch.is_moe else "",
                     attn + (" MoE" if m.arch.is_moe else ""), f"{kv:,}", f"{m.arch.max_context_tokens:,}",
                     m.arch.released_dtype, ", ".join(m.aliases[:4])])
    return table(["model", "params", "active", "attention", "KV B/token (16-bit)", "context", "released", "aliases"],
                 rows, right=(1, 2, 4, 5))


def render_gpus(gpus: Sequence[Gpu]) -> str:
    rows = [[g.key, g.name, f"{g.memory_marketing_gb:g}", f"{g.memory_bytes / GB:.1f}",
             f"{g.mem_bandwidth_bytes_per_s / 1e9:,.0f}", f"{g.half_flops_per_s / 1e12:,.0f}",
             "-" if g.fp8_flops_per_s is None else f"{g.fp8_flops_per_s / 1e12:,.0f}",
             "yes" if g.has_bf16 else "no", f"{g.interconnect_kind} {0 if g.interconnect_bytes_per_s is None else g.interconnect_bytes_per_s / 1e9:,.0f}",
             _money(g.price_per_hour_usd), ", ".join(g.aliases[:3])] for g in gpus]
    return table(["gpu", "name", "GB", "real GB", "GB/s", "16-bit TF", "fp8 TF", "bf16", "link GB/s", "$/h", "aliases"],
                 rows, right=(2, 3, 4, 5, 6, 9))


def render_quants(quants: Sequence[Quant], gpus: Sequence[Gpu]) -> str:
    rows = []
    for q in quants:
        native = [g.key for g in gpus if quant_support(q, g).ok and quant_support(q, g).mode == "native"]
        weight_only = [g.key for g in gpus if quant_support(q, g).ok and quant_support(q, g).mode == "weight_only"]
        no = [g.key for g in gpus if not quant_support(q, g).ok]
        runs = (f"native on {len(native)}" if native else "") + (", " if native and weight_only else "") + (
            f"weight-only on {len(weight_only)}" if weight_only else "")
        rows.append([q.key, q.name, f"{q.bits_per_weight:g}", q.applies_to, q.engine, runs,
                     ", ".join(no) if len(no) <= 6 else f"{len(no)} cards", "any" if "*" in q.models else "DeepSeek-V3/R1"])
    return table(["quant", "name", "bits/weight", "applies to", "engine", "runs on", "not on", "models"], rows,
                 right=(2,))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def render_validation(rows: Sequence[ValidationRow], summary: Summary) -> str:
    body = []
    for r in rows:
        measured = f"{r.measured:,.2f}" if r.check != "fit" else f"{r.measured:.0f}"
        predicted = "-" if r.predicted is None else (f"{r.predicted:,.2f}" if r.check != "fit" else f"{r.predicted:.0f}")
        status = "" if r.ok is None else ("ok" if r.ok else "WRONG")
        scored = "" if r.scored else "not scored"
        body.append([r.id, r.check, r.label, f"{measured} {r.unit}", predicted, _pct(r.error_pct),
                     _pct(r.loo_error_pct), status or scored, r.group])
    text = table(["id", "check", "case", "measured", "predicted", "error", "LOO error", "result", "fitted in"], body,
                 right=(3, 4, 5, 6))
    s = summary
    lines = [text, "",
             f"speed rows (scored): {s.speed_rows}; median |error| {s.median_abs_error_pct:.1f}% in-sample"
             + (f", {s.median_abs_loo_error_pct:.1f}% leave-one-out" if s.median_abs_loo_error_pct is not None else "")
             + f"; {s.within_25_pct} of {s.speed_rows} within 25%",
             "worst: " + "; ".join(f"{r.id} {r.error_pct:+.0f}% ({r.label})" for r in s.worst),
             f"fits / doesn't fit: {s.fit_correct} of {s.fit_checks} right; memory checks: {s.memory_ok} of "
             f"{s.memory_checks} ok"
             + (f", median |error| {s.median_abs_memory_error_pct:.1f}%" if s.median_abs_memory_error_pct is not None else ""),
             f"not scored (outside the model, reasons in --json): {s.unscored}",
             ("LOO error: the row's factor group refitted without that row (a row that alone sets a factor shows its "
              "true error there).")]
    details = [f"  {r.id}: {r.detail}" + (f" [{r.interpretation}]" if r.interpretation else "")
               for r in rows if r.check in ("fit", "memory") or not r.scored]
    return "\n".join(lines + ["", "details:"] + details)

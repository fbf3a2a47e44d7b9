"""The reasoning behind a plan, in a few plain sentences with the arithmetic (no printing here: returns strings)."""

from __future__ import annotations

from sizing.plan import Evaluation, evaluate_count
from sizing.units import GB


def _params_text(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _per_weight(bits: float) -> str:
    """16 -> '2 bytes', 8.002 -> '1 byte', 4.156 -> '4.16 bits'."""
    if abs(bits / 8 - round(bits / 8)) < 0.01:
        n = round(bits / 8)
        return f"{n} byte" + ("s" if n > 1 else "")
    return f"{bits:.3g} bits"


def weights_line(ev: Evaluation) -> str:
    quant, params = ev.setup.quant, ev.params
    active = ""
    if ev.setup.arch.is_moe:
        active = f" ({_params_text(params.active)} active per token)"
    if quant.applies_to == "all":
        size = params.total * quant.bytes_per_weight
        per = _per_weight(quant.bits_per_weight)
        text = f"{_params_text(params.total)} parameters{active} x {per} ({quant.key}) = {size / GB:.1f} GB of weights"
    else:
        embed = params.embedding + params.lm_head
        linear = params.total - embed
        size = linear * quant.bytes_per_weight + embed * 2
        per = _per_weight(quant.bits_per_weight)
        text = (f"{_params_text(params.total)} parameters{active} x {per} ({quant.key}, scales included) "
                f"+ {_params_text(embed)} embedding/lm_head weights kept in 16 bit = {size / GB:.1f} GB of weights")
    return text + "."


def compute_line(ev: Evaluation) -> str | None:
    gpu, support, quant = ev.setup.gpu, ev.support, ev.setup.quant
    if not support.ok:
        return support.reason + "."
    if support.reason:
        return support.reason[0].upper() + support.reason[1:] + "."
    if quant.key in ("fp16",) and not gpu.has_bf16:
        return f"{gpu.name} has no bf16, so the model runs in fp16 (same size, --dtype half)."
    if support.mode == "native" and support.compute in ("fp8", "int8"):
        return f"{gpu.name} computes in {support.compute} natively ({support.compute} tensor cores)."
    return None


def memory_line(ev: Evaluation) -> str:
    m, engine = ev.memory, ev.setup.engine
    fraction = ev.setup.memory_fraction or engine.memory_fraction
    rule = {"fraction_of_total": f"{engine.name} may use {fraction:.0%} = {m.budget_bytes / GB:.1f} GB",
            "fraction_of_free": f"{engine.name} gives the KV cache {fraction:.0%} of what is left",
            "on_demand": f"{engine.name} allocates what it needs"}[engine.kv_rule]
    pool = max(m.kv_pool_bytes, 0.0)
    return (f"Each {ev.setup.gpu.name} reports {m.capacity_bytes / GB:.1f} GB ({ev.setup.gpu.memory_bytes / 2**20:.0f} MiB); "
            f"{rule}; per GPU: weights {m.weights_bytes / GB:.1f} GB + activations {m.activation_bytes / GB:.1f} GB "
            f"+ overhead {m.overhead_bytes / GB:.2f} GB leaves {pool / GB:.1f} GB for the KV cache.")


def kv_line(ev: Evaluation) -> str:
    arch, layout = ev.setup.arch, ev.layout
    value = ev.setup.kv_value_bytes
    if arch.mla is not None:
        m = arch.mla
        per_token = arch.num_layers * (m.kv_lora_rank + m.qk_rope_head_dim) * value
        how = (f"{arch.num_layers} layers x ({m.kv_lora_rank} + {m.qk_rope_head_dim}) x {value:g} bytes = "
               f"{per_token:,.0f} bytes per token (MLA latent), "
               + ("split across the data-parallel attention ranks" if layout.dp_attention
                  else "replicated on every TP rank"))
    else:
        per_token = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * value
        split = min(layout.tp, arch.num_kv_heads)
        how = (f"2 x {arch.num_layers} layers x {arch.num_kv_heads} KV heads x {arch.head_dim} x {value:g} bytes = "
               f"{per_token:,.0f} bytes per token" + (f", split over {split} GPUs" if split > 1 else ""))
    req = ev.workload.request_tokens
    n = ev.memory.kv_capacity_tokens // req
    return (f"KV cache: {how}; the deployment holds {ev.memory.kv_capacity_tokens:,} tokens = "
            f"{n:,} request{'' if n == 1 else 's'} of {req:,} tokens at once.")


def minimum_line(ev: Evaluation, searched: bool) -> str | None:
    layout = ev.layout
    shape = f"TP {layout.tp}" + (f" x PP {layout.pp}" if layout.pp > 1 else "") + (
        f", EP {layout.ep}" if layout.ep > 1 else "") + (f", {layout.dp} data-parallel replicas" if layout.dp > 1 else "")
    if not searched:
        return f"Layout for the {ev.gpus} GPUs asked (the fastest single-request decode among those that fit): {shape}."
    if ev.gpus == 1:
        return f"One {ev.setup.gpu.name} is enough ({shape})."
    fewer = evaluate_count(ev.setup, ev.workload, ev.gpus - 1)
    if fewer is None:
        why = "no valid layout"
    else:
        why = fewer.reason or "it does not fit"
    return f"Minimum {ev.gpus} GPUs ({shape}); with {ev.gpus - 1}: {why}."


def speed_line(ev: Evaluation) -> str:
    perf, f = ev.perf, ev.setup.factors
    ctx = ev.workload.input_len + ev.workload.output_len / 2
    step = perf.decode_breakdown(1, ctx)
    bw = ev.setup.gpu.mem_bandwidth_bytes_per_s
    bound = "memory" if step.memory_s >= step.compute_s else "compute"
    per_layer = f"{f.layer_floor_s * 1e3:.2f} ms per layer" + (
        f" + {f.moe_layer_floor_s * 1e3:.2f} ms per MoE layer" if ev.setup.arch.is_moe else "")
    return (f"Decode at concurrency 1 is {bound}-bound: {max(step.memory_s, step.compute_s) * 1e3:.1f} ms of weight and "
            f"KV reads at {f.bw_efficiency:.0%} of {bw / 1e9:.0f} GB/s per GPU, + {step.floor_s * 1e3:.1f} ms of fixed "
            f"per-layer cost ({per_layer}) + {step.comm_s * 1e3:.1f} ms of communication = {step.total_s * 1e3:.1f} ms "
            f"per token ({1 / step.total_s:.1f} tokens/s).")


def engine_line(ev: Evaluation) -> str:
    return (f"Assumes {ev.setup.engine.name}; speed factors from {ev.setup.factors.origin} "
            f"(sizing/data/efficiency.json; `sizing validate` shows their error).")


def reasoning(ev: Evaluation, searched: bool, calibration: str | None = None) -> list[str]:
    """The plan's reasoning lines; `calibration` is the applied profile's own sentence (it goes before the
    engine line, which names the factor groups)."""
    lines = [weights_line(ev)]
    compute = compute_line(ev)
    if compute:
        lines.append(compute)
    if ev.support.ok:
        lines.append(memory_line(ev))
        lines.append(kv_line(ev))
        if ev.fits:
            minimum = minimum_line(ev, searched)
            if minimum:
                lines.append(minimum)
            lines.append(speed_line(ev))
        else:
            lines.append(f"Does not fit on {ev.gpus} GPU{'s' if ev.gpus > 1 else ''}: {ev.reason}.")
    if calibration:
        lines.append(calibration)
    lines.append(engine_line(ev))
    return lines

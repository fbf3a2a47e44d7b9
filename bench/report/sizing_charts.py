"""Tables and charts of `sizing` predictions, for the sizing explorer notebook (same look as `bench report`).

Everything comes from the public sizing API: `sizing.api.plan(model, gpu, quant, gpus, input_len=, output_len=)`
(the smallest deployment that holds one request, or exactly `gpus`), its memory per GPU, and sizing's own serving
estimate at each concurrency (`Plan.estimate`: the numbers `sizing recommend --concurrency` prints):

- `catalog_tables()`: the models, GPUs and quantizations sizing knows, each with its source;
- `plans_table(models, gpus, quants)`: one row per (model, GPU, quantization): fits, GPU count, layout, memory
  per GPU by part (GB = 1e9 bytes), KV capacity, deployment price per hour, or why it does not fit;
- `estimates_table(plans, concurrency)`: one row per deployment and concurrency: tokens/s per request
  (1 / TPOT, sizing's definition) and in aggregate, TTFT, TPOT, cost per million output tokens
  (= deployment price per hour / (aggregate tokens/s x 3600) x 1e6, where the card has a price).

Charts: `gpus_needed_chart`, `memory_chart`, `sizing_throughput_chart`, `cost_chart`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from . import style
from .style import GB, Chart, styled

MEMORY_PARTS = (("weights", "weights", "#4C72B0"), ("kv_cache", "KV cache (one request)", "#DD8452"),
                ("activations", "activations", "#55A868"), ("overhead", "overhead", "#8172B3"))


def catalog_tables() -> dict[str, pd.DataFrame]:
    """{'models', 'gpus', 'quants'}: what sizing can size, with units in the column names and sources."""
    from sizing.gpus import load_gpus
    from sizing.models import load_models
    from sizing.quants import load_quants
    models = pd.DataFrame([{"model": m.key, "hf_id": m.hf_id, "params_total_b": (m.published_params_total or np.nan) / 1e9,
                            "params_active_b": (m.published_params_active or np.nan) / 1e9,
                            "max_context_tokens": m.arch.max_context_tokens, "source": m.source}
                           for m in load_models()])
    gpus = pd.DataFrame([{"gpu": g.key, "name": g.name, "memory_gb": g.memory_bytes / GB,
                          "bandwidth_gb_per_s": g.mem_bandwidth_bytes_per_s / GB,
                          "bf16_tflops": (g.bf16_flops_per_s or np.nan) / 1e12, "fp16_tflops": g.fp16_flops_per_s / 1e12,
                          "price_usd_per_hour": g.price_per_hour_usd, "source": g.source} for g in load_gpus()])
    quants = pd.DataFrame([{"quant": q.key, "name": q.name, "bits_per_weight": q.bits_per_weight,
                            "engine": q.engine, "source": q.source} for q in load_quants()])
    return {"models": models, "gpus": gpus, "quants": quants}


def deployment_name(row: pd.Series | dict) -> str:
    return f"{row['model']} {row['quant']} on {int(row['gpus'])}x {row['gpu']}"


def _key(name: str, kind: str) -> str:
    """The catalog key of a name as typed, or the name itself when sizing does not know it."""
    from sizing.api import SizingError
    from sizing.gpus import resolve_gpu
    from sizing.models import resolve_model
    from sizing.quants import resolve_quant
    try:
        return {"model": resolve_model, "gpu": resolve_gpu, "quant": resolve_quant}[kind](name).key
    except SizingError:
        return name


def plans_table(models: Iterable[str], gpus: Iterable[str], quants: Iterable[str | None] = (None,), *,
                gpu_count: int | None = None, input_len: int = 1024, output_len: int = 512,
                context_tokens: int | None = None) -> pd.DataFrame:
    """One row per (model, GPU, quantization) plan; a combination sizing refuses is a row with fits False and
    its reason. The plan objects are kept in the `plan` column for `estimates_table`."""
    from sizing.api import SizingError, plan
    rows = []
    for model in models:
        for gpu in gpus:
            for quant in quants:
                base = {"model_asked": model, "gpu_asked": gpu, "quant_asked": quant or "released"}
                try:
                    p = plan(model, gpu, quant=quant, gpus=gpu_count, context_tokens=context_tokens,
                             input_len=input_len, output_len=output_len)
                except SizingError as e:
                    rows.append({**base, "model": _key(model, "model"), "gpu": _key(gpu, "gpu"),
                                 "quant": _key(quant, "quant") if quant else "released", "fits": False,
                                 "reason": str(e), "plan": None})
                    continue
                ev, mem = p.evaluation, p.memory_per_gpu_bytes
                rows.append({**base, "model": ev.setup.model.key, "gpu": ev.setup.gpu.key, "quant": ev.setup.quant.key,
                             "fits": p.fits, "gpus": p.gpus, "tp": p.tp, "pp": p.pp,
                             **{f"{k}_gb": mem.get(k, np.nan) / GB for k in
                                ("weights", "kv_cache", "activations", "overhead", "total", "capacity")},
                             "kv_capacity_tokens": p.kv_capacity_tokens, "max_concurrency": p.max_concurrency,
                             "price_usd_per_hour": ev.price_per_hour_usd, "reason": p.reason or "", "plan": p})
    table = pd.DataFrame(rows)
    table.attrs["workload"] = f"{input_len} in + {output_len} out tokens per request"
    return table


def estimates_table(plans: pd.DataFrame, concurrency: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256)) -> pd.DataFrame:
    """Sizing's estimate for every plan that runs, at each concurrency."""
    rows = []
    for _, row in plans.iterrows():
        p = row["plan"]
        if p is None or p.max_concurrency < 1:
            continue
        for c in concurrency:
            e = p.estimate(c)
            rows.append({"deployment": deployment_name(row), "model": row["model"], "model_asked": row["model_asked"],
                         "gpu": row["gpu"],
                         "quant": row["quant"], "gpus": row["gpus"], "concurrency": c, "running": e.running,
                         "per_request_output_tokens_per_s": e.per_request_output_tokens_per_s,
                         "output_tokens_per_s": e.output_tokens_per_s, "ttft_s": e.ttft_s, "tpot_s": e.tpot_s,
                         "cost_per_million_output_tokens_usd": e.cost_per_million_output_tokens_usd})
    table = pd.DataFrame(rows)
    table.attrs["workload"] = plans.attrs.get("workload", "")
    return table


@styled
def gpus_needed_chart(plans: pd.DataFrame) -> Chart:
    """Minimum GPUs per model (rows, with quantization) and card (columns); 'no' where nothing fits."""
    plans = plans.assign(row_name=plans["model"] + " " + plans["quant_asked"].replace({"released": "(released)"}))
    row_names = list(dict.fromkeys(plans["row_name"]))
    cards = list(dict.fromkeys(plans["gpu"]))
    counts = np.full((len(row_names), len(cards)), np.nan)
    quant_shown = {}
    for _, r in plans[plans["fits"]].iterrows():
        counts[row_names.index(r["row_name"]), cards.index(r["gpu"])] = r["gpus"]
        if r["quant_asked"] == "released":
            quant_shown[(row_names.index(r["row_name"]), cards.index(r["gpu"]))] = r["quant"]
    fig, axes = style.new_figure(width=max(6.0, 1.0 * len(cards) + 4.0), height=0.45 * len(row_names) + 3.0)
    ax = axes[0, 0]
    shown = np.log2(counts)
    top = max(3.0, float(np.nanmax(shown))) if np.isfinite(shown).any() else 3.0
    ax.imshow(np.ma.masked_invalid(shown), cmap="YlOrRd", aspect="auto", vmin=0, vmax=top)
    for i in range(len(row_names)):
        for j in range(len(cards)):
            v = counts[i, j]
            dark = np.isfinite(v) and np.log2(v) > 0.6 * top
            text = "no" if np.isnan(v) else f"{int(v)}" + (f" ({quant_shown[i, j]})" if (i, j) in quant_shown else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if dark else ("#999999" if np.isnan(v) else "black"))
    ax.set_xticks(range(len(cards)), cards, rotation=30 if len(cards) > 4 else 0, ha="right" if len(cards) > 4
                  else "center")
    ax.set_yticks(range(len(row_names)), row_names)
    ax.grid(False)
    ax.set_xlabel("GPU (sizing catalog key)")
    ax.set_ylabel("model (quantization)")
    style.title(fig, "GPUs needed (minimum count that holds the weights and one request)",
                f"sizing prediction, {plans.attrs.get('workload', '')}; 'no' = does not fit or cannot run; "
                "released = the checkpoint's own precision")
    data = pd.DataFrame([{"model_quant": rn, "gpu": g, "gpus": counts[i, j]} for i, rn in enumerate(row_names)
                         for j, g in enumerate(cards)])
    return Chart("sizing_gpus_needed", fig, data, "Each cell: the fewest GPUs of that card that run the model.")


def only(table: pd.DataFrame, model: str | None) -> pd.DataFrame:
    """The rows of one model (its catalog key or the name as asked), or all rows."""
    if model is None:
        return table
    asked = table["model_asked"] if "model_asked" in table else table["model"]
    return table[(table["model"] == model) | (asked == model) | (table["model"] == _key(model, "model"))]


@styled
def memory_chart(plans: pd.DataFrame, model: str | None = None) -> Chart:
    """Memory per GPU by part for every plan that runs (of `model` only, when given), against the card's capacity
    (black tick)."""
    plans = only(plans, model)
    ok = plans[plans["plan"].notna() & (plans.get("max_concurrency", 0) > 0)].reset_index(drop=True)
    fig, axes = style.new_figure(width=min(16.0, max(7.0, 0.9 * len(ok) + 3.0)), height=5.0)
    ax = axes[0, 0]
    rows = []
    bottom = np.zeros(len(ok))
    for key, label, color in MEMORY_PARTS:
        values = ok[f"{key}_gb"].to_numpy(dtype=float)
        ax.bar(range(len(ok)), values, bottom=bottom, color=color, label=label, width=0.7)
        rows += [{"deployment": deployment_name(r), "part": key, "gb": v} for (_, r), v in zip(ok.iterrows(), values)]
        bottom += values
    ax.scatter(range(len(ok)), ok["capacity_gb"], marker="_", s=900, color="black", zorder=3)
    rows += [{"deployment": deployment_name(r), "part": "capacity", "gb": r["capacity_gb"]} for _, r in ok.iterrows()]
    names = [f"{r['model']}\n{r['quant']}, {int(r['gpus'])}x {r['gpu']}" for _, r in ok.iterrows()]
    ax.set_xticks(range(len(ok)), names, rotation=30 if len(ok) > 3 else 0, ha="right" if len(ok) > 3 else "center",
                  fontsize=7)
    ax.set_ylabel("GB per GPU")
    ax.set_ylim(0, max(1.0, float(ok["capacity_gb"].max() if len(ok) else 1)) * 1.1)
    if ok.empty:
        style.no_data(ax, "no plan runs")
    style.title(fig, "Memory per GPU by part, against the card's capacity",
                f"sizing prediction, {plans.attrs.get('workload', '')}")
    handles = [Line2D([], [], color=c, linewidth=8) for _, _, c in MEMORY_PARTS]
    handles.append(Line2D([], [], color="black", marker="_", markersize=14, linestyle="none"))
    style.legend_below(fig, handles, [lbl for _, lbl, _ in MEMORY_PARTS] + ["card capacity"])
    return Chart("sizing_memory", fig, pd.DataFrame(rows),
                 "Stacked: what each GPU holds; the black tick is what the card offers. The rest of the engine's "
                 "share goes to the KV cache pool.")


@styled
def sizing_throughput_chart(estimates: pd.DataFrame, model: str | None = None) -> Chart:
    """Tokens/s per request (1 / TPOT) and in aggregate against concurrency, one line per deployment (of `model`
    only, when given)."""
    estimates = only(estimates, model)
    looks = style.series_styles(estimates["deployment"])
    fig, axes = style.new_figure(1, 2, width=11.0, height=4.8)
    for ax, (key, label) in zip(axes[0], (("per_request_output_tokens_per_s", "output tokens/s per request"),
                                          ("output_tokens_per_s", "aggregate output tokens/s"))):
        for name, part in estimates.groupby("deployment", sort=False):
            ax.plot(part["concurrency"], part[key], marker="o", markersize=3.5, **looks[name])
        style.level_axis(ax, estimates["concurrency"], "concurrency (requests in flight)")
        ax.set_ylabel(label)
        ax.set_title(label)
        if key == "output_tokens_per_s":
            style.log_if_wide(ax, estimates[key])
        else:
            ax.set_ylim(bottom=0)
    style.title(fig, "Predicted output tokens/s against concurrency", f"sizing prediction, "
                f"{estimates.attrs.get('workload', '')}; at the listed GPU count")
    style.legend_below(fig, [Line2D([], [], marker="o", **look) for look in looks.values()], list(looks))
    data = estimates[["deployment", "concurrency", "per_request_output_tokens_per_s", "output_tokens_per_s"]]
    return Chart("sizing_throughput", fig, data.reset_index(drop=True),
                 "Per request falls and aggregate rises with concurrency until the KV cache or the engine's batch "
                 "limit caps the running requests; beyond that requests queue.")


@styled
def cost_chart(estimates: pd.DataFrame, model: str | None = None) -> Chart:
    """Cost per million output tokens against concurrency (deployments with a catalog price; of `model` only,
    when given)."""
    estimates = only(estimates, model)
    priced = estimates[estimates["cost_per_million_output_tokens_usd"].notna()]
    looks = style.series_styles(estimates["deployment"])
    fig, axes = style.new_figure(width=8.5, height=4.8)
    ax = axes[0, 0]
    for name, part in priced.groupby("deployment", sort=False):
        ax.plot(part["concurrency"], part["cost_per_million_output_tokens_usd"], marker="o", markersize=3.5,
                **looks[name])
    style.level_axis(ax, estimates["concurrency"], "concurrency (requests in flight)")
    ax.set_ylabel("USD per million output tokens")
    if priced.empty:
        style.no_data(ax, "no card in this selection has a price in the sizing catalog")
    else:
        style.log_if_wide(ax, priced["cost_per_million_output_tokens_usd"], ratio=10.0)
    style.title(fig, "Cost per million output tokens against concurrency",
                f"sizing prediction at catalog prices, {estimates.attrs.get('workload', '')}")
    names = list(dict.fromkeys(priced["deployment"]))
    style.legend_below(fig, [Line2D([], [], marker="o", **looks[n]) for n in names], names)
    return Chart("sizing_cost", fig, priced[["deployment", "concurrency", "cost_per_million_output_tokens_usd"]]
                 .reset_index(drop=True), "Price per hour of the GPUs / (aggregate tokens/s x 3600) x 1e6: "
                 "the busier the deployment, the cheaper each token.")

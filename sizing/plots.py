"""`sizing plot`: PNG charts drawn with matplotlib's headless Agg backend.

  gpus_needed.png  minimum GPUs per model x card (released precision; fp16 on cards without bf16)
  throughput.png   tokens/s per request and in total vs concurrency, one line per card
  memory.png       memory per GPU by part (weights, KV cache, activations, overhead) against the card's capacity
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sizing.errors import SizingError
from sizing.gpus import resolve_gpu
from sizing.models import resolve_model
from sizing.recommend import Request, build_plan
from sizing.result import Plan
from sizing.units import GB

DEFAULT_MODELS = ("qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "qwen2.5-32b-instruct", "qwen3-30b-a3b",
                  "llama-3.1-70b-instruct", "qwen2.5-72b-instruct", "qwen3-235b-a22b", "llama-3.1-405b-instruct",
                  "deepseek-r1")
DEFAULT_GPUS = ("t4", "v100-32g-sxm2", "rtx4090", "l40s", "a100-40g-sxm", "a100-80g-sxm", "h20", "h100-sxm", "h200",
                "b200", "mi300x")
THROUGHPUT_GPUS = ("l40s", "a100-80g-sxm", "h100-sxm", "h200", "mi300x")
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class PlotRequest:
    out_dir: str
    models: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    context_tokens: int | None = None
    input_len: int = 1024
    output_len: int = 512


def _plan(model: str, gpu: str, req: PlotRequest, concurrency: tuple[int, ...]) -> Plan:
    return build_plan(resolve_model(model), resolve_gpu(gpu),
                      Request(model=model, gpu=gpu, context_tokens=req.context_tokens, input_len=req.input_len,
                              output_len=req.output_len, concurrency=concurrency, alternatives=False))


def gpus_needed_chart(req: PlotRequest, path: str) -> str:
    models = req.models or DEFAULT_MODELS
    gpus = req.gpus or DEFAULT_GPUS
    counts = np.full((len(models), len(gpus)), np.nan)
    for i, model in enumerate(models):
        for j, gpu in enumerate(gpus):
            plan = _plan(model, gpu, req, (1,))
            if plan.fits:
                counts[i, j] = plan.gpus
    fig, ax = plt.subplots(figsize=(1.15 * len(gpus) + 3.5, 0.55 * len(models) + 2.2))
    shown = np.log2(np.where(np.isnan(counts), np.nan, counts))
    image = ax.imshow(np.ma.masked_invalid(shown), cmap="YlOrRd", aspect="auto", vmin=0, vmax=max(6.0, np.nanmax(shown)))
    for i in range(len(models)):
        for j in range(len(gpus)):
            value = counts[i, j]
            text = "n/a" if np.isnan(value) else f"{int(value)}"
            dark = not np.isnan(value) and shown[i, j] > 0.6 * max(6.0, np.nanmax(shown))
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(gpus)), [resolve_gpu(g).key for g in gpus], rotation=35, ha="right", fontsize=9)
    ax.set_yticks(range(len(models)), [resolve_model(m).key for m in models], fontsize=9)
    ax.set_title(f"Minimum GPUs (released precision; fp16 without bf16), one request of "
                 f"{req.input_len}+{req.output_len} tokens", fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("log2(GPUs)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def throughput_chart(req: PlotRequest, path: str) -> str:
    model = (req.models or ("qwen2.5-72b-instruct",))[0]
    gpus = req.gpus or THROUGHPUT_GPUS
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for gpu in gpus:
        plan = _plan(model, gpu, req, CONCURRENCY)
        if not plan.fits:
            continue
        conc = [e.concurrency for e in plan.evaluation.estimates]
        label = f"{plan.gpus}x {plan.evaluation.setup.gpu.key} ({plan.evaluation.setup.quant.key})"
        left.plot(conc, [e.per_request_output_tokens_per_s for e in plan.evaluation.estimates], marker="o", label=label)
        right.plot(conc, [e.output_tokens_per_s for e in plan.evaluation.estimates], marker="o", label=label)
    for ax, title in ((left, "per request"), (right, "all requests")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel("output tokens/s")
        ax.set_title(f"{resolve_model(model).key}: output tokens/s {title}", fontsize=10)
        ax.grid(True, alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle(f"{req.input_len} in + {req.output_len} out tokens per request; each card at the minimum count "
                 f"whose KV cache holds {CONCURRENCY[-1]} such requests", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def memory_chart(req: PlotRequest, path: str) -> str:
    model = (req.models or ("qwen2.5-72b-instruct",))[0]
    gpus = req.gpus or DEFAULT_GPUS
    labels, parts, capacity = [], [], []
    for gpu in gpus:
        plan = _plan(model, gpu, req, (1, 10, 100))
        if not plan.evaluation.support.ok:
            continue
        m = plan.evaluation.memory
        labels.append(f"{plan.evaluation.setup.gpu.key}\n{plan.gpus} GPU{'s' if plan.gpus > 1 else ''}"
                      + ("" if plan.fits else "\n(no fit)"))
        parts.append((m.weights_bytes / GB, m.kv_needed_bytes / GB, m.activation_bytes / GB, m.overhead_bytes / GB))
        capacity.append(m.capacity_bytes / GB)
    if not labels:
        raise SizingError("--gpu", f"--gpu: none of the cards can run {model}.")
    data = np.array(parts)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 * len(labels) + 2), 5))
    bottom = np.zeros(len(labels))
    for k, (name, color) in enumerate((("weights", "#4c72b0"), ("KV cache (100 requests)", "#dd8452"),
                                       ("activations", "#55a868"), ("overhead", "#8172b3"))):
        ax.bar(range(len(labels)), data[:, k], bottom=bottom, color=color, label=name)
        bottom += data[:, k]
    ax.scatter(range(len(labels)), capacity, marker="_", s=900, color="black", label="card capacity", zorder=3)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("GB per GPU")
    ax.set_title(f"{resolve_model(model).key}: memory per GPU at the minimum count for 100 requests of "
                 f"{req.input_len}+{req.output_len} tokens", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(req: PlotRequest) -> list[str]:
    """Draw the three charts into req.out_dir; returns the file paths."""
    try:
        os.makedirs(req.out_dir, exist_ok=True)
    except OSError as exc:
        raise SizingError("--out", f"--out: cannot create directory {req.out_dir!r} ({exc.strerror}).") from None
    return [gpus_needed_chart(req, os.path.join(req.out_dir, "gpus_needed.png")),
            throughput_chart(req, os.path.join(req.out_dir, "throughput.png")),
            memory_chart(req, os.path.join(req.out_dir, "memory.png"))]

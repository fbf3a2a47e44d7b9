"""`sizing plot`: the sizing charts, drawn by the project's one plotting module (`bench.report`), same look as
`bench report`:

  gpus_needed.png  minimum GPUs per model x card (released precision; fp16 on cards without bf16)
  throughput.png   tokens/s per request and in total vs concurrency, one line per deployment
  memory.png       memory per GPU by part (weights, KV cache, activations, overhead) against the card's capacity
  cost.png         cost per million output tokens vs concurrency (deployments whose card has a price)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from sizing.errors import SizingError

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


def write_plots(req: PlotRequest) -> list[str]:
    """Draw the charts into req.out_dir; returns the file paths (PNG)."""
    from bench.report.sizing_charts import (cost_chart, estimates_table, gpus_needed_chart, memory_chart, plans_table,
                                            sizing_throughput_chart)
    from bench.report.style import save

    try:
        os.makedirs(req.out_dir, exist_ok=True)
    except OSError as exc:
        raise SizingError("--out", f"--out: cannot create directory {req.out_dir!r} ({exc.strerror}).") from None
    shape = {"input_len": req.input_len, "output_len": req.output_len, "context_tokens": req.context_tokens}
    grid = plans_table(req.models or DEFAULT_MODELS, req.gpus or DEFAULT_GPUS, **shape)
    model = (req.models or ("qwen2.5-72b-instruct",))[0]
    one_model = plans_table((model,), req.gpus or THROUGHPUT_GPUS, **shape)
    if not one_model["fits"].any():
        raise SizingError("--gpu", f"--gpu: none of the cards can run {model}.")
    estimates = estimates_table(one_model[one_model["fits"]], CONCURRENCY)
    charts = [(gpus_needed_chart(grid), "gpus_needed"), (sizing_throughput_chart(estimates), "throughput"),
              (memory_chart(plans_table((model,), req.gpus or DEFAULT_GPUS, **shape)), "memory")]
    if estimates["cost_per_million_output_tokens_usd"].notna().any():
        charts.append((cost_chart(estimates), "cost"))
    out = Path(req.out_dir)
    return [str(save(replace(chart, name=name), out, ("png",))["png"]) for chart, name in charts]

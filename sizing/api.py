"""The stable library entry point for other tools (bench's simulated endpoint uses it).

    from sizing.api import plan
    p = plan("distill-qwen-32b", "v100-32g", gpus=4)
    p.fits, p.tp, p.memory_per_gpu_bytes, p.kv_capacity_tokens
    p.decode_step_s(batch_size=10, mean_context_tokens=1280.0)   # one decode step for the whole batch
    p.prefill_s(1024)                                            # compute-bound prefill incl. its floor
    p.to_dict()                                                  # what `sizing recommend --json` prints

Bad input raises sizing.errors.SizingError(flag, message).
"""

from __future__ import annotations

from sizing.errors import SizingError
from sizing.gpus import resolve_gpu
from sizing.models import resolve_model
from sizing.recommend import Request, build_plan
from sizing.result import Plan

__all__ = ["Plan", "SizingError", "plan"]


def plan(model: str, gpu: str, quant: str | None = None, gpus: int | None = None, context_tokens: int | None = None,
         input_len: int = 1024, output_len: int = 512) -> Plan:
    """Size `model` on `gpu`: the smallest fitting GPU count (or exactly `gpus`), its layout, memory and speed.

    `quant` None means the model's released precision (fp16 on cards without bf16); `context_tokens` None means
    min(8192, the model's limit). The KV target is one request of input_len + output_len tokens (concurrency 1)."""
    if gpus is not None and gpus < 1:
        raise SizingError("gpus", f"gpus must be at least 1, got {gpus}.")
    entry = resolve_model(model, flag="model")
    card = resolve_gpu(gpu, flag="gpu")
    request = Request(model=model, gpu=gpu, quant=quant, gpus=gpus, context_tokens=context_tokens,
                      input_len=input_len, output_len=output_len, concurrency=(1,), alternatives=False)
    return build_plan(entry, card, request)

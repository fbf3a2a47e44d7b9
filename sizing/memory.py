"""Memory per GPU under the engine's rule, and how many tokens of KV cache the deployment holds.

vLLM's rule (kv_rule = fraction_of_total), per GPU, all in bytes:
    budget      = capacity x gpu_memory_utilization                  (capacity: what the driver reports)
    fixed       = weights + activation peak + non-torch memory (CUDA graphs, NCCL buffers)
    KV pool     = budget - fixed
    KV tokens   = KV pool / KV bytes per token per GPU  x  KV shards (TP ranks under data-parallel attention)
TensorRT-LLM (fraction_of_free): KV pool = fraction x (capacity - fixed).
llama.cpp / transformers (on_demand): KV pool = capacity - fixed; only the KV in use is allocated.

A layout fits when fixed fits in the budget, the KV pool holds the target tokens (concurrency x (input + output)),
and it holds at least one sequence of the full context (vLLM refuses to start otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from sizing.engines import Engine
from sizing.geometry import Geometry
from sizing.gpus import Gpu


@dataclass(frozen=True)
class MemoryBreakdown:
    capacity_bytes: float          # per GPU, as the driver reports
    budget_bytes: float            # what the engine may use (capacity x fraction for vLLM)
    weights_bytes: float
    activation_bytes: float
    overhead_bytes: float          # non-torch: CUDA context/graphs, NCCL buffers
    kv_needed_bytes: float         # KV for the target tokens, per GPU
    kv_pool_bytes: float           # KV space the engine gives, per GPU (negative when the weights do not fit)
    kv_capacity_tokens: int        # the whole deployment
    target_tokens: int
    context_tokens: int
    reserved_bytes: float          # what nvidia-smi shows in use once the engine started
    fits: bool
    reason: str

    @property
    def starts(self) -> bool:
        """Weights, activations and overhead fit and the KV cache holds one full-context sequence."""
        return self.fixed_bytes <= self.budget_bytes and self.kv_capacity_tokens >= self.context_tokens

    @property
    def fixed_bytes(self) -> float:
        return self.weights_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def total_bytes(self) -> float:
        """What the target workload needs per GPU: weights + KV for the target + activations + overhead."""
        return self.fixed_bytes + self.kv_needed_bytes

    def as_dict(self) -> dict[str, int]:
        return {"weights": round(self.weights_bytes), "kv_cache": round(self.kv_needed_bytes),
                "activations": round(self.activation_bytes), "overhead": round(self.overhead_bytes),
                "total": round(self.total_bytes), "kv_cache_pool": round(max(self.kv_pool_bytes, 0.0)),
                "reserved": round(self.reserved_bytes), "capacity": round(self.capacity_bytes)}


def memory_per_gpu(geometry: Geometry, engine: Engine, gpu: Gpu, tp: int, vocab_size: int, prompt_tokens: int,
                   target_tokens: int, context_tokens: int, memory_fraction: float | None = None,
                   replicas: int = 1, max_num_seqs: int | None = None) -> MemoryBreakdown:
    """Memory of the binding GPU (the largest pipeline stage) and the deployment's KV capacity in tokens
    (`replicas` data-parallel copies each hold their share of the target)."""
    fraction = engine.memory_fraction if memory_fraction is None else memory_fraction
    capacity = float(gpu.memory_bytes)
    activation = engine.activation_bytes(vocab_size, gpu, prompt_tokens, max_num_seqs)
    overhead = engine.non_torch_bytes(tp)
    weights = geometry.weight_bytes_per_gpu
    fixed = weights + activation + overhead

    capacity_tokens: float | None = None
    pool_binding = 0.0
    for stage in geometry.stages:
        stage_fixed = stage.weight_bytes + activation + overhead
        if engine.kv_rule == "fraction_of_free":
            pool = fraction * (capacity - stage_fixed)
        else:                                   # fraction_of_total, on_demand (fraction 1)
            pool = capacity * fraction - stage_fixed
        tokens = pool / stage.kv_bytes_per_token * geometry.kv_shards if stage.kv_bytes_per_token > 0 else float("inf")
        if capacity_tokens is None or tokens < capacity_tokens:
            capacity_tokens, pool_binding = tokens, pool
    replica_tokens = max(0.0, capacity_tokens or 0.0)
    capacity_tokens = replica_tokens * replicas

    per_token = geometry.kv_bytes_per_token_per_gpu
    kv_needed = target_tokens / replicas * per_token / geometry.kv_shards
    if engine.kv_rule == "fraction_of_total":
        budget = capacity * fraction
        reserved = budget
    elif engine.kv_rule == "fraction_of_free":
        budget = capacity
        reserved = fixed + max(pool_binding, 0.0)
    else:
        budget = capacity * fraction
        reserved = fixed + kv_needed

    if fixed > budget:
        fits, reason = False, (f"weights, activations and overhead need {fixed / 1e9:.1f} GB per GPU but the engine "
                               f"may use {budget / 1e9:.1f} GB of the card's {capacity / 1e9:.1f} GB")
    elif replica_tokens < context_tokens:
        fits, reason = False, (f"the KV cache holds {int(replica_tokens):,} tokens, less than one sequence of the "
                               f"{context_tokens:,}-token context")
    elif capacity_tokens < target_tokens:
        fits, reason = False, (f"the KV cache holds {int(capacity_tokens):,} tokens but the target needs "
                               f"{target_tokens:,}")
    else:
        fits, reason = True, ""
    return MemoryBreakdown(
        capacity_bytes=capacity, budget_bytes=budget, weights_bytes=weights, activation_bytes=activation,
        overhead_bytes=overhead, kv_needed_bytes=kv_needed, kv_pool_bytes=pool_binding,
        kv_capacity_tokens=int(capacity_tokens), target_tokens=target_tokens, context_tokens=context_tokens,
        reserved_bytes=reserved, fits=fits, reason=reason)

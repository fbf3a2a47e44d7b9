"""The speed model: one decode step for the whole batch, and prefill (time to first token).

Decode step of stage s for a batch of b sequences with mean context c, on one GPU (units in the names):
  experts touched per MoE layer  E_t = E x (1 - (1 - k/E)^b)                  (all of them at large b)
  bytes      = dense_read_bytes + moe_layers x E_t x expert_bytes_each + b x c x kv_bytes_per_token / kv_shards
  flops      = 2 x b x matmul_params_per_token + b x c x attn_flops_per_ctx_token
  memory_s   = bytes / (bandwidth_bytes_per_s x bw_efficiency)
  compute_s  = matmul flops / (peak_flops_per_s[dtype] x compute_efficiency)
               + attention flops / (peak_flops_per_s[16 bit] x compute_efficiency)
               + weights dequantized x dequant_ops_per_weight / fp32_flops_per_s          (weight-only formats)
  comm_s     = layers x 2 collectives x (latency_s + 2 (t-1)/t x b x h x 2 bytes / (link_bytes_per_s x link_eff))
  floor_s    = layers x layer_floor_s + moe_layers x (moe_layer_floor_s + E_t / EP x expert_floor_s)
  stage_s    = max(memory_s, compute_s) + comm_s + floor_s
Whole step: stages run one after another for a token (llama.cpp layer split: sum of stages); engines that overlap
micro-batches across stages (vLLM PP) take pp x the slowest stage at ceil(b/pp) sequences. Stage boundaries add a
point-to-point send of b x h x 2 bytes each (over the network when the boundary crosses nodes).

Data-parallel replicas share the batch: each runs ceil(b / dp) sequences.
Prefill of P prompt tokens: the same terms with b = P tokens, attention coeff x P^2, every expert touched, plus the
engine's fixed time-to-first-token overhead (scheduling, tokenization, HTTP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sizing.engines import Interconnect
from sizing.factors import Factors
from sizing.geometry import Geometry, StageGeometry
from sizing.gpus import Gpu
from sizing.layout import Layout
from sizing.quants import Support


@dataclass(frozen=True)
class Link:
    latency_s: float
    bytes_per_s: float       # one direction, efficiency applied


@dataclass(frozen=True)
class StepBreakdown:
    memory_s: float
    compute_s: float
    comm_s: float
    floor_s: float
    total_s: float


def experts_touched(num_experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts a batch of `tokens` tokens routes to: E x (1 - (1 - k/E)^tokens)."""
    if num_experts == 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** max(tokens, 0.0))


def make_link(gpu: Gpu, interconnects: dict[str, Interconnect], cross_node: bool) -> Link:
    """The link a collective uses: the card's interconnect inside a node, the network between nodes."""
    net = interconnects["network"]
    if cross_node:
        return Link(net.latency_s, (net.bandwidth_bytes_per_s or 50e9) * net.efficiency)
    local = interconnects.get(gpu.interconnect_kind, interconnects["pcie"])
    bidirectional = gpu.interconnect_bytes_per_s or 32e9
    return Link(local.latency_s, bidirectional / 2 * local.efficiency)


@dataclass(frozen=True)
class PerfModel:
    """Pure time model of one deployment; built once, called many times."""

    geometry: Geometry
    layout: Layout
    factors: Factors
    bandwidth_bytes_per_s: float
    matmul_flops_per_s: float
    attention_flops_per_s: float
    fp32_flops_per_s: float
    weight_only: bool
    pipeline_overlap: bool
    tp_link: Link
    pp_links: tuple[Link, ...]          # one per stage boundary

    # -- one stage ---------------------------------------------------------------------------------------------
    def _collective_s(self, tokens: float, moe_layer: bool) -> float:
        t = self.layout.tp
        if t <= 1:
            return 0.0
        h = self.geometry.hidden_size * self.geometry.activation_bytes_per_value
        if self.layout.dp_attention and moe_layer:
            per_rank = tokens / t * 2 * h   # all-to-all dispatch or combine of this rank's tokens (top-k folded in)
            return self.tp_link.latency_s + per_rank * (t - 1) / t / self.tp_link.bytes_per_s
        return self.tp_link.latency_s + 2 * (t - 1) / t * tokens * h / self.tp_link.bytes_per_s

    def _stage(self, s: StageGeometry, tokens: float, kv_read_bytes: float, attn_flops: float) -> StepBreakdown:
        f = self.factors
        touched = experts_touched(s.num_experts, s.experts_per_token, tokens)
        weight_bytes = s.dense_read_bytes + s.num_moe_layers * touched * s.expert_bytes_each
        memory_s = (weight_bytes + kv_read_bytes) / (self.bandwidth_bytes_per_s * f.bw_efficiency)
        compute_s = (2 * tokens * s.matmul_params_per_token / (self.matmul_flops_per_s * f.compute_efficiency)
                     + attn_flops / (self.attention_flops_per_s * f.compute_efficiency))
        if self.weight_only:
            dequant_params = s.dense_read_params + s.num_moe_layers * touched * s.expert_params_each
            compute_s += dequant_params * f.dequant_ops_per_weight / self.fp32_flops_per_s
        dense_layers = s.num_layers - s.num_moe_layers
        comm_s = 2 * (dense_layers * self._collective_s(tokens, False)
                      + s.num_moe_layers * self._collective_s(tokens, True))
        expert_gemms = touched / max(self.layout.ep, 1)      # EP spreads the touched experts over the ranks
        floor_s = (s.num_layers * f.layer_floor_s
                   + s.num_moe_layers * (f.moe_layer_floor_s + expert_gemms * f.expert_floor_s))
        return StepBreakdown(memory_s, compute_s, comm_s, floor_s, max(memory_s, compute_s) + comm_s + floor_s)

    def _boundaries_s(self, tokens: float) -> float:
        h = self.geometry.hidden_size * self.geometry.activation_bytes_per_value
        return sum(link.latency_s + tokens * h / link.bytes_per_s for link in self.pp_links)

    # -- decode ------------------------------------------------------------------------------------------------
    def decode_breakdown(self, batch_size: int, mean_context_tokens: float) -> StepBreakdown:
        """One decode step for `batch_size` sequences (spread over the DP replicas), split into its terms."""
        b = math.ceil(max(1, int(batch_size)) / self.layout.dp)
        pp = self.layout.pp
        micro = math.ceil(b / pp) if (self.pipeline_overlap and pp > 1) else b
        parts = []
        for s in self.geometry.stages:
            kv = micro * mean_context_tokens * s.kv_bytes_per_token / self.geometry.kv_shards
            attn = micro * mean_context_tokens * s.attn_flops_per_ctx_token
            parts.append(self._stage(s, micro, kv, attn))
        if self.pipeline_overlap and pp > 1:
            slowest = max(parts, key=lambda p: p.total_s)
            parts = [slowest] * pp
        boundaries = self._boundaries_s(micro)
        return StepBreakdown(memory_s=sum(p.memory_s for p in parts), compute_s=sum(p.compute_s for p in parts),
                             comm_s=sum(p.comm_s for p in parts) + boundaries, floor_s=sum(p.floor_s for p in parts),
                             total_s=sum(p.total_s for p in parts) + boundaries)

    def decode_step_s(self, batch_size: int, mean_context_tokens: float) -> float:
        """Seconds for one decode step that gives every one of `batch_size` sequences its next token."""
        return self.decode_breakdown(batch_size, mean_context_tokens).total_s

    # -- prefill -----------------------------------------------------------------------------------------------
    def prefill_s(self, prompt_tokens: int) -> float:
        """Time to first token of one `prompt_tokens` prompt on an idle deployment: compute-bound forward pass over
        the prompt, its per-layer floors and communication, plus the engine's fixed TTFT overhead."""
        p = max(1, int(prompt_tokens))
        total = 0.0
        for s in self.geometry.stages:
            total += self._stage(s, p, 0.0, s.prefill_attn_coeff * p * p).total_s
        return total + self._boundaries_s(p) + self.factors.ttft_overhead_s

    def prefill_compute_s(self, tokens: float, prompt_tokens: int) -> float:
        """Extra time `tokens` prompt tokens (from prompts of `prompt_tokens`) add when chunked into decode steps:
        their matmul and attention FLOPs only (the weights are read by the decode step anyway)."""
        if tokens <= 0:
            return 0.0
        tokens = tokens / self.layout.dp
        f = self.factors
        total = 0.0
        for s in self.geometry.stages:
            total += (2 * tokens * s.matmul_params_per_token / (self.matmul_flops_per_s * f.compute_efficiency)
                      + tokens * prompt_tokens * s.prefill_attn_coeff / (self.attention_flops_per_s * f.compute_efficiency))
        return total


def compute_rate_flops_per_s(gpu: Gpu, support: Support) -> float:
    """Dense peak for the matmul input type on this card."""
    if support.compute == "fp8" and gpu.fp8_flops_per_s:
        return gpu.fp8_flops_per_s
    if support.compute == "int8" and gpu.int8_ops_per_s:
        return gpu.int8_ops_per_s
    return gpu.half_flops_per_s


def pp_boundary_links(gpu: Gpu, layout: Layout, interconnects: dict[str, Interconnect]) -> tuple[Link, ...]:
    """GPUs are placed stage by stage; a boundary whose two stages sit on different nodes uses the network."""
    links = []
    for boundary in range(1, layout.pp):
        last_gpu_before = boundary * layout.tp - 1
        first_gpu_after = boundary * layout.tp
        cross = last_gpu_before // gpu.gpus_per_node != first_gpu_after // gpu.gpus_per_node
        links.append(make_link(gpu, interconnects, cross))
    return tuple(links)


def build_perf_model(geometry: Geometry, gpu: Gpu, layout: Layout, support: Support, factors: Factors,
                     pipeline_overlap: bool, interconnects: dict[str, Interconnect]) -> PerfModel:
    return PerfModel(
        geometry=geometry, layout=layout, factors=factors,
        bandwidth_bytes_per_s=gpu.mem_bandwidth_bytes_per_s,
        matmul_flops_per_s=compute_rate_flops_per_s(gpu, support),
        attention_flops_per_s=gpu.half_flops_per_s,
        fp32_flops_per_s=gpu.fp32_flops_per_s,
        weight_only=support.mode == "weight_only",
        pipeline_overlap=pipeline_overlap,
        tp_link=make_link(gpu, interconnects, cross_node=layout.tp > gpu.gpus_per_node),
        pp_links=pp_boundary_links(gpu, layout, interconnects))

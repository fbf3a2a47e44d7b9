"""What one GPU of a layout holds and reads: bytes, FLOPs and KV-cache bytes per pipeline stage.

Per GPU of stage s (TP ranks t, attention TP t_a = 1 with data-parallel attention else t, q = bytes per quantized
weight, e = bytes per embedding/router/norm weight: 2 for AWQ/GPTQ/FP8/INT8, q for GGUF and 16-bit):

  resident weights   = sum over the stage's layers of [attention/t_a + replicated attention + dense MLP/t
                       + E experts/t + shared experts/t] x q + (router + norms) x e
                       + embedding/t x e (first stage) + lm_head/t x e (last stage)
  dense bytes read per decode step = the same without the routed experts and the embedding
  one routed expert on this GPU  = 3 x h x I_e x q / t   (EP spreads whole experts: same bytes on average)
  KV bytes per token = sum over layers of 2 x K_rank x d x kv_bytes          (GQA; K_rank = K / t, at least 1)
                                        or (kv_lora + rope) x kv_bytes       (MLA: replicated on every TP rank)
  decode matmul params per token = sum of active linear params / t (+ the lm_head's V x h / t on the last stage)
  attention FLOPs per token per context token = 4 x H x d / t per layer (GQA),
                                               2 x H x (2 x kv_lora + rope) / t per layer (MLA, absorbed)
  prefill attention FLOPs = coeff x P^2 with coeff = 2 x H x d / t (GQA) or H x (nope + rope + v) / t (MLA) per layer
"""

from __future__ import annotations

from dataclasses import dataclass

from sizing.arch import ModelArch
from sizing.layout import Layout
from sizing.params import ParamCounts
from sizing.quants import Quant


@dataclass(frozen=True)
class StageGeometry:
    num_layers: int
    num_moe_layers: int
    weight_bytes: float                  # resident on one GPU of this stage
    dense_read_bytes: float              # non-expert weights read per decode step, one GPU
    dense_read_params: float             # the same, in parameters (for dequantization work)
    expert_bytes_each: float             # one routed expert's share on one GPU
    expert_params_each: float
    num_experts: int
    experts_per_token: int
    kv_bytes_per_token: float            # one GPU, this stage's layers
    matmul_params_per_token: float       # one GPU
    attn_flops_per_ctx_token: float      # decode, one GPU, per token per context token
    prefill_attn_coeff: float            # one GPU: prefill attention FLOPs = coeff x P^2


@dataclass(frozen=True)
class Geometry:
    stages: tuple[StageGeometry, ...]
    kv_shards: int                       # independent KV pools in a TP group: TP with data-parallel attention, else 1
    hidden_size: int
    activation_bytes_per_value: float    # 2: activations travel between GPUs in 16 bit

    @property
    def weight_bytes_per_gpu(self) -> float:
        """The largest stage: the GPU that must fit."""
        return max(s.weight_bytes for s in self.stages)

    @property
    def kv_bytes_per_token_per_gpu(self) -> float:
        return max(s.kv_bytes_per_token for s in self.stages)


def stage_layer_ranges(num_layers: int, pp: int) -> list[range]:
    """vLLM's split: L // pp layers each, the remainder added to the stages before the last."""
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    ranges, start = [], 0
    for size in sizes:
        ranges.append(range(start, start + size))
        start += size
    return ranges


def build_geometry(arch: ModelArch, params: ParamCounts, quant: Quant, kv_value_bytes: float,
                   layout: Layout) -> Geometry:
    """Per-stage bytes and FLOPs for one GPU; pure arithmetic on the catalog records."""
    q = quant.bytes_per_weight
    e = q if quant.applies_to == "all" else 2.0
    t = layout.tp
    t_attn = 1 if layout.dp_attention else t
    stages: list[StageGeometry] = []
    ranges = stage_layer_ranges(arch.num_layers, layout.pp)
    for index, layer_range in enumerate(ranges):
        weight = dense_read = dense_params = matmul = attn_flops = prefill_coeff = kv = 0.0
        expert_each = expert_params = 0.0
        n_moe = n_experts = top_k = 0
        for i in layer_range:
            p = params.layers[i]
            linear_dense = p.attention / t_attn + p.attention_replicated + p.dense_mlp / t + p.shared_experts / t
            small = p.router + p.norms
            weight += linear_dense * q + p.expert_each * p.num_experts / t * q + small * e
            dense_read += linear_dense * q + small * e
            dense_params += linear_dense
            replicated = p.attention_replicated + p.router
            matmul += (p.linear_active - replicated) / t + (replicated / t if layout.dp_attention else replicated)
            if p.num_experts:
                n_moe += 1
                expert_each, expert_params = p.expert_each * q / t, p.expert_each / t
                n_experts, top_k = p.num_experts, p.experts_per_token
            if arch.mla is not None:
                m = arch.mla
                kv += (m.kv_lora_rank + m.qk_rope_head_dim) * kv_value_bytes
                attn_flops += 2 * arch.num_heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim) / t
                prefill_coeff += arch.num_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) / t
            else:
                kv_heads = arch.num_kv_heads if layout.dp_attention else max(1, arch.num_kv_heads // t)
                kv += 2 * kv_heads * arch.head_dim * kv_value_bytes
                attn_flops += 4 * arch.num_heads * arch.head_dim / t
                prefill_coeff += 2 * arch.num_heads * arch.head_dim / t
        if index == 0:
            weight += params.embedding / t * e
        if index == len(ranges) - 1:
            head = params.vocab_hidden / t * e
            if params.lm_head or layout.pp > 1:   # tied embeddings are stored again on the last stage under PP
                weight += head
            weight += params.final_norm * e
            dense_read += head
            matmul += params.vocab_hidden / t
        stages.append(StageGeometry(
            num_layers=len(layer_range), num_moe_layers=n_moe, weight_bytes=weight, dense_read_bytes=dense_read,
            dense_read_params=dense_params, expert_bytes_each=expert_each, expert_params_each=expert_params,
            num_experts=n_experts, experts_per_token=top_k, kv_bytes_per_token=kv, matmul_params_per_token=matmul,
            attn_flops_per_ctx_token=attn_flops, prefill_attn_coeff=prefill_coeff))
    return Geometry(stages=tuple(stages), kv_shards=t if layout.dp_attention else 1,
                    hidden_size=arch.hidden_size, activation_bytes_per_value=2.0)

"""Parallel layouts: tensor (TP), pipeline (PP), expert (EP) parallelism and which are valid for a model on a card.

Rules (vLLM unless the engine says otherwise):
  - TP must divide the attention heads; with fewer KV heads than TP ranks, TP must be a multiple of the KV heads
    (each rank then holds one replicated KV head).
  - TP stays inside one node (GPUs per node) unless the engine runs TP across nodes (SGLang's TP16/TP32 examples);
    PP spans nodes.
  - Group-quantized weights (AWQ/GPTQ, group 128) need every TP shard of the MLP/expert input dimension to be a
    multiple of the group: intermediate / TP % 128 == 0 (Qwen2.5-72B: 29568 / 8 = 3696 -> TP8 invalid).
    With expert parallelism the experts are not split, so only the dense MLP is checked.
  - MoE models use EP = TP (whole experts per rank, vLLM --enable-expert-parallel).
  - llama.cpp splits layers across cards (TP = 1, PP = number of GPUs).
  - Data-parallel replicas (DP, vLLM --data-parallel-size) run DP copies of a TP x PP layout; only used when a
    GPU count is given (more GPUs than the minimum), never by the minimum search.
GPUs in a layout = TP x PP x DP.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizing.arch import ModelArch
from sizing.engines import Engine
from sizing.gpus import Gpu
from sizing.quants import Quant

GROUP_SIZE = 128


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    ep: int = 1
    dp_attention: bool = False   # attention data-parallel across the TP group (SGLang/TRT-LLM for DeepSeek)
    dp: int = 1                  # independent replicas of the TP x PP layout

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def as_dict(self) -> dict[str, int | bool]:
        return {"tp": self.tp, "pp": self.pp, "ep": self.ep, "dp": self.dp, "dp_attention": self.dp_attention}


def layout_problem(arch: ModelArch, quant: Quant, gpu: Gpu, engine: Engine, layout: Layout) -> str | None:
    """None when `layout` is valid, else the reason it is not."""
    tp, pp = layout.tp, layout.pp
    if tp < 1 or pp < 1 or layout.dp < 1:
        return "TP, PP and DP must be at least 1"
    if engine.layer_split_only and tp != 1:
        return f"{engine.name} splits layers across GPUs (no tensor parallelism)"
    if pp > arch.num_layers:
        return f"PP {pp} exceeds the {arch.num_layers} layers"
    if pp > 1 and not engine.supports_pp:
        return f"{engine.name} has no pipeline parallelism here"
    if arch.num_heads % tp:
        return f"TP {tp} does not divide the {arch.num_heads} attention heads"
    if arch.mla is None:
        kv = arch.num_kv_heads
        if (tp <= kv and kv % tp) or (tp > kv and tp % kv):
            return f"TP {tp} does not split the {kv} KV heads evenly"
    if tp > gpu.gpus_per_node and not engine.tp_across_nodes:
        return f"TP {tp} exceeds the {gpu.gpus_per_node} GPUs in a node (TP stays inside a node; PP spans nodes)"
    if quant.is_group_quantized and tp > 1:
        has_dense_mlp = any(not arch.layer_is_moe(i) for i in range(arch.num_layers))
        if has_dense_mlp and arch.intermediate_size % (tp * GROUP_SIZE):
            return (f"{quant.key} groups of {GROUP_SIZE} do not split evenly over TP {tp} "
                    f"(intermediate {arch.intermediate_size} / {tp} = {arch.intermediate_size / tp:g})")
        if arch.moe is not None and layout.ep == 1 and arch.moe.expert_intermediate_size % (tp * GROUP_SIZE):
            return f"{quant.key} expert shards are not a multiple of {GROUP_SIZE} at TP {tp}"
    return None


def candidate_layouts(arch: ModelArch, quant: Quant, gpu: Gpu, engine: Engine, gpus: int,
                      replicas: bool = False) -> list[Layout]:
    """Valid layouts using exactly `gpus` GPUs, preferred first: one replica, larger TP (bandwidths add), smaller PP;
    with `replicas`, also DP copies of smaller layouts."""
    layouts: list[Layout] = []
    for dp in [d for d in range(1, gpus + 1) if gpus % d == 0] if replicas else [1]:
        per_replica = gpus // dp
        for tp in sorted((t for t in range(1, per_replica + 1) if per_replica % t == 0), reverse=True):
            ep = tp if arch.is_moe and tp > 1 else 1
            layout = Layout(tp=tp, pp=per_replica // tp, ep=ep, dp=dp)
            if layout_problem(arch, quant, gpu, engine, layout) is None:
                layouts.append(layout)
    return layouts

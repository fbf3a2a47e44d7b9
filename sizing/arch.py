"""A model's architecture, read from the keys of a Hugging Face config.json.

One parser serves both the built-in catalog (whose entries store config.json keys verbatim) and a user's
`--model path/to/config.json`. Supported shapes: dense GQA/MHA decoders (Llama, Qwen2/2.5, Qwen3, Mistral, ...),
MoE decoders (Qwen3-MoE, Qwen2-MoE, Mixtral-style) and DeepSeek-V2/V3 (MLA attention + MoE with dense first layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sizing.errors import SizingError

# model_type values whose q/k/v projections carry a bias even though config.json has no attention_bias key
_QKV_BIAS_TYPES = {"qwen2", "qwen2_moe"}
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp16", "bf16": "bf16", "fp16": "fp16"}
_QUANT_METHODS = {"fp8": "fp8", "awq": "awq", "gptq": "gptq-int4", "compressed-tensors": "fp8"}


@dataclass(frozen=True)
class MoeSpec:
    num_experts: int                 # routed experts per MoE layer (E)
    experts_per_token: int           # top-k
    expert_intermediate_size: int    # per routed expert
    num_shared_experts: int          # always-on experts (DeepSeek: 1)
    shared_intermediate_size: int    # per shared expert
    dense_layer_indices: tuple[int, ...]  # layers with a plain MLP instead of experts


@dataclass(frozen=True)
class MlaSpec:
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ModelArch:
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    max_context_tokens: int
    released_dtype: str              # bf16 | fp16 | fp8 | awq | gptq-int4 (from torch_dtype / quantization_config)
    moe: MoeSpec | None = None
    mla: MlaSpec | None = None
    mtp_layers: int = 0              # DeepSeek multi-token-prediction layers: in the checkpoint, not loaded to serve

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def layer_is_moe(self, index: int) -> bool:
        return self.moe is not None and index not in self.moe.dense_layer_indices

    @property
    def num_moe_layers(self) -> int:
        return sum(1 for i in range(self.num_layers) if self.layer_is_moe(i))


def _need(config: dict[str, Any], key: str, where: str) -> Any:
    if key not in config or config[key] is None:
        raise SizingError("--model", f"--model: {where} has no {key!r}, which sizing needs; give a Hugging Face "
                                     f"config.json of a decoder-only language model.")
    return config[key]


def _int(config: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = config.get(key, default)
    return None if value is None else int(value)


def _released_dtype(config: dict[str, Any]) -> str:
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method in _QUANT_METHODS:
        if method == "gptq" and int(quant.get("bits", 4)) == 8:
            return "int8-w8a16"
        return _QUANT_METHODS[method]
    return _DTYPES.get(str(config.get("torch_dtype", "bfloat16")).lower(), "bf16")


def _scaled_context(config: dict[str, Any], max_position: int) -> int:
    """vLLM's derived max model length: YaRN gives original_max_position_embeddings x factor; other scalings
    (linear, dynamic) multiply max_position_embeddings; llama3/longrope are already in max_position_embeddings."""
    scaling = config.get("rope_scaling") or {}
    kind = str(scaling.get("rope_type", scaling.get("type", ""))).lower()
    factor = scaling.get("factor")
    if not kind or not factor or kind in ("su", "longrope", "llama3", "default", "mrope"):
        return max_position
    if kind == "yarn":
        return int(int(scaling.get("original_max_position_embeddings") or max_position) * float(factor))
    return int(max_position * float(factor))


def arch_from_config(raw: dict[str, Any], where: str = "config.json") -> ModelArch:
    """Parse config.json keys into a ModelArch; `where` names the file in error messages.

    Multimodal configs that nest the language model under `text_config` are read from there.
    """
    config = dict(raw.get("text_config") or {}, **{k: v for k, v in raw.items() if k != "text_config"}) \
        if "text_config" in raw and "hidden_size" not in raw else dict(raw)
    model_type = str(config.get("model_type", "unknown"))
    hidden = int(_need(config, "hidden_size", where))
    layers = int(_need(config, "num_hidden_layers", where))
    heads = int(_need(config, "num_attention_heads", where))
    kv_heads = _int(config, "num_key_value_heads") or heads
    head_dim = _int(config, "head_dim") or hidden // heads
    vocab = int(_need(config, "vocab_size", where))
    max_ctx = _int(config, "max_position_embeddings") or _int(config, "max_sequence_length") or _int(config, "seq_length")
    if not max_ctx:
        raise SizingError("--model", f"--model: {where} has no 'max_position_embeddings', so the context limit is "
                                     f"unknown; add it to the config.json.")
    max_ctx = _scaled_context(config, int(max_ctx))

    mla = None
    if config.get("kv_lora_rank"):
        mla = MlaSpec(q_lora_rank=_int(config, "q_lora_rank"), kv_lora_rank=int(config["kv_lora_rank"]),
                      qk_nope_head_dim=int(_need(config, "qk_nope_head_dim", where)),
                      qk_rope_head_dim=int(_need(config, "qk_rope_head_dim", where)),
                      v_head_dim=int(_need(config, "v_head_dim", where)))

    num_experts = _int(config, "n_routed_experts") or _int(config, "num_experts") or _int(config, "num_local_experts")
    moe = None
    intermediate = _int(config, "intermediate_size")
    if num_experts:
        top_k = int(_need(config, "num_experts_per_tok", where))
        expert_inter = _int(config, "moe_intermediate_size") or intermediate
        if not expert_inter:
            raise SizingError("--model", f"--model: {where} describes experts but has no 'moe_intermediate_size'.")
        n_shared = _int(config, "n_shared_experts", 0) or 0
        shared_inter = expert_inter
        if not n_shared and _int(config, "shared_expert_intermediate_size"):
            n_shared, shared_inter = 1, int(config["shared_expert_intermediate_size"])
        dense = set(range(_int(config, "first_k_dense_replace", 0) or 0))
        dense |= {int(i) for i in (config.get("mlp_only_layers") or [])}
        step = _int(config, "decoder_sparse_step", 1) or 1
        freq = _int(config, "moe_layer_freq", 1) or 1
        for i in range(layers):
            if i not in dense and ((i + 1) % step != 0 if step > 1 else False):
                dense.add(i)
            if i not in dense and freq > 1 and i % freq != 0:
                dense.add(i)
        moe = MoeSpec(num_experts=num_experts, experts_per_token=top_k, expert_intermediate_size=expert_inter,
                      num_shared_experts=n_shared, shared_intermediate_size=shared_inter,
                      dense_layer_indices=tuple(sorted(dense)))
        if dense and not intermediate:
            raise SizingError("--model", f"--model: {where} has dense layers but no 'intermediate_size'.")
    elif not intermediate:
        raise SizingError("--model", f"--model: {where} has no 'intermediate_size', which sizing needs.")

    bias = config.get("attention_bias")
    return ModelArch(
        model_type=model_type, hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
        head_dim=head_dim, intermediate_size=int(intermediate or 0), vocab_size=vocab,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(bias) if bias is not None else model_type in _QKV_BIAS_TYPES,
        qk_norm=model_type in {"qwen3", "qwen3_moe"},
        max_context_tokens=int(max_ctx), released_dtype=_released_dtype(config),
        moe=moe, mla=mla, mtp_layers=_int(config, "num_nextn_predict_layers", 0) or 0,
    )

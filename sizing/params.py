"""Parameter counts computed from the architecture, split by where the weights live and how they are sharded.

Per decoder layer (h = hidden, H = heads, K = kv heads, d = head_dim, I = intermediate, E = routed experts,
I_e = expert intermediate, V = vocab):

  GQA attention      q: h*H*d, k and v: h*K*d each, o: H*d*h  (+ q/k/v biases H*d + 2*K*d for Qwen2)
  MLA attention      replicated: h*(q_lora + kv_lora + rope)  (q_a and kv_a projections, one copy per TP rank)
                     sharded:    q_lora*H*(nope+rope) + kv_lora*H*(nope+v) + H*v*h
                     (no q_lora: h*H*(nope+rope) sharded instead of the q_a/q_b pair)
  dense MLP          3*h*I (gate, up, down)
  MoE layer          router h*E (replicated) + E experts of 3*h*I_e + shared experts 3*h*I_shared
  norms              2*h per layer (+ MLA latent norms, + Qwen3 q/k norms), replicated
  model              embedding V*h, lm_head V*h unless tied, final norm h

Active parameters per token = total - (E - top_k) routed experts in every MoE layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizing.arch import ModelArch


@dataclass(frozen=True)
class LayerParams:
    """One decoder layer's parameters, by kind. `attention` is split over TP ranks; `attention_replicated`,
    `norms` and `router` are copied on every rank; `expert_each` is one routed expert."""

    attention: int
    attention_replicated: int
    norms: int
    dense_mlp: int
    router: int
    expert_each: int
    num_experts: int
    experts_per_token: int
    shared_experts: int

    @property
    def total(self) -> int:
        return (self.attention + self.attention_replicated + self.norms + self.dense_mlp + self.router
                + self.expert_each * self.num_experts + self.shared_experts)

    @property
    def active(self) -> int:
        return self.total - self.expert_each * (self.num_experts - self.experts_per_token)

    @property
    def linear_active(self) -> int:
        """Parameters that take part in a matmul for one token (norms excluded)."""
        return self.active - self.norms


@dataclass(frozen=True)
class ParamCounts:
    layers: tuple[LayerParams, ...]
    embedding: int
    lm_head: int          # 0 when tied to the embedding (the matmul still reads the embedding matrix)
    final_norm: int
    vocab_hidden: int     # V*h: what the lm_head matmul reads whether tied or not

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.final_norm + sum(layer.total for layer in self.layers)

    @property
    def active(self) -> int:
        return self.embedding + self.lm_head + self.final_norm + sum(layer.active for layer in self.layers)

    @property
    def matmul_params_per_token(self) -> int:
        """Parameters multiplied per generated token: active layer weights + the lm_head (embedding lookup excluded).
        Decode FLOPs per token = 2 x this."""
        return sum(layer.linear_active for layer in self.layers) + self.vocab_hidden

    @property
    def routed_expert_params(self) -> int:
        return sum(layer.expert_each * layer.num_experts for layer in self.layers)


def _attention(arch: ModelArch) -> tuple[int, int, int]:
    """(sharded, replicated, extra norm) attention parameters of one layer."""
    h, heads = arch.hidden_size, arch.num_heads
    if arch.mla is not None:
        m = arch.mla
        qk_dim = m.qk_nope_head_dim + m.qk_rope_head_dim
        replicated = h * (m.kv_lora_rank + m.qk_rope_head_dim)
        norms = m.kv_lora_rank
        if m.q_lora_rank:
            replicated += h * m.q_lora_rank
            norms += m.q_lora_rank
            sharded = m.q_lora_rank * heads * qk_dim
        else:
            sharded = h * heads * qk_dim
        sharded += m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim) + heads * m.v_head_dim * h
        return sharded, replicated, norms
    d, kv = arch.head_dim, arch.num_kv_heads
    sharded = h * heads * d + 2 * h * kv * d + heads * d * h
    if arch.attention_bias:
        sharded += heads * d + 2 * kv * d
    norms = 2 * d if arch.qk_norm else 0
    return sharded, 0, norms


def count_params(arch: ModelArch) -> ParamCounts:
    """Parameter counts of the served model (DeepSeek's MTP layers are not served and not counted)."""
    h = arch.hidden_size
    attn, attn_rep, attn_norms = _attention(arch)
    layers = []
    for i in range(arch.num_layers):
        norms = 2 * h + attn_norms
        if arch.layer_is_moe(i):
            moe = arch.moe
            layers.append(LayerParams(
                attention=attn, attention_replicated=attn_rep, norms=norms, dense_mlp=0,
                router=h * moe.num_experts, expert_each=3 * h * moe.expert_intermediate_size,
                num_experts=moe.num_experts, experts_per_token=moe.experts_per_token,
                shared_experts=moe.num_shared_experts * 3 * h * moe.shared_intermediate_size))
        else:
            layers.append(LayerParams(
                attention=attn, attention_replicated=attn_rep, norms=norms, dense_mlp=3 * h * arch.intermediate_size,
                router=0, expert_each=0, num_experts=0, experts_per_token=0, shared_experts=0))
    vh = arch.vocab_size * h
    return ParamCounts(layers=tuple(layers), embedding=vh, lm_head=0 if arch.tie_word_embeddings else vh,
                       final_norm=h, vocab_hidden=vh)

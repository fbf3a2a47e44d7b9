"""Serving-engine behaviour (sizing/data/engines.json): memory rule, batch limits, layout rules, interconnect priors.

Memory rules (per GPU):
  fraction_of_total (vLLM, SGLang):  KV space = capacity x fraction - weights - activation peak - non-torch memory
  fraction_of_free (TensorRT-LLM):    KV space = fraction x (capacity - weights - activation peak - non-torch memory)
  on_demand (llama.cpp, transformers): KV space = capacity - weights - activations - overhead, allocated as needed
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sizing.datafiles import read_json
from sizing.errors import SizingError
from sizing.gpus import Gpu
from sizing.units import GiB


@dataclass(frozen=True)
class Engine:
    key: str
    name: str
    kv_rule: str
    memory_fraction: float
    max_num_seqs_large: int
    max_num_seqs_small: int
    activation_kind: str               # sampler | prompt_logits
    activation_bytes_per_row_vocab: float
    activation_rows: int | None        # fixed rows; None = max_num_seqs
    non_torch_bytes_tp1: float
    non_torch_bytes_tp_multi: float
    supports_pp: bool
    tp_across_nodes: bool
    pipeline_overlap: bool
    layer_split_only: bool
    supports_dp: bool                  # data-parallel replicas behind one server (vLLM --data-parallel-size)
    factors_key: str                   # whose fitted speed factors apply (SGLang uses vLLM's)
    launch: str                        # vllm | llama.cpp | ''
    sources: tuple[str, ...]

    def max_num_seqs(self, gpu: Gpu) -> int:
        """vLLM's rule: the large default on cards with >= 70 GiB that are not A100s."""
        large = gpu.memory_bytes >= 70 * GiB and "a100" not in gpu.key
        return self.max_num_seqs_large if large else self.max_num_seqs_small

    def activation_bytes(self, vocab_size: int, gpu: Gpu, prompt_tokens: int, max_num_seqs: int | None = None) -> float:
        """Activation peak per GPU: sampler = bytes_per_row_vocab x rows x vocab (rows = max_num_seqs for vLLM);
        prompt_logits = 4 x prompt x vocab."""
        if self.activation_kind == "prompt_logits":
            return self.activation_bytes_per_row_vocab * prompt_tokens * vocab_size
        rows = self.activation_rows if self.activation_rows is not None else (max_num_seqs or self.max_num_seqs(gpu))
        return self.activation_bytes_per_row_vocab * rows * vocab_size

    def non_torch_bytes(self, tp: int) -> float:
        return self.non_torch_bytes_tp1 if tp <= 1 else self.non_torch_bytes_tp_multi


@dataclass(frozen=True)
class Interconnect:
    kind: str
    latency_s: float
    efficiency: float
    bandwidth_bytes_per_s: float | None   # only for 'network' (per GPU between nodes)
    source: str


def _merged(engines: dict[str, Any], key: str) -> dict[str, Any]:
    spec = dict(engines[key])
    parent = spec.get("inherits")
    if parent:
        base = _merged(engines, parent)
        base.update(spec)
        spec = base
    return spec


@lru_cache(maxsize=1)
def load_engines() -> dict[str, Engine]:
    engines = read_json("engines.json")["engines"]
    out: dict[str, Engine] = {}
    for key in engines:
        s = _merged(engines, key)
        act = s["activation"]
        out[key] = Engine(
            key=key, name=engines[key].get("name", s["name"]), kv_rule=s["kv_rule"],
            memory_fraction=float(s["memory_fraction"]),
            max_num_seqs_large=int(s["max_num_seqs_large"]), max_num_seqs_small=int(s["max_num_seqs_small"]),
            activation_kind=act["kind"],
            activation_bytes_per_row_vocab=float(act.get("bytes_per_seq_vocab", act.get("bytes_per_token_vocab", 0))),
            activation_rows=act.get("rows"),
            non_torch_bytes_tp1=float(s["non_torch_bytes_tp1"]), non_torch_bytes_tp_multi=float(s["non_torch_bytes_tp_multi"]),
            supports_pp=bool(s["supports_pp"]), tp_across_nodes=bool(s["tp_across_nodes"]),
            pipeline_overlap=bool(s["pipeline_overlap"]), layer_split_only=bool(s["layer_split_only"]),
            supports_dp=bool(s.get("supports_dp", False)),
            factors_key=engines[key].get("inherits_factors", key), launch=s.get("launch", ""),
            sources=tuple(v for k, v in s.items() if k.endswith("_source")))
    return out


@lru_cache(maxsize=1)
def load_interconnects() -> dict[str, Interconnect]:
    raw = read_json("engines.json")["interconnects"]
    return {k: Interconnect(kind=k, latency_s=float(v["latency_s"]), efficiency=float(v["efficiency"]),
                            bandwidth_bytes_per_s=v.get("bandwidth_bytes_per_s"), source=v["source"])
            for k, v in raw.items()}


def resolve_engine(name: str, flag: str = "--engine") -> Engine:
    engines = load_engines()
    key = name.strip().lower().replace("tensorrt-llm", "trtllm").replace("llamacpp", "llama.cpp")
    if key in engines:
        return engines[key]
    close = difflib.get_close_matches(key, list(engines), n=1, cutoff=0.4)
    hint = f" (closest: {close[0]})" if close else ""
    raise SizingError(flag, f"{flag}: unknown engine {name!r}{hint}; valid: {', '.join(engines)}.")

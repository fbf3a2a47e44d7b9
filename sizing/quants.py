"""Weight quantizations and KV-cache dtypes (sizing/data/quants.csv, kv_dtypes.csv), and which cards can run which.

Bytes per parameter: `bits_per_weight / 8`, applied to every tensor (`applies_to=all`, GGUF file averages) or only to
the transformer's linear layers (`applies_to=linear`: AWQ/GPTQ/FP8/INT8 keep embeddings, lm_head, norms and the MoE
router in 16 bit). Group-quantized formats include their scales: AWQ/GPTQ int4 g128 = 4 + 16/128 + 4/128 = 4.156 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sizing.arch import ModelArch
from sizing.datafiles import optional_float, read_csv
from sizing.errors import SizingError
from sizing.gpus import Gpu
from sizing.names import build_index, resolve


@dataclass(frozen=True)
class Quant:
    key: str
    name: str
    aliases: tuple[str, ...]
    weight_format: str          # bf16 fp16 fp8 int8 int4 gguf
    bits_per_weight: float      # effective, scales and zeros included
    applies_to: str             # all | linear
    compute: str                # bf16 fp16 fp8 int8 16bit (= the card's 16-bit type after dequantization)
    native_requires: str        # '', 'bf16', 'fp8', 'int8': the tensor-core type the native path needs
    weight_only_min_cc: float | None  # NVIDIA compute capability the weight-only kernel needs
    vendors: tuple[str, ...]
    engine: str                 # vllm | llama.cpp
    models: tuple[str, ...]     # model_type restriction, ('*',) for any
    source: str
    confidence: str
    notes: str

    @property
    def bytes_per_weight(self) -> float:
        return self.bits_per_weight / 8.0

    @property
    def is_group_quantized(self) -> bool:
        return self.key in {"awq", "gptq-int4", "int8-w8a16"}

    @property
    def is_gguf(self) -> bool:
        return self.weight_format == "gguf"


@dataclass(frozen=True)
class KvDtype:
    key: str
    bytes_per_value: float | None   # None: 'auto' = the activation dtype (2 bytes)
    requires: str
    min_cc: float | None
    vendors: tuple[str, ...]
    source: str
    notes: str

    def value_bytes(self) -> float:
        return 2.0 if self.bytes_per_value is None else self.bytes_per_value


@dataclass(frozen=True)
class Support:
    """Whether `quant` runs on a card, and how: 'native' (the card computes in that type), 'weight_only'
    (weights are stored quantized and dequantized to the card's 16-bit type inside the matmul), or not at all."""

    ok: bool
    mode: str          # native | weight_only | unsupported
    compute: str       # bf16 | fp16 | fp8 | int8 : the matmul input type on this card
    reason: str


@lru_cache(maxsize=1)
def load_quants() -> tuple[Quant, ...]:
    rows = read_csv("quants.csv")
    return tuple(Quant(
        key=r["key"], name=r["name"], aliases=tuple(a for a in r["aliases"].split(";") if a),
        weight_format=r["weight_format"], bits_per_weight=float(r["bits_per_weight"]), applies_to=r["applies_to"],
        compute=r["compute"], native_requires=r["native_requires"],
        weight_only_min_cc=optional_float(r["weight_only_min_cc"]), vendors=tuple(r["vendors"].split(";")),
        engine=r["engine"], models=tuple(r["models"].split(";")), source=r["source"], confidence=r["confidence"],
        notes=r["notes"]) for r in rows)


@lru_cache(maxsize=1)
def load_kv_dtypes() -> tuple[KvDtype, ...]:
    return tuple(KvDtype(key=r["key"], bytes_per_value=optional_float(r["bytes_per_value"]), requires=r["requires"],
                         min_cc=optional_float(r["min_cc"]), vendors=tuple(r["vendors"].split(";")),
                         source=r["source"], notes=r["notes"]) for r in read_csv("kv_dtypes.csv"))


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    return build_index((q.key, q.aliases) for q in load_quants())


def resolve_quant(name: str, flag: str = "--quant") -> Quant:
    key = resolve(name, _index(), "quantization", flag, "sizing quants")
    return next(q for q in load_quants() if q.key == key)


def resolve_kv_dtype(name: str, flag: str = "--kv-cache-dtype") -> KvDtype:
    for kv in load_kv_dtypes():
        if kv.key == name.strip().lower():
            return kv
    valid = ", ".join(kv.key for kv in load_kv_dtypes())
    raise SizingError(flag, f"{flag}: unknown KV-cache dtype {name!r}; valid: {valid}.")


def applies_to_model(quant: Quant, arch: ModelArch) -> bool:
    return "*" in quant.models or arch.model_type in quant.models


def _cc(gpu: Gpu) -> str:
    return f"compute capability {gpu.compute_capability:.1f}" if gpu.compute_capability else gpu.vendor


def quant_support(quant: Quant, gpu: Gpu) -> Support:
    """Can `gpu` run `quant`, and in which mode. Pure: decides from the two catalog records."""
    sixteen = gpu.activation_dtype
    if gpu.vendor not in quant.vendors:
        return Support(False, "unsupported", sixteen, f"{quant.key} has no kernels for {gpu.name} ({gpu.vendor})")
    if quant.native_requires == "bf16":
        if gpu.has_bf16:
            return Support(True, "native", "bf16", "")
        return Support(False, "unsupported", "fp16",
                       f"{gpu.name} has no bf16 ({_cc(gpu)}); use fp16, which has the same size")
    if quant.compute == "fp16":
        return Support(True, "native", "fp16", "")
    if quant.native_requires == "fp8":
        if gpu.fp8_flops_per_s is not None:
            return Support(True, "native", "fp8", "")
        if gpu.vendor == "nvidia" and gpu.compute_capability is not None and quant.weight_only_min_cc is not None \
                and gpu.compute_capability >= quant.weight_only_min_cc:
            return Support(True, "weight_only", sixteen,
                           f"{gpu.name} has no fp8 compute, so fp8 weights are dequantized to {sixteen} "
                           f"inside the matmul (weight-only Marlin kernel)")
        return Support(False, "unsupported", sixteen,
                       f"fp8 needs fp8 tensor cores (compute capability 8.9+: Ada, Hopper, Blackwell) or, as "
                       f"weight-only Marlin, 8.0+ (Ampere); {gpu.name} is {_cc(gpu)}")
    if quant.native_requires == "int8":
        if gpu.int8_ops_per_s is not None:
            return Support(True, "native", "int8", "")
        return Support(False, "unsupported", sixteen,
                       f"int8 W8A8 needs int8 tensor cores (compute capability 7.5+); {gpu.name} has none; "
                       f"int8-w8a16 (GPTQ-Int8) runs there")
    # weight-only formats: AWQ, GPTQ, GGUF
    if gpu.vendor == "nvidia" and quant.weight_only_min_cc is not None and gpu.compute_capability is not None \
            and gpu.compute_capability < quant.weight_only_min_cc:
        return Support(False, "unsupported", sixteen,
                       f"{quant.key} kernels need compute capability {quant.weight_only_min_cc:.1f}+; "
                       f"{gpu.name} is {_cc(gpu)}")
    return Support(True, "weight_only", sixteen, "")


def kv_support(kv: KvDtype, gpu: Gpu) -> str | None:
    """None if `gpu` can hold a KV cache in `kv`, else the reason it cannot."""
    if gpu.vendor not in kv.vendors:
        return f"KV cache dtype {kv.key} is not available on {gpu.name}"
    if kv.requires == "bf16" and not gpu.has_bf16:
        return f"{gpu.name} has no bf16; use --kv-cache-dtype fp16"
    if kv.min_cc is not None and gpu.vendor == "nvidia" and gpu.compute_capability is not None \
            and gpu.compute_capability < kv.min_cc:
        return f"KV cache dtype {kv.key} needs compute capability {kv.min_cc:.1f}+; {gpu.name} is {_cc(gpu)}"
    return None

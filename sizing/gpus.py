"""The GPU catalog (sizing/data/gpus.csv): one frozen record per card, every number with its unit in its name.

Memory is kept twice: the marketing size (`memory_marketing_gb`, e.g. 80) and the capacity the driver reports
(`memory_bytes`, e.g. 81559 MiB = 85.52e9 bytes for an H100), which is what the fit rule uses.
Throughputs are dense (not sparse) datasheet peaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from sizing.datafiles import optional_float, read_csv
from sizing.names import build_index, normalize, resolve
from sizing.units import MiB

TERA = 1e12


@dataclass(frozen=True)
class Gpu:
    key: str
    name: str
    vendor: str                      # nvidia | amd | huawei
    family: str                      # volta, turing, ampere, ada, hopper, blackwell, cdna3, ascend
    form_factor: str
    compute_capability: float | None  # NVIDIA only, e.g. 8.0
    memory_marketing_gb: float
    memory_bytes: int                # what the driver reports (nvidia-smi total)
    memory_source: str
    mem_bandwidth_bytes_per_s: float
    bf16_flops_per_s: float | None   # None: no bf16
    fp16_flops_per_s: float
    fp8_flops_per_s: float | None    # None: no fp8 tensor cores
    int8_ops_per_s: float | None     # None: no int8 tensor cores
    fp32_flops_per_s: float          # CUDA-core (non-tensor) rate, used for dequantization work
    interconnect: str
    interconnect_kind: str           # nvlink | pcie | xgmi | hccs
    interconnect_bytes_per_s: float | None  # bidirectional, per GPU
    gpus_per_node: int
    tdp_w: float | None
    price_per_hour_usd: float | None
    price_source: str
    aliases: tuple[str, ...]
    source: str
    confidence: str
    notes: str

    @property
    def has_bf16(self) -> bool:
        return self.bf16_flops_per_s is not None

    @property
    def activation_dtype(self) -> str:
        """The 16-bit type this card computes in: bf16 where supported, else fp16 (V100, T4)."""
        return "bf16" if self.has_bf16 else "fp16"

    @property
    def half_flops_per_s(self) -> float:
        """Dense 16-bit tensor rate used for 16-bit matmuls."""
        return self.bf16_flops_per_s if self.bf16_flops_per_s is not None else self.fp16_flops_per_s

    def with_price(self, price_per_hour_usd: float | None, source: str = "given on the command line") -> Gpu:
        return replace(self, price_per_hour_usd=price_per_hour_usd, price_source=source)


def _tflops(text: str) -> float | None:
    value = optional_float(text)
    return None if value is None else value * TERA


def gpu_from_row(row: dict[str, str]) -> Gpu:
    """One gpus.csv row -> Gpu (TFLOPS -> FLOP/s, GB/s -> bytes/s, MiB -> bytes)."""
    cc = optional_float(row["compute_capability"])
    interconnect_gbps = optional_float(row["interconnect_gbps"])
    return Gpu(
        key=row["key"], name=row["name"], vendor=row["vendor"], family=row["family"], form_factor=row["form_factor"],
        compute_capability=cc,
        memory_marketing_gb=float(row["memory_gb"]),
        memory_bytes=int(float(row["memory_mib"]) * MiB),
        memory_source=row["memory_source"],
        mem_bandwidth_bytes_per_s=float(row["mem_bw_gbps"]) * 1e9,
        bf16_flops_per_s=_tflops(row["bf16_tflops"]),
        fp16_flops_per_s=float(row["fp16_tflops"]) * TERA,
        fp8_flops_per_s=_tflops(row["fp8_tflops"]),
        int8_ops_per_s=_tflops(row["int8_tops"]),
        fp32_flops_per_s=float(row["fp32_tflops"]) * TERA,
        interconnect=row["interconnect"], interconnect_kind=row["interconnect_kind"],
        interconnect_bytes_per_s=None if interconnect_gbps is None else interconnect_gbps * 1e9,
        gpus_per_node=int(row["gpus_per_node"]),
        tdp_w=optional_float(row["tdp_w"]),
        price_per_hour_usd=optional_float(row["price_usd_per_hour"]),
        price_source=row["price_source"],
        aliases=tuple(a for a in row["aliases"].split(";") if a),
        source=row["source"], confidence=row["confidence"], notes=row["notes"],
    )


@lru_cache(maxsize=1)
def load_gpus() -> tuple[Gpu, ...]:
    """Every card in sizing/data/gpus.csv, in file order."""
    return tuple(gpu_from_row(row) for row in read_csv("gpus.csv"))


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    return build_index((gpu.key, gpu.aliases) for gpu in load_gpus())


def resolve_gpu(name: str, flag: str = "--gpu") -> Gpu:
    """The catalog card for a key or alias ('a100-40g', 'h20', '4090'); SizingError with closest names otherwise."""
    key = resolve(name, _index(), "GPU", flag, "sizing gpus")
    return next(gpu for gpu in load_gpus() if gpu.key == key)


def match_device_name(name: str) -> Gpu | None:
    """The catalog card a driver calls `name`, or None.

    NVML and torch.cuda.get_device_name() say 'NVIDIA H100 80GB HBM3', 'Tesla V100-SXM2-32GB', 'NVIDIA A100 80GB
    PCIe', 'NVIDIA A100-SXM4-40GB': vendor prefixes go, '80GB' becomes '80g' and a trailing memory type ('HBM3')
    is dropped before the name is looked up among the catalog's keys and aliases."""
    text = normalize(name)
    candidates = [text, re.sub(r"(\d+)gb\b", r"\1g", text)]
    candidates.append(re.sub(r"-hbm\d?e?$", "", candidates[-1]))
    index = _index()
    for candidate in candidates:
        if candidate in index:
            return next(gpu for gpu in load_gpus() if gpu.key == index[candidate])
    return None

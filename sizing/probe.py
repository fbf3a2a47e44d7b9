"""`sizing probe`: what this GPU really does, measured with PyTorch (the optional `torch` extra).

  memory bandwidth   dst.copy_(src) of N bytes reads N and writes N bytes:  bandwidth_bytes_per_s = 2 N / t
  matmul rate        C = A @ B with n x n operands is 2 n^3 FLOPs:          flops_per_s = 2 n^3 / t
                     for bf16 and fp16 (torch.matmul), and fp8 e4m3 (torch._scaled_mm, per-tensor scales, bf16
                     output) on compute capability 8.9+ (Ada, Hopper, Blackwell)
Timing: `warmup` untimed rounds, then `repeats` rounds, each `inner` back-to-back launches between two CUDA events
(device time, not host time); t = median over rounds / inner. Defaults: 4 GiB copies (shrunk to a quarter of the
free memory when less is free), 8192^3 matmuls, 5 warm-up rounds, 20 timed rounds.

Without PyTorch or without a CUDA device there is nothing to measure: `probe()` returns the reason as a string and
the CLI prints it and exits 0. The torch module is a parameter, so the timing logic is tested with a fake one.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sizing.units import GiB, MiB

NO_GPU = "no CUDA GPU: nothing to probe"


@dataclass(frozen=True)
class ProbeConfig:
    copy_bytes: int = 4 * GiB
    matmul_n: int = 8192
    warmup: int = 5
    repeats: int = 20
    copy_inner: int = 2          # launches per timed round
    matmul_inner: int = 10


def copy_bytes_moved(nbytes: int) -> int:
    """A device-to-device copy of `nbytes` reads them and writes them."""
    return 2 * nbytes


def matmul_flops(n: int) -> int:
    """n x n times n x n: n^2 outputs, each n multiply-adds = 2 n^3 FLOPs."""
    return 2 * n ** 3


def median(values: list[float] | tuple[float, ...]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


@dataclass(frozen=True)
class Measurement:
    name: str                    # copy | bf16 | fp16 | fp8
    work_per_launch: float       # bytes moved (copy) or FLOPs (matmul) by one launch
    inner: int                   # launches per timed round
    samples_s: tuple[float, ...]  # device seconds of each timed round

    @property
    def seconds_per_launch(self) -> float:
        return median(self.samples_s) / self.inner

    @property
    def rate_per_s(self) -> float:
        return self.work_per_launch / self.seconds_per_launch


@dataclass(frozen=True)
class ProbeResult:
    device_name: str
    capability: tuple[int, int]
    torch_version: str
    cuda_version: str | None
    config: ProbeConfig
    copy_bytes: int              # the copy size actually used
    measurements: tuple[Measurement, ...]
    notes: tuple[str, ...]

    def rate(self, name: str) -> float | None:
        return next((m.rate_per_s for m in self.measurements if m.name == name), None)

    def measured(self) -> dict[str, float | None]:
        """The rates under the catalog's names (units in the keys)."""
        return {"mem_bandwidth_bytes_per_s": self.rate("copy"), "bf16_flops_per_s": self.rate("bf16"),
                "fp16_flops_per_s": self.rate("fp16"), "fp8_flops_per_s": self.rate("fp8")}

    def details(self, measured_at: str) -> dict[str, Any]:
        """How it was measured, for the profile's card.probe section."""
        return {"device_name": self.device_name, "compute_capability": list(self.capability),
                "torch": self.torch_version, "cuda": self.cuda_version, "measured_at": measured_at,
                "method": "CUDA events around back-to-back launches; median of the timed rounds",
                "copy_bytes": self.copy_bytes, "copy_counts": "bytes read + bytes written (2 x copy_bytes)",
                "matmul_n": self.config.matmul_n, "warmup_rounds": self.config.warmup,
                "timed_rounds": self.config.repeats,
                "samples_s": {m.name: [float(f"{s:.6g}") for s in m.samples_s] for m in self.measurements},
                "inner_launches": {m.name: m.inner for m in self.measurements}, "notes": list(self.notes)}


# -- the torch part ------------------------------------------------------------------------------------------------
def import_torch() -> tuple[Any, str | None]:
    """(torch, None) or (None, why there is nothing to probe)."""
    try:
        import torch  # the optional `torch` extra
    except ImportError:
        return None, f"{NO_GPU} (PyTorch is not installed; `pip install 'gpucap[torch]'` adds it)"
    try:
        available = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001 - a broken driver is "no GPU" here
        return None, f"{NO_GPU} (torch.cuda failed: {exc.__class__.__name__}: {exc})"
    if not available:
        return None, f"{NO_GPU} (PyTorch {torch.__version__} sees no CUDA device)"
    return torch, None


def time_rounds(torch: Any, launch, inner: int, warmup: int, repeats: int) -> tuple[float, ...]:
    """Device seconds of `repeats` rounds of `inner` launches, after `warmup` untimed rounds."""
    for _ in range(warmup * inner):
        launch()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            launch()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)   # elapsed_time() is in milliseconds
    return tuple(samples)


def _copy_size(torch: Any, wanted: int) -> int:
    free, _total = torch.cuda.mem_get_info()
    size = min(wanted, free // 4)                      # two buffers, and room for the matmuls afterwards
    return max(MiB, size - size % MiB)


def _fp8_launch(torch: Any, a: Any, b: Any):
    """A launch of an fp8 e4m3 matmul with unit per-tensor scales (bf16 output), or None where unsupported."""
    if not (hasattr(torch, "float8_e4m3fn") and hasattr(torch, "_scaled_mm")):
        return None
    a8 = a.to(torch.float8_e4m3fn)
    b8 = b.to(torch.float8_e4m3fn).t().contiguous().t()  # _scaled_mm wants its second operand column-major
    one = torch.ones((), device="cuda", dtype=torch.float32)

    def launch():
        out = torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        return out[0] if isinstance(out, tuple) else out   # torch < 2.4 returned (out, amax)

    return launch


def _measure_copy(torch: Any, size: int, config: ProbeConfig) -> Measurement:
    """Copy `size` bytes between two device buffers (freed on return)."""
    src = torch.empty(size, dtype=torch.uint8, device="cuda")
    dst = torch.empty(size, dtype=torch.uint8, device="cuda")
    src.fill_(1)
    samples = time_rounds(torch, lambda: dst.copy_(src), config.copy_inner, config.warmup, config.repeats)
    return Measurement("copy", copy_bytes_moved(size), config.copy_inner, samples)


def probe(torch: Any, config: ProbeConfig = ProbeConfig()) -> ProbeResult:
    """Measure device 0. `torch` is the torch module (or a stand-in with the same calls)."""
    device = torch.cuda.current_device()
    capability = tuple(torch.cuda.get_device_capability(device))
    notes: list[str] = []
    measurements: list[Measurement] = []
    size = _copy_size(torch, config.copy_bytes)
    if size < config.copy_bytes:
        notes.append(f"copy size reduced to {size / GiB:.2f} GiB (a quarter of the free memory)")
    measurements.append(_measure_copy(torch, size, config))
    n = config.matmul_n
    flops = matmul_flops(n)
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        c = torch.empty(n, n, device="cuda", dtype=dtype)
        samples = time_rounds(torch, lambda a=a, b=b, c=c: torch.matmul(a, b, out=c), config.matmul_inner,
                              config.warmup, config.repeats)
        measurements.append(Measurement(name, flops, config.matmul_inner, samples))
    if capability >= (8, 9):
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        try:
            launch = _fp8_launch(torch, a, b)
            if launch is None:
                notes.append("fp8 not measured: this PyTorch has no float8_e4m3fn/_scaled_mm")
            else:
                launch()
                samples = time_rounds(torch, launch, config.matmul_inner, config.warmup, config.repeats)
                measurements.append(Measurement("fp8", flops, config.matmul_inner, samples))
        except Exception as exc:  # noqa: BLE001 - an unsupported kernel is a note, the other numbers stand
            notes.append(f"fp8 not measured: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}")
    else:
        notes.append(f"fp8 not measured: compute capability {capability[0]}.{capability[1]} has no fp8 tensor "
                     f"cores (8.9+ does)")
    torch.cuda.synchronize()
    return ProbeResult(device_name=str(torch.cuda.get_device_name(device)), capability=capability,  # type: ignore[arg-type]
                       torch_version=str(torch.__version__), cuda_version=getattr(torch.version, "cuda", None),
                       config=config, copy_bytes=size, measurements=tuple(measurements), notes=tuple(notes))

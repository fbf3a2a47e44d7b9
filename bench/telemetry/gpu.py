"""GPU readings through NVML (the `pynvml` module of nvidia-ml-py), one call per field, errors kept per field.

Units, as NVML gives them or converted here:
- memory: bytes (nvmlDeviceGetMemoryInfo v1: used = total - free, driver-reserved memory included, the same figure
  as `torch.cuda.mem_get_info` total - free);
- utilisation: percent of the last sample period the GPU (or its memory controller) was busy;
- power: watts (NVML reports milliwatts);
- temperature: degrees Celsius; SM clock: MHz;
- per-process memory: bytes, None where NVML cannot tell (some containers, MIG, Windows WDDM).

The module is a parameter so that tests can hand in a fake with the same API; nothing else touches NVML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

GPU_FIELDS = ("mem_used_bytes", "mem_total_bytes", "util_pct", "mem_util_pct", "power_w", "temp_c", "sm_clock_mhz")

# NVML return codes (nvml.h); read from the module when it has them so a fake can use its own.
_REASONS = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": (12, "NVML library not found (no NVIDIA driver)"),
    "NVML_ERROR_DRIVER_NOT_LOADED": (9, "NVIDIA driver not loaded"),
    "NVML_ERROR_NO_PERMISSION": (4, "no permission to query NVML"),
    "NVML_ERROR_NOT_SUPPORTED": (3, "not supported on this GPU"),
    "NVML_ERROR_GPU_IS_LOST": (15, "GPU is lost (fallen off the bus or driver reset)"),
    "NVML_ERROR_FUNCTION_NOT_FOUND": (13, "not available in this driver's NVML"),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (18, "NVML library and kernel driver versions differ (reboot needed?)"),
    "NVML_ERROR_TIMEOUT": (10, "NVML timed out"),
    "NVML_ERROR_UNINITIALIZED": (1, "NVML not initialised"),
}


def _code(nvml: Any, name: str) -> int:
    return int(getattr(nvml, name, _REASONS[name][0]))


def nvml_reason(nvml: Any, err: BaseException) -> str:
    """A human reason for an NVML error, without calling back into a library that may not be there."""
    value = getattr(err, "value", None)
    for name, (_, text) in _REASONS.items():
        if value == _code(nvml, name):
            return text
    return f"NVML error {value}" if value is not None else f"{type(err).__name__}: {err}"


@dataclass(frozen=True)
class GpuProcess:
    """One compute process on one GPU at one tick; mem_bytes None when NVML cannot tell."""

    gpu: int
    pid: int
    mem_bytes: int | None


class _Gpu:
    def __init__(self, index: int, handle: Any, name: str | None, uuid: str | None):
        self.index = index
        self.handle = handle
        self.name = name
        self.uuid = uuid
        self.lost = False
        self.silent = False  # stopped answering (not lost): noted once, until it answers again
        self.unsupported: set[str] = set()
        self.noted: set[str] = set()


class GpuReader:
    """Reads the chosen GPUs each tick: `read()` -> ({column: value or None}, [GpuProcess])."""

    def __init__(self, nvml: Any, gpus: list[_Gpu], note: Callable[[str], None]):
        self._nvml = nvml
        self._gpus = gpus
        self._note = note

    # -- opening -----------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, nvml: Any, wanted: tuple[int, ...] | None, note: Callable[[str], None]) -> GpuReader | None:
        """Initialise NVML and pick the GPUs; None (after one note saying why) when there is nothing to read."""
        if nvml is None:
            try:
                import pynvml as nvml  # noqa: PLC0415 - optional at run time, faked in tests
            except ImportError:
                note("GPU telemetry skipped: nvidia-ml-py (pynvml) is not installed")
                return None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as err:
            note(f"GPU telemetry skipped: {nvml_reason(nvml, err)}")
            return None
        except OSError as err:  # a broken libnvidia-ml.so can fail in ctypes before pynvml maps it
            note(f"GPU telemetry skipped: NVML could not be loaded ({err})")
            return None
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as err:
            _shutdown(nvml)
            note(f"GPU telemetry skipped: cannot count GPUs ({nvml_reason(nvml, err)})")
            return None
        if count == 0:
            _shutdown(nvml)
            note("GPU telemetry skipped: NVML sees no NVIDIA GPU")
            return None
        indices = list(range(count)) if wanted is None else list(dict.fromkeys(wanted))
        missing = [i for i in indices if i >= count]
        if missing:
            note(f"GPU telemetry: --gpus {','.join(map(str, missing))} not present "
                 f"(NVML sees {count} GPU{'s' if count > 1 else ''}: 0..{count - 1}); skipped")
        gpus = []
        for i in (i for i in indices if i < count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
            except nvml.NVMLError as err:
                note(f"GPU telemetry: GPU {i} skipped ({nvml_reason(nvml, err)})")
                continue
            gpus.append(_Gpu(i, handle, _text(nvml, "nvmlDeviceGetName", handle),
                             _text(nvml, "nvmlDeviceGetUUID", handle)))
        if not gpus:
            _shutdown(nvml)
            note("GPU telemetry skipped: none of the chosen GPUs can be read")
            return None
        return cls(nvml, gpus, note)

    # -- what it writes ----------------------------------------------------------------------------------------
    @property
    def indices(self) -> list[int]:
        return [g.index for g in self._gpus]

    def describe(self) -> list[dict]:
        return [{"index": g.index, "name": g.name, "uuid": g.uuid} for g in self._gpus]

    def columns(self) -> list[str]:
        cols = [f"gpu{g.index}_{f}" for g in self._gpus for f in GPU_FIELDS]
        return cols + ["gpu_mem_used_bytes_total"]

    # -- reading -----------------------------------------------------------------------------------------------
    def read(self) -> tuple[dict[str, float | int | None], list[GpuProcess]]:
        row: dict[str, float | int | None] = {}
        procs: list[GpuProcess] = []
        for g in self._gpus:
            values, gprocs = self._read_one(g)
            row.update({f"gpu{g.index}_{k}": v for k, v in values.items()})
            procs.extend(gprocs)
        used = [row[f"gpu{g.index}_mem_used_bytes"] for g in self._gpus]
        # A total over the GPUs that answered would show a drop that did not happen: all or nothing.
        row["gpu_mem_used_bytes_total"] = None if any(u is None for u in used) else sum(used)  # type: ignore[arg-type]
        return row, procs

    def _read_one(self, g: _Gpu) -> tuple[dict[str, float | int | None], list[GpuProcess]]:
        values: dict[str, float | int | None] = dict.fromkeys(GPU_FIELDS)
        if g.lost:
            return values, []
        nvml = self._nvml
        # Memory first: when it fails the GPU is treated as gone for this tick (one note, not one per field).
        try:
            mem = nvml.nvmlDeviceGetMemoryInfo(g.handle)
        except nvml.NVMLError as err:
            if err.value == _code(nvml, "NVML_ERROR_GPU_IS_LOST"):
                g.lost = True
                self._note(f"GPU {g.index} lost mid-run ({nvml_reason(nvml, err)}); its columns stay empty from here")
            elif not g.silent:
                g.silent = True
                if "silent" not in g.noted:  # one note per GPU per run, however often it flaps
                    g.noted.add("silent")
                    self._note(f"GPU {g.index} stopped answering ({nvml_reason(nvml, err)}); its columns are "
                               "empty while it does")
            return values, []
        if g.silent:
            g.silent = False
            if "answering" not in g.noted:
                g.noted.add("answering")
                self._note(f"GPU {g.index} answering again")
        values["mem_used_bytes"] = int(mem.used)
        values["mem_total_bytes"] = int(mem.total)
        util = self._call(g, "utilization", nvml.nvmlDeviceGetUtilizationRates, g.handle)
        if util is not None:
            values["util_pct"] = float(util.gpu)
            values["mem_util_pct"] = float(util.memory)
        power_mw = self._call(g, "power", nvml.nvmlDeviceGetPowerUsage, g.handle)
        values["power_w"] = None if power_mw is None else power_mw / 1000.0
        temp = self._call(g, "temperature", nvml.nvmlDeviceGetTemperature, g.handle,
                          getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        values["temp_c"] = None if temp is None else float(temp)
        clock = self._call(g, "SM clock", nvml.nvmlDeviceGetClockInfo, g.handle, getattr(nvml, "NVML_CLOCK_SM", 1))
        values["sm_clock_mhz"] = None if clock is None else float(clock)
        plist = self._call(g, "process list", nvml.nvmlDeviceGetComputeRunningProcesses, g.handle) or []
        procs = [GpuProcess(g.index, int(p.pid), _proc_mem(p)) for p in plist]
        return values, procs

    def _call(self, g: _Gpu, field: str, fn: Callable, *args: Any) -> Any:
        """One NVML call; an error leaves that field empty and is noted once per GPU and field."""
        if field in g.unsupported:
            return None
        nvml = self._nvml
        try:
            return fn(*args)
        except nvml.NVMLError as err:
            if err.value == _code(nvml, "NVML_ERROR_NOT_SUPPORTED"):
                g.unsupported.add(field)  # permanent: stop asking
            if field not in g.noted:
                g.noted.add(field)
                self._note(f"GPU {g.index} {field}: {nvml_reason(nvml, err)}; column left empty")
            return None

    def close(self) -> None:
        _shutdown(self._nvml)


def _proc_mem(p: Any) -> int | None:
    mem = getattr(p, "usedGpuMemory", None)
    # pynvml maps NVML_VALUE_NOT_AVAILABLE to None; a raw binding may hand back the 2**64 - 1 sentinel.
    if mem is None or mem >= 2**64 - 1:
        return None
    return int(mem)


def _text(nvml: Any, fn_name: str, handle: Any) -> str | None:
    try:
        value = getattr(nvml, fn_name)(handle)
    except (nvml.NVMLError, AttributeError):
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except nvml.NVMLError:
        pass

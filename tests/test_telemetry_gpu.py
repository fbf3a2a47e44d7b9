"""GPU telemetry against a fake NVML: the same functions as pynvml, scripted readings, pynvml's own error classes.

Only NVML is faked. The sampler runs for real (thread, psutil, files); its clock is a counter that advances one
second per sample row, so t_ns and the phases are exact.
"""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pandas as pd
import pynvml
import pytest

from bench.telemetry import Sampler, TelemetryConfig, summarize_samples

GIB = 2**30
S = 1_000_000_000  # ns per second


class FakeNvml:
    """pynvml's API surface that the sampler uses. Each GPU is a dict of scripted readings:

    used: bytes per reading (the k-th nvmlDeviceGetMemoryInfo call gets used[k], the last one repeats);
    lost_from: from this reading on, every call raises NVML_ERROR_GPU_IS_LOST (a driver reset);
    power_mw / util / temp_c / sm_mhz: a value, or an NVML error code to raise on every call;
    procs: [(pid, bytes or None)].
    """

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM

    def __init__(self, gpus: list[dict], init_error: int | None = None):
        self.gpus = gpus
        self.init_error = init_error
        self.reads = [0] * len(gpus)
        self.calls: list[str] = []
        self.shutdown = False

    def _gpu(self, handle: int, fn: str) -> dict:
        self.calls.append(f"{fn}({handle})")
        g = self.gpus[handle]
        lost_from = g.get("lost_from")
        if lost_from is not None and self.reads[handle] >= lost_from:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return g

    @staticmethod
    def _value(g: dict, key: str):
        value = g[key]
        if isinstance(value, tuple) and value[0] == "error":
            raise pynvml.NVMLError(value[1])
        return value

    def nvmlInit(self):
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-fake-{h}"

    def nvmlDeviceGetMemoryInfo(self, h):
        g = self._gpu(h, "mem")
        used = g["used"][min(self.reads[h], len(g["used"]) - 1)]
        self.reads[h] += 1
        return SimpleNamespace(total=g["total"], used=used, free=g["total"] - used)

    def nvmlDeviceGetUtilizationRates(self, h):
        gpu, memory = self._value(self._gpu(h, "util"), "util")
        return SimpleNamespace(gpu=gpu, memory=memory)

    def nvmlDeviceGetPowerUsage(self, h):
        return self._value(self._gpu(h, "power"), "power_mw")

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._value(self._gpu(h, "temp"), "temp_c")

    def nvmlDeviceGetClockInfo(self, h, clock):
        assert clock == pynvml.NVML_CLOCK_SM
        return self._value(self._gpu(h, "clock"), "sm_mhz")

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        g = self._gpu(h, "procs")
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in g.get("procs", [])]


def gpu(used, **kw) -> dict:
    base = {"total": 80 * GIB, "used": used, "util": (50, 20), "power_mw": 300_000, "temp_c": 61, "sm_mhz": 1980}
    return base | kw


class TickClock:
    """clock_ns for the sampler: 1 s, 2 s, 3 s, ... one step per call (one call per row, one at start)."""

    def __init__(self):
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n * S


def run_sampler(tmp_path, nvml, *, rows: int, config: TelemetryConfig | None = None, clock=None):
    notes: list[str] = []
    config = config or TelemetryConfig(sample_interval_s=0.01)
    sampler = Sampler(config, tmp_path / "samples.csv", clock_ns=clock or TickClock(), nvml_module=nvml,
                      note=notes.append)
    with sampler:
        deadline = time.monotonic() + 10
        while sampler.sample_count < rows and time.monotonic() < deadline:
            time.sleep(0.005)
    return sampler, notes, pd.read_csv(tmp_path / "samples.csv")


def test_two_gpus_a_refused_call_and_a_gpu_lost_mid_run(tmp_path):
    me = os.getpid()  # the "server" is this process, so its GPU memory can be matched by pid
    nvml = FakeNvml([
        gpu([10 * GIB, 20 * GIB, 30 * GIB, 40 * GIB], procs=[(me, 10 * GIB), (999_999, None)]),
        gpu([5 * GIB], util=(80, 10), power_mw=("error", pynvml.NVML_ERROR_NOT_SUPPORTED), lost_from=3),
        gpu([1 * GIB]),  # not chosen
    ])
    config = TelemetryConfig(sample_interval_s=0.01, gpus=(0, 1), server_pid=me)
    # The start-up clock call is 1 s, so rows are stamped 2 s, 3 s, 4 s, ...
    sampler, notes, df = run_sampler(tmp_path, nvml, rows=6, config=config)

    assert [c for c in df.columns if c.startswith("gpu2")] == []
    assert df["t_ns"].tolist()[:4] == [2 * S, 3 * S, 4 * S, 5 * S]
    # Units: bytes as NVML gives them (not MiB), watts from milliwatts.
    assert df["gpu0_mem_used_bytes"].tolist()[:5] == [10 * GIB, 20 * GIB, 30 * GIB, 40 * GIB, 40 * GIB]
    assert (df["gpu0_mem_total_bytes"] == 80 * GIB).all()  # 85_899_345_920
    assert df["gpu0_power_w"].iloc[0] == 300.0  # 300_000 mW
    assert df["gpu0_temp_c"].iloc[0] == 61 and df["gpu0_sm_clock_mhz"].iloc[0] == 1980
    assert df["gpu0_util_pct"].iloc[0] == 50 and df["gpu0_mem_util_pct"].iloc[0] == 20
    # GPU 1 has no power reading (NOT_SUPPORTED): empty cells, and after the first refusal it is not asked again.
    assert df["gpu1_power_w"].isna().all()
    assert nvml.calls.count("power(1)") == 1
    # GPU 1 answers three readings, then is lost: its cells empty, and no total without it.
    assert df["gpu1_mem_used_bytes"].tolist()[:3] == [5 * GIB] * 3
    assert df["gpu1_mem_used_bytes"].iloc[3:].isna().all()
    # total = 10 + 5, 20 + 5, 30 + 5 GiB; then GPU 1 is gone
    assert df["gpu_mem_used_bytes_total"].tolist()[:3] == [15 * GIB, 25 * GIB, 35 * GIB]
    assert df["gpu_mem_used_bytes_total"].iloc[3:].isna().all()
    # Once lost, GPU 1 is not asked anything again: one failed memory call only.
    assert nvml.calls.count("mem(1)") == 4
    assert df["server_gpu_mem_bytes"].iloc[0] == 10 * GIB

    assert sum("GPU 1 power" in n and "not supported" in n for n in notes) == 1
    assert sum("GPU 1 lost" in n for n in notes) == 1
    assert not any("GPU 0" in n for n in notes)
    assert nvml.shutdown

    procs = [json.loads(line) for line in (tmp_path / "gpu_processes.jsonl").read_text().splitlines()]
    assert {"t_ns": 2 * S, "gpu": 0, "pid": me, "mem_bytes": 10 * GIB} in procs
    assert {"t_ns": 2 * S, "gpu": 0, "pid": 999_999, "mem_bytes": None} in procs
    meta = json.loads((tmp_path / "telemetry.json").read_text())
    assert [g["uuid"] for g in meta["gpus"]] == ["GPU-fake-0", "GPU-fake-1"]
    assert meta["samples"] == len(df)

    s = summarize_samples(df, [("early", 2 * S, 4 * S), ("late", 5 * S, 7 * S)])
    early, late = s["early"], s["late"]
    assert early["n_samples"] == 3 and early["gpus"] == [0, 1]
    # total: peak 35 GiB; mean (15 + 25 + 35) / 3 = 25 GiB
    assert early["gpu_mem_used_bytes_total_peak"] == 35 * GIB
    assert early["gpu_mem_used_bytes_total_mean"] == 25 * GIB
    # GPU 0: peak 30 GiB, mean (10 + 20 + 30) / 3 = 20 GiB; GPU 1 flat at 5 GiB
    assert early["gpu0_mem_used_bytes_peak"] == 30 * GIB and early["gpu0_mem_used_bytes_mean"] == 20 * GIB
    assert early["gpu1_mem_used_bytes_mean"] == 5 * GIB and early["gpu1_mem_total_bytes"] == 80 * GIB
    # utilisation across GPUs, per row: (50 + 80) / 2 = 65 %
    assert early["gpu_util_pct_mean"] == 65.0
    # power: 300 W on GPU 0, nothing measured on GPU 1, so no total (never a partial sum, never 0)
    assert early["gpu0_power_w_mean"] == 300.0
    assert early["gpu1_power_w_mean"] is None and early["gpu_power_w_total_mean"] is None
    assert early["server_gpu_mem_bytes_peak"] == 10 * GIB
    # late: GPU 1 lost, so no total; GPU 0 alone still summarised
    assert late["gpu_mem_used_bytes_total_peak"] is None
    assert late["gpu1_mem_used_bytes_peak"] is None
    assert late["gpu0_mem_used_bytes_peak"] == 40 * GIB


@pytest.mark.parametrize(("code", "reason"), [
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML library not found (no NVIDIA driver)"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "NVIDIA driver not loaded"),
    (pynvml.NVML_ERROR_NO_PERMISSION, "no permission to query NVML"),
])
def test_nvml_that_cannot_start_skips_gpus_with_one_line_and_the_run_goes_on(tmp_path, code, reason):
    nvml = FakeNvml([gpu([GIB])], init_error=code)
    sampler, notes, df = run_sampler(tmp_path, nvml, rows=3)
    assert notes.count(f"GPU telemetry skipped: {reason}") == 1
    assert sum(n.startswith("GPU") for n in notes) == 1
    assert not [c for c in df.columns if c.startswith("gpu")]
    assert len(df) >= 3 and df["host_ram_used_bytes"].notna().all()
    assert not (tmp_path / "gpu_processes.jsonl").exists()
    s = summarize_samples(df, [("all", 0, 100 * S)])["all"]
    assert s["gpus"] == [] and s["gpu_mem_used_bytes_total_peak"] is None and s["gpu_util_pct_mean"] is None
    assert s["host_ram_used_bytes_peak"] > 0


def test_no_gpu_and_absent_gpu_indices_are_noted(tmp_path):
    _, notes, df = run_sampler(tmp_path, FakeNvml([]), rows=1)
    assert notes[0] == "GPU telemetry skipped: NVML sees no NVIDIA GPU"
    assert not [c for c in df.columns if c.startswith("gpu")]

    other = tmp_path / "two"
    other.mkdir()
    config = TelemetryConfig(sample_interval_s=0.01, gpus=(1, 5))
    _, notes, df = run_sampler(other, FakeNvml([gpu([GIB]), gpu([2 * GIB])]), rows=1, config=config)
    assert any("--gpus 5 not present" in n for n in notes)
    assert df["gpu1_mem_used_bytes"].iloc[0] == 2 * GIB
    assert "gpu0_mem_used_bytes" not in df.columns


def test_a_gpu_that_stops_answering_without_being_lost_gives_one_note(tmp_path):
    class Flaky(FakeNvml):
        def nvmlDeviceGetMemoryInfo(self, h):
            if self.reads[h] in (1, 2):  # second and third readings fail, then it answers again
                self.reads[h] += 1
                raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
            return super().nvmlDeviceGetMemoryInfo(h)

    _, notes, df = run_sampler(tmp_path, Flaky([gpu([GIB, GIB, GIB, 3 * GIB])]), rows=5)
    used = df["gpu0_mem_used_bytes"]
    assert used.iloc[0] == GIB and used.iloc[1:3].isna().all() and used.iloc[3] == 3 * GIB
    assert sum("GPU 0 stopped answering" in n for n in notes) == 1
    assert sum("GPU 0 answering again" in n for n in notes) == 1

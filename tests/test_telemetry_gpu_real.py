"""On a machine with an NVIDIA GPU and PyTorch: the sampler's NVML readings against torch.cuda.mem_get_info.

Skipped where there is no GPU, no NVML or no torch (CI); every assertion can fail where there is.
"""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest

from bench.telemetry import Sampler, TelemetryConfig, summarize_samples

torch = pytest.importorskip("torch")
pynvml = pytest.importorskip("pynvml")

GIB = 2**30


def _nvml_index_of_cuda0() -> int:
    """NVML numbers GPUs as nvidia-smi does; CUDA_VISIBLE_DEVICES may not. Match them by UUID."""
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    pynvml.nvmlInit()
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            nvml_uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            nvml_uuid = nvml_uuid.decode() if isinstance(nvml_uuid, bytes) else nvml_uuid
            if nvml_uuid.removeprefix("GPU-") == uuid:
                return i
    finally:
        pynvml.nvmlShutdown()
    pytest.fail(f"no NVML GPU has CUDA device 0's UUID {uuid}")


def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except pynvml.NVMLError:
        return False


@pytest.mark.skipif(not torch.cuda.is_available() or not _nvml_works(), reason="needs an NVIDIA GPU, NVML and torch")
def test_nvml_readings_match_torch_while_memory_is_allocated(tmp_path):
    torch.cuda.init()
    torch.zeros(1, device="cuda")  # create the context before the baseline
    torch.cuda.synchronize()
    index = _nvml_index_of_cuda0()
    col = f"gpu{index}"
    notes: list[str] = []
    config = TelemetryConfig(sample_interval_s=0.1, gpus=(index,), server_pid=os.getpid())
    sampler = Sampler(config, tmp_path / "samples.csv", note=notes.append)

    def settle(rows: int = 3) -> dict:
        target = sampler.sample_count + rows
        while sampler.sample_count < target:
            time.sleep(0.02)
        return sampler.latest()

    with sampler:
        base = settle()
        free0, total = torch.cuda.mem_get_info()
        block = torch.empty(4 * GIB, dtype=torch.uint8, device="cuda")
        block.fill_(1)
        torch.cuda.synchronize()
        t_alloc = time.perf_counter_ns()
        held = settle()
        free1, _ = torch.cuda.mem_get_info()
        del block
        torch.cuda.empty_cache()
        after = settle()
    assert not any(n.startswith("GPU") for n in notes), notes
    # NVML v1 used = total - free, as torch.cuda.mem_get_info reports it (within 64 MiB of other activity)
    assert base[f"{col}_mem_total_bytes"] == total
    assert base[f"{col}_mem_used_bytes"] == pytest.approx(total - free0, abs=64 * 2**20)
    assert held[f"{col}_mem_used_bytes"] == pytest.approx(total - free1, abs=64 * 2**20)
    assert held[f"{col}_mem_used_bytes"] - base[f"{col}_mem_used_bytes"] == pytest.approx(4 * GIB, abs=64 * 2**20)
    assert after[f"{col}_mem_used_bytes"] < held[f"{col}_mem_used_bytes"] - 3 * GIB
    assert 10 < held[f"{col}_power_w"] < 1500 and 0 < held[f"{col}_temp_c"] < 110 and held[f"{col}_sm_clock_mhz"] > 0
    assert 0 <= held[f"{col}_util_pct"] <= 100

    df = pd.read_csv(tmp_path / "samples.csv")
    s = summarize_samples(df, [("held", t_alloc, held["t_ns"])])["held"]
    assert s["gpu_mem_used_bytes_total_peak"] == pytest.approx(total - free1, abs=64 * 2**20)
    procs = [json.loads(line) for line in (tmp_path / "gpu_processes.jsonl").read_text().splitlines()]
    mine = [p for p in procs if p["pid"] == os.getpid() and p["t_ns"] == held["t_ns"]]
    if mine and mine[0]["mem_bytes"] is not None:  # in a container NVML shows host pids, which do not match
        assert mine[0]["mem_bytes"] >= 4 * GIB
        assert held["server_gpu_mem_bytes"] >= 4 * GIB

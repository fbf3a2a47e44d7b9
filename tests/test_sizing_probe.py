"""sizing probe: the accounting (bytes, FLOPs, median), the timing loop on a fake torch with a scripted device clock,
the card section and its ceilings in a profile, and the clean exit where there is no GPU (this machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sizing.cli import main
from sizing.gpus import resolve_gpu
from sizing.probe import (
    NO_GPU,
    Measurement,
    ProbeConfig,
    copy_bytes_moved,
    matmul_flops,
    median,
    probe,
)
from sizing.profile import card_section, ceilings, empty_profile, merge_card
from sizing.units import GiB

ROOT = Path(__file__).resolve().parents[1]


# -- pure accounting ----------------------------------------------------------------------------------------------
def test_a_copy_moves_its_bytes_twice():
    assert copy_bytes_moved(4 * GiB) == 8 * GiB          # 4 GiB read + 4 GiB written


def test_matmul_flops():
    assert matmul_flops(8192) == 1_099_511_627_776       # 2 x 8192^3
    assert matmul_flops(2) == 16                         # 4 outputs x 2 multiply-adds x 2 FLOPs


def test_median():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_rate_is_work_over_the_median_round_per_launch():
    m = Measurement("copy", work_per_launch=8 * GiB, inner=2, samples_s=(0.004, 0.002, 0.003, 0.100))
    # median round 0.0035 s / 2 launches = 1.75 ms per launch; 8 GiB / 1.75 ms
    assert m.seconds_per_launch == pytest.approx(0.00175)
    assert m.rate_per_s == pytest.approx(8 * GiB / 0.00175)


# -- the timing loop, on a fake torch whose device clock advances by the work of each launch ----------------------
class FakeTorch:
    """Enough of torch for sizing.probe: every launch advances a device clock by work / rate."""

    uint8, bfloat16, float16, float32, float8_e4m3fn = "uint8", "bf16", "fp16", "fp32", "fp8"
    __version__ = "0.0+fake"
    version = SimpleNamespace(cuda="12.fake")

    def __init__(self, capability=(9, 0), free_bytes=80 * GiB, rates=None, fp8_error=None):
        self.device_ms = 0.0
        self.launches: dict[str, int] = {}
        self.rates = rates or {"copy": 3.0e12, "bf16": 700e12, "fp16": 710e12, "fp8": 1300e12}
        self.fp8_error = fp8_error
        self.capability, self.free_bytes = capability, free_bytes
        torch = self

        class Event:
            def __init__(self, enable_timing=False):
                self.t = None

            def record(self):
                self.t = torch.device_ms

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return end.t - self.t

        self.cuda = SimpleNamespace(
            is_available=lambda: True, current_device=lambda: 0, get_device_capability=lambda d: self.capability,
            get_device_name=lambda d: "NVIDIA H100 80GB HBM3", mem_get_info=lambda: (self.free_bytes, 80 * GiB),
            synchronize=lambda: None, Event=Event)

    def _run(self, kind: str, work: float) -> None:
        self.launches[kind] = self.launches.get(kind, 0) + 1
        self.device_ms += work / self.rates[kind] * 1e3

    def _tensor(self, dtype, nbytes=0, n=0):
        torch = self
        t = SimpleNamespace(dtype=dtype, nbytes=nbytes, n=n)
        t.copy_ = lambda src: torch._run("copy", 2 * src.nbytes)
        t.fill_ = lambda value: None
        t.to = lambda d: torch._tensor(d, n=n)
        t.t = lambda: t
        t.contiguous = lambda: t
        return t

    def empty(self, *shape, dtype, device):
        return self._tensor(dtype, nbytes=shape[0] if dtype == self.uint8 else 0, n=shape[0])

    def randn(self, n, m, device, dtype):
        return self._tensor(dtype, n=n)

    def ones(self, shape, device, dtype):
        return self._tensor(dtype)

    def matmul(self, a, b, out):
        self._run(a.dtype, 2 * a.n ** 3)

    def _scaled_mm(self, a, b, scale_a, scale_b, out_dtype):
        if self.fp8_error:
            raise RuntimeError(self.fp8_error)
        self._run("fp8", 2 * a.n ** 3)
        return self._tensor(out_dtype, n=a.n)


SMALL = ProbeConfig(copy_bytes=1 * GiB, matmul_n=1024, warmup=2, repeats=5, copy_inner=2, matmul_inner=3)


def test_probe_measures_the_scripted_rates():
    fake = FakeTorch()
    result = probe(fake, SMALL)
    measured = result.measured()
    assert measured["mem_bandwidth_bytes_per_s"] == pytest.approx(3.0e12)
    assert measured["bf16_flops_per_s"] == pytest.approx(700e12)
    assert measured["fp16_flops_per_s"] == pytest.approx(710e12)
    assert measured["fp8_flops_per_s"] == pytest.approx(1300e12)
    # warm-up rounds run but are not timed: (2 warm-up + 5 timed) rounds x inner launches (+1 fp8 trial launch)
    assert fake.launches == {"copy": 7 * 2, "bf16": 7 * 3, "fp16": 7 * 3, "fp8": 7 * 3 + 1}
    assert all(len(m.samples_s) == 5 for m in result.measurements)
    assert result.device_name == "NVIDIA H100 80GB HBM3" and result.capability == (9, 0)


def test_no_fp8_before_compute_capability_8_9():
    result = probe(FakeTorch(capability=(8, 0)), SMALL)
    assert result.measured()["fp8_flops_per_s"] is None
    assert any("8.0 has no fp8 tensor cores" in n for n in result.notes)


def test_a_failing_fp8_kernel_is_a_note_and_the_rest_stands():
    result = probe(FakeTorch(fp8_error="no kernel image"), SMALL)
    assert result.measured()["fp8_flops_per_s"] is None
    assert result.measured()["bf16_flops_per_s"] == pytest.approx(700e12)
    assert any("RuntimeError: no kernel image" in n for n in result.notes)


def test_the_copy_shrinks_to_a_quarter_of_free_memory():
    result = probe(FakeTorch(free_bytes=2 * GiB), SMALL)
    assert result.copy_bytes == GiB // 2
    assert result.measured()["mem_bandwidth_bytes_per_s"] == pytest.approx(3.0e12)
    assert any("reduced" in n for n in result.notes)


# -- the card section, ceilings and profiles ----------------------------------------------------------------------
def _h100_card(bw_fraction=0.9, bf16_fraction=0.7):
    gpu = resolve_gpu("h100")
    measured = {"mem_bandwidth_bytes_per_s": gpu.mem_bandwidth_bytes_per_s * bw_fraction,
                "bf16_flops_per_s": gpu.bf16_flops_per_s * bf16_fraction,
                "fp16_flops_per_s": gpu.fp16_flops_per_s * 0.72, "fp8_flops_per_s": None}
    return card_section(gpu, "NVIDIA H100 80GB HBM3", measured, {"measured_at": "2026-01-01T00:00:00+00:00"})


def test_card_section_puts_measured_next_to_datasheet():
    card = _h100_card()
    assert card["gpu"] == "h100-sxm" and card["datasheet"]["mem_bandwidth_bytes_per_s"] == 3.35e12
    assert card["measured_vs_datasheet"] == {"mem_bandwidth": 0.9, "bf16": 0.7, "fp16": 0.72}
    assert ceilings(card, ("bf16",)) == {"bw_efficiency": 0.9, "compute_efficiency": 0.7}
    assert ceilings(card, ("fp8", "bf16", "fp16")) == {"bw_efficiency": 0.9, "compute_efficiency": 0.7}
    assert ceilings(None) == {}


def test_merging_refuses_a_profile_of_another_family():
    doc = {**empty_profile("t"), "factors": {"family": "volta", "engine": "vllm", "after": {}},
           "deployment": {"gpu": "v100-32g-sxm2"}}
    with pytest.raises(Exception, match="fitted on v100-32g-sxm2"):
        merge_card(doc, _h100_card(), "x.json")
    hopper = {**doc, "factors": {**doc["factors"], "family": "hopper"}}
    assert merge_card(hopper, _h100_card(), "x.json")["card"]["gpu"] == "h100-sxm"


def _write(tmp_path, doc):
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_a_probe_profile_caps_the_efficiencies_on_that_card(tmp_path, capsys):
    slow = _write(tmp_path, {**empty_profile("t"), "card": _h100_card(bw_fraction=0.5)})
    args = ["recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--concurrency", "1", "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(args + ["--calibration", slow]) == 0
    capped = json.loads(capsys.readouterr().out)
    assert capped["factors"]["bw_efficiency"] == 0.5 < plain["factors"]["bw_efficiency"]
    assert capped["estimates"][0]["tpot_s"] > plain["estimates"][0]["tpot_s"]
    assert any("probe of" in line and "mem_bandwidth 50% of datasheet" in line for line in capped["reasoning"])
    # a healthy card (90% of datasheet) is above what the factors assume: nothing changes
    healthy = _write(tmp_path, {**empty_profile("t"), "card": _h100_card(bw_fraction=0.9)})
    assert main(args + ["--calibration", healthy]) == 0
    assert json.loads(capsys.readouterr().out)["estimates"] == plain["estimates"]


def test_a_probe_profile_is_refused_on_another_card(tmp_path, capsys):
    path = _write(tmp_path, {**empty_profile("t"), "card": _h100_card()})
    assert main(["recommend", "--model", "qwen2.5-7b", "--gpu", "h100-pcie", "--calibration", path]) == 2
    err = capsys.readouterr().err
    assert "holds probe measurements of NVIDIA H100 SXM5 80GB" in err and "h100-pcie" in err


def test_calibrate_with_a_probe_of_another_card_is_refused(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"hardware": "4x V100-32G",
                                              "target": {"model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"}}))
    level = {"concurrency": 1, "ok": 3, "tpot_ms": {"mean": 90.0}, "ttft_ms": {"mean": 300.0},
             "input_tokens": {"mean": 512.0}, "output_tokens": {"mean": 64.0}}
    (run / "summary.json").write_text(json.dumps({"levels": [level]}))
    path = _write(tmp_path, {**empty_profile("t"), "card": _h100_card()})
    assert main(["calibrate", str(run), "--probe", path, "--out", str(tmp_path / "c.json")]) == 2
    assert "measured NVIDIA H100 SXM5 80GB, but the runs are of v100-32g-sxm2" in capsys.readouterr().err


# -- the command, here where there is no GPU -------------------------------------------------------------------------
def test_sizing_probe_without_a_gpu_says_so_and_exits_0(tmp_path):
    out = tmp_path / "p.json"
    result = subprocess.run([sys.executable, "-m", "sizing.cli", "probe", "--out", str(out)], check=False,
                            cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if "sees no CUDA device" not in result.stdout and "not installed" not in result.stdout:
        pytest.skip("this machine has PyTorch with a CUDA GPU")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"sizing probe: {NO_GPU} (") and len(result.stdout.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("args, words", [(["--repeats", "0"], "--repeats must be at least 1"),
                                         (["--out", "NOTAPROFILE"], "is not a calibration profile")])
def test_sizing_probe_bad_input_is_one_sentence(tmp_path, capsys, args, words):
    (tmp_path / "NOTAPROFILE").write_text("{}")
    args = [str(tmp_path / a) if a == "NOTAPROFILE" else a for a in args]
    assert main(["probe", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_sizing_probe_writes_the_card_into_a_profile(tmp_path, capsys, monkeypatch):
    import sizing.probe

    monkeypatch.setattr(sizing.probe, "import_torch", lambda: (FakeTorch(), None))
    out = tmp_path / "p.json"
    assert main(["probe", "--out", str(out), "--repeats", "3"]) == 0
    text = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3 (h100-sxm, compute capability 9.0)" in text
    assert "3,000 GB/s" in text and "3,350 GB/s" in text and "90%" in text     # 3.00 / 3.35 TB/s = 89.6%
    card = json.loads(out.read_text())["card"]
    h100 = resolve_gpu("h100")
    assert card["measured"]["mem_bandwidth_bytes_per_s"] == pytest.approx(3.0e12)
    assert card["measured_vs_datasheet"]["bf16"] == pytest.approx(700e12 / h100.bf16_flops_per_s, abs=1e-4)
    assert card["probe"]["timed_rounds"] == 3 and len(card["probe"]["samples_s"]["copy"]) == 3
    assert main(["recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--calibration", str(out)]) == 0
    assert "probe of NVIDIA H100 SXM5 80GB" in capsys.readouterr().out

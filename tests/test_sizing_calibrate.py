"""sizing calibrate: the deployment read from run folders, the fit, the profile, and `recommend --calibration`.

Synthetic runs are written from sizing's own predictions with known factors, so a correct fit recovers them; one test
measures the emulator end to end with bench and calibrates on what bench measured.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sizing.calibrate import calibrate, deployment_evaluation, free_factors, predict
from sizing.cli import main
from sizing.errors import SizingError
from sizing.runs import (
    Deployment,
    MeasuredLevel,
    decide_deployment,
    parse_hardware,
    read_run,
)

ROOT = Path(__file__).resolve().parents[1]
V100_DEP = Deployment(model="deepseek-r1-distill-qwen-32b", gpu="v100-32g-sxm2", gpus=4, quant=None, engine="vllm")
SHAPE = (519, 64)   # prompt tokens, output tokens


# -- helpers ------------------------------------------------------------------------------------------------------
def _stat(value):
    return None if value is None else {"mean": value, "p50": value, "min": value, "max": value}


def make_run(folder: Path, levels, run: dict | None = None, telemetry_gpus=None) -> Path:
    """A run folder as `bench run` writes it: levels are (concurrency, tpot_s, ttft_s[, input, output])."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"label": folder.name, "started_at": "2026-01-01T00:00:00+00:00", "hardware": None,
            "target": {"model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"}, "server": {}, "sim": None}
    info.update(run or {})
    items = []
    for c, tpot, ttft, *shape in levels:
        inp, out = shape or SHAPE
        items.append({"phase": f"c={c}", "concurrency": c, "request_rate": None, "requests": 10, "ok": 10,
                      "tpot_ms": _stat(None if tpot is None else tpot * 1e3),
                      "ttft_ms": _stat(None if ttft is None else ttft * 1e3),
                      "input_tokens": _stat(inp), "output_tokens": _stat(out)})
    (folder / "run.json").write_text(json.dumps(info))
    (folder / "summary.json").write_text(json.dumps({"run": {}, "levels": items}))
    if telemetry_gpus is not None:
        gpus = [{"index": i, "name": n, "uuid": f"GPU-{i}"} for i, n in enumerate(telemetry_gpus)]
        (folder / "telemetry.json").write_text(json.dumps({"gpus": gpus}))
    return folder


def truth_levels(factor: float, concurrencies=(1, 10, 100), dep: Deployment = V100_DEP):
    """What a server `factor` times slower than sizing's model of `dep` measures: (c, tpot_s, ttft_s)."""
    ev = deployment_evaluation(dep, *SHAPE)
    out = []
    for c in concurrencies:
        p = predict(ev, ev.setup.factors, c)
        out.append((c, p.tpot_s * factor, p.ttft_s * factor))
    return out


def measured(levels, run="r"):
    return [MeasuredLevel(run, f"c={c}", c, 10, SHAPE[0], SHAPE[1], tpot, ttft) for c, tpot, ttft in levels]


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the deployment ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, count, key", [
    ("4x V100-32G", 4, "v100-32g-sxm2"), ("8 x a100-40g", 8, "a100-40g-sxm"), ("2xH100", 2, "h100-sxm"),
    ("H100 x 2", 2, "h100-sxm"), ("NVIDIA H100 80GB HBM3", None, "h100-sxm"),
    ("4x V100-32G (NVLink)", 4, "v100-32g-sxm2"), ("2 x Tesla V100-SXM2-32GB", 2, "v100-32g-sxm2"),
    ("RTX 3090", None, "rtx3090"), ("2x RTX 4090", 2, "rtx4090"),
])
def test_hardware_text_gives_count_and_card(text, count, key):
    n, card = parse_hardware(text)
    assert (n, card.key) == (count, key)


def test_hardware_text_with_an_unknown_card_keeps_the_count():
    assert parse_hardware("3x Foo-9000") == (3, None)


def test_hardware_text_and_served_hf_id_decide_the_deployment(tmp_path):
    run = read_run(str(make_run(tmp_path / "r", [(1, 0.1, 0.3)], {"hardware": "4x V100-32G"})))
    dep = decide_deployment([run], {})
    assert (dep.model, dep.gpu, dep.gpus, dep.quant, dep.engine) == (
        "deepseek-r1-distill-qwen-32b", "v100-32g-sxm2", 4, None, "vllm")
    assert "hardware" in dep.decided_from["gpu"] and "assumed" in dep.decided_from["engine"]


def test_emulator_fields_win_over_the_hardware_text(tmp_path):
    sim = {"model": "llama-3.1-8b", "gpu": "a100-40g", "gpus": 2, "quant": None}
    run = read_run(str(make_run(tmp_path / "r", [(1, 0.1, 0.3)], {"sim": sim, "hardware": "4x V100-32G"})))
    dep = decide_deployment([run], {})
    assert (dep.model, dep.gpu, dep.gpus) == ("llama-3.1-8b-instruct", "a100-40g-sxm", 2)


def test_emulator_without_a_count_ran_the_minimum(tmp_path):
    sim = {"model": "distill-qwen-32b", "gpu": "v100-32g", "gpus": None, "quant": None}
    run = read_run(str(make_run(tmp_path / "r", [(1, 0.1, 0.3)], {"sim": sim})))
    assert decide_deployment([run], {}).gpus == 3   # 65.5 GB of fp16 weights: 3 x V100-32G is sizing's minimum


def test_launched_server_details_give_model_dtype_and_layout(tmp_path):
    server = {"engine": "vllm", "model": "/models/Qwen2.5-7B-Instruct", "dtype": "bfloat16", "quantization": None,
              "tensor_parallel_size": 2, "pipeline_parallel_size": None, "data_parallel_size": None}
    run = read_run(str(make_run(tmp_path / "r", [(1, 0.1, 0.3)], {"server": server, "hardware": "H100",
                                                                  "target": {"model": "qwen"}})))
    dep = decide_deployment([run], {})
    assert (dep.model, dep.gpu, dep.gpus, dep.quant, dep.engine) == ("qwen2.5-7b-instruct", "h100-sxm", 2, "bf16",
                                                                     "vllm")
    assert dep.layout == {"tp": 2, "pp": 1, "dp": 1}


def test_telemetry_names_give_the_card_and_count(tmp_path):
    run = read_run(str(make_run(tmp_path / "r", [(1, 0.1, 0.3)], telemetry_gpus=["NVIDIA H100 80GB HBM3"] * 2)))
    dep = decide_deployment([run], {})
    assert (dep.gpu, dep.gpus) == ("h100-sxm", 2)


def test_flags_win_over_everything(tmp_path):
    run = read_run(str(make_run(tmp_path / "r", [(1, 0.1, 0.3)], {"hardware": "4x V100-32G"},
                                telemetry_gpus=["Tesla V100-SXM2-32GB"] * 4)))
    dep = decide_deployment([run], {"model": "qwen2.5-7b", "gpu": "a100-80g", "gpus": 1, "quant": "awq"})
    assert (dep.model, dep.gpu, dep.gpus, dep.quant) == ("qwen2.5-7b-instruct", "a100-80g-sxm", 1, "awq")
    assert dep.decided_from["gpu"] == "--gpu"


@pytest.mark.parametrize("run, flag", [
    ({"target": {"model": "gpucap-sim"}, "hardware": "4x V100-32G"}, "--model"),
    ({}, "--gpu"),
    ({"hardware": "V100-32G"}, "--gpus"),
])
def test_what_is_missing_is_named(tmp_path, run, flag):
    folder = read_run(str(make_run(tmp_path / "r", [(1, 0.1, 0.3)], run)))
    with pytest.raises(SizingError) as err:
        decide_deployment([folder], {})
    assert err.value.flag == flag and f"give {flag}" in err.value.message


def test_runs_of_different_deployments_are_refused(tmp_path):
    a = read_run(str(make_run(tmp_path / "a", [(1, 0.1, 0.3)], {"hardware": "4x V100-32G"})))
    b = read_run(str(make_run(tmp_path / "b", [(1, 0.1, 0.3)], {"hardware": "2x V100-32G"})))
    with pytest.raises(SizingError, match="one deployment at a time"):
        decide_deployment([a, b], {})


# -- the fit ------------------------------------------------------------------------------------------------------
def test_measurements_equal_to_the_model_leave_the_factors_alone():
    cal = calibrate(V100_DEP, measured(truth_levels(1.0)), {("r", 1)})
    for name in cal.fitted:
        assert getattr(cal.after, name) == pytest.approx(getattr(cal.before, name), rel=1e-3)
    assert all(abs(lf.error("tpot", "after")) < 1e-3 for lf in cal.levels)


def test_a_uniformly_slower_server_is_recovered_from_concurrency_1():
    cal = calibrate(V100_DEP, measured(truth_levels(1.4)), {("r", 1)})
    for lf in cal.levels:
        # sizing predicts 1 / 1.4 of the measured time before calibration: -28.6% at every level
        assert lf.error("tpot", "before") == pytest.approx(1 / 1.4 - 1, abs=1e-9)
        assert lf.error("ttft", "before") == pytest.approx(1 / 1.4 - 1, abs=1e-9)
    by_c = {lf.level.concurrency: lf for lf in cal.levels}
    assert by_c[1].fitted and not by_c[10].fitted and not by_c[100].fitted
    assert abs(by_c[1].error("tpot", "after")) < 0.01 and abs(by_c[1].error("ttft", "after")) < 0.01
    assert abs(by_c[10].error("tpot", "after")) < 0.03 and abs(by_c[100].error("tpot", "after")) < 0.05
    assert cal.median_abs_error("tpot", "after") < 0.05
    assert cal.median_abs_error("tpot", "before") > 0.25
    assert cal.after.bw_efficiency < cal.before.bw_efficiency and cal.after.layer_floor_s > cal.before.layer_floor_s
    assert (cal.engine, cal.family) == ("vllm", "volta")


def test_ttft_is_fitted_only_where_the_server_was_idle():
    levels = measured(truth_levels(1.4, (1, 10)))
    assert free_factors([levels[1]]) == ("bw_efficiency", "layer_floor_s")
    assert free_factors([levels[0]]) == ("bw_efficiency", "layer_floor_s", "compute_efficiency", "ttft_overhead_s")
    cal = calibrate(V100_DEP, levels, {("r", 10)})
    assert cal.after.compute_efficiency == cal.before.compute_efficiency
    assert cal.after.ttft_overhead_s == cal.before.ttft_overhead_s


def test_a_probe_ceiling_bounds_the_fit():
    faster = measured(truth_levels(0.5))    # twice as fast as sizing thinks: the fit wants more bandwidth
    free = calibrate(V100_DEP, faster, {("r", 1)})
    capped = calibrate(V100_DEP, faster, {("r", 1)}, ceilings={"bw_efficiency": 0.8})
    assert free.after.bw_efficiency > 0.8
    assert capped.after.bw_efficiency <= 0.8


# -- the CLI and the profile ---------------------------------------------------------------------------------------
@pytest.fixture()
def profile_path(tmp_path, capsys):
    run = make_run(tmp_path / "run", truth_levels(1.4), {"hardware": "4x V100-32G"})
    out = tmp_path / "cal.json"
    code, text, err = run_cli(["calibrate", str(run), "--on", "1", "--out", str(out)], capsys)
    assert (code, err) == (0, "")
    assert "c=1" in text and "predicted" in text and "median |error|" in text
    return out


def test_calibrate_writes_the_profile(profile_path):
    doc = json.loads(profile_path.read_text())
    assert doc["kind"] == "gpucap-sizing-calibration" and doc["version"] == 1
    assert doc["deployment"]["gpu"] == "v100-32g-sxm2" and doc["deployment"]["gpus"] == 4
    assert doc["factors"]["engine"] == "vllm" and doc["factors"]["family"] == "volta"
    assert doc["factors"]["before"]["bw_efficiency"] != doc["factors"]["after"]["bw_efficiency"]
    assert [lv["fitted"] for lv in doc["levels"]] == [True, False, False]
    assert doc["summary"]["median_abs_tpot_error_before"] > 0.25
    assert doc["summary"]["median_abs_tpot_error_after"] < 0.05
    assert doc["card"] is None


def test_recommend_applies_the_profile(profile_path, capsys):
    args = ["recommend", "--model", "distill-qwen-32b", "--gpu", "v100-32g", "--gpus", "4", "--input-len", "519",
            "--output-len", "64", "--concurrency", "1,10", "--json"]
    _, plain, _ = run_cli(args, capsys)
    code, text, err = run_cli(args + ["--calibration", str(profile_path)], capsys)
    assert (code, err) == (0, "")
    plan, before = json.loads(text), json.loads(plain)
    doc = json.loads(profile_path.read_text())
    # the calibrated c=1 TPOT is the profile's "after" prediction for its c=1 level
    assert plan["estimates"][0]["tpot_s"] == pytest.approx(doc["levels"][0]["after"]["tpot_s"], rel=1e-4)
    assert plan["estimates"][0]["tpot_s"] > before["estimates"][0]["tpot_s"] * 1.3
    assert plan["calibration"] == str(profile_path) and before["calibration"] is None
    assert f"calibration {profile_path}" in plan["factors"]["origin"]
    assert any(line.startswith(f"Calibration applied from {profile_path}") for line in plan["reasoning"])


def test_recommend_applies_a_volta_profile_to_another_volta_card_and_model(profile_path, capsys):
    code, text, _ = run_cli(["recommend", "--model", "qwen2.5-7b", "--gpu", "v100-16g", "--json",
                             "--calibration", str(profile_path)], capsys)
    assert code == 0 and "calibration" in json.loads(text)["factors"]["origin"]


@pytest.mark.parametrize("extra, words", [
    (["--gpu", "h100"], "does not apply to h100-sxm (hopper)"),
    (["--gpu", "v100-32g", "--quant", "q4_k_m"], "this plan runs llama.cpp"),
])
def test_recommend_refuses_a_profile_for_another_card_or_engine(profile_path, capsys, extra, words):
    code, out, err = run_cli(["recommend", "--model", "distill-qwen-32b", *extra, "--calibration",
                              str(profile_path)], capsys)
    assert code == 2 and out == "" and words in err and len(err.strip().splitlines()) == 1


def test_recommend_over_every_card_applies_the_profile_to_its_family_only(profile_path, capsys):
    code, text, _ = run_cli(["recommend", "--model", "qwen2.5-7b", "--json", "--calibration", str(profile_path)],
                            capsys)
    plans = {p["gpu"]: p for p in json.loads(text)["plans"]}
    assert code == 0
    assert "calibration" in plans["v100-32g-sxm2"]["factors"]["origin"]
    assert "calibration" not in plans["a100-80g-sxm"]["factors"]["origin"]


@pytest.mark.parametrize("content, words", [
    ("not json", "not a readable JSON file"),
    ('{"kind": "something else"}', "not a calibration profile"),
    ('{"kind": "gpucap-sizing-calibration", "version": 99}', "version 99"),
])
def test_a_bad_profile_is_one_sentence(tmp_path, capsys, content, words):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, _, err = run_cli(["recommend", "--model", "qwen2.5-7b", "--gpu", "a100", "--calibration", str(bad)], capsys)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("make, args, words", [
    (lambda d: d, ["--on", "1"], "not a bench run folder"),
    (lambda d: make_run(d, [(1, 0.1, 0.3)], {"hardware": "4x V100-32G"}), ["--on", "5"],
     "--on 5: the runs have levels at concurrency 1"),
    (lambda d: make_run(d, [(1, 0.1, 0.3)], {}), [], "cannot tell which GPU"),
    (lambda d: make_run(d, [(1, 0.1, 0.3)], {"hardware": "4x V100-32G"}), ["--gpus", "0"], "--gpus must be at least 1"),
])
def test_calibrate_bad_input_is_one_sentence(tmp_path, capsys, make, args, words):
    folder = tmp_path / "r"
    folder.mkdir()
    make(folder)
    code, out, err = run_cli(["calibrate", str(folder), "--out", str(tmp_path / "c.json"), *args], capsys)
    assert code == 2 and out == "" and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.json").exists()


# -- end to end: the emulator, bench run, sizing calibrate --------------------------------------------------------
def test_calibrating_on_an_emulated_run_predicts_the_other_level(tmp_path):
    from bench.sim.config import SimConfig
    from bench.sim.engine import spec_from_sizing
    from bench.sim.process import SimThread

    factor = 1.5
    spec = spec_from_sizing("qwen2.5-7b", "a100-40g", 1)
    slow = replace(spec, decode_step_s=lambda b, c: factor * spec.decode_step_s(b, c),
                   prefill_compute_s=lambda t, p: factor * spec.prefill_compute_s(t, p),
                   prefill_s=lambda p: factor * spec.prefill_s(p))
    model_id = spec.plan["hf_id"]
    runs = []
    with SimThread(SimConfig(models=(model_id,), engine=slow, max_model_len=8192)) as sim:
        for c, warmup, n in ((1, 1, 3), (8, 8, 24)):
            out = tmp_path / f"c{c}"
            subprocess.run([sys.executable, "-m", "bench", "run", "--base-url", sim.url, "--model", model_id,
                            "--hardware", "1x A100-40G", "--concurrency", str(c), "--warmup", str(warmup),
                            "--num-requests", str(n), "--input-len", "64", "--output-len", "uniform:48,80",
                            "--ignore-eos", "--no-telemetry", "--quiet", "--no-progress", "--out", str(out)],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL, timeout=120)
            runs.append(str(out))
    profile = tmp_path / "cal.json"
    result = subprocess.run([sys.executable, "-m", "sizing.cli", "calibrate", *runs, "--on", "1", "--out",
                             str(profile)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    doc = json.loads(profile.read_text())
    c1, c8 = doc["levels"]
    assert doc["deployment"]["gpu"] == "a100-40g-sxm" and doc["factors"]["family"] == "ampere"
    # before: sizing expects 1/1.5 of the time (-33%); after fitting on c=1, c=8 is predicted within 6%
    assert c8["error_before"]["tpot"] == pytest.approx(1 / factor - 1, abs=0.06)
    assert abs(c1["error_after"]["tpot"]) < 0.03 and abs(c1["error_after"]["ttft"]) < 0.05
    assert abs(c8["error_after"]["tpot"]) < 0.06
    assert 6 < c8["seen_concurrency"] <= 8
    assert not math.isclose(doc["factors"]["after"]["bw_efficiency"], doc["factors"]["before"]["bw_efficiency"])

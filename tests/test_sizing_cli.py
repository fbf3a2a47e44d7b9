"""The `sizing` command as a user types it: a real subprocess, its output, its exit status, its errors."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest


def _command() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "sizing"
    if script.exists():
        return [str(script)]
    found = shutil.which("sizing")
    return [found] if found else [sys.executable, "-m", "sizing.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SIZING_DEBUG"}
    return subprocess.run(_command() + list(args), check=False, capture_output=True, text=True, timeout=120, env=env)


def test_recommend_json_is_one_object_with_the_documented_keys() -> None:
    done = run("recommend", "--model", "r1-671b", "--gpu", "a100-40g", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    for key in ("model", "gpu", "quant", "gpus", "layout", "fits", "reason", "memory_per_gpu_bytes",
                "max_concurrency", "estimates", "alternatives", "reasoning", "launch_command"):
        assert key in plan
    assert plan["model"] == "deepseek-r1" and plan["gpu"] == "a100-40g-sxm" and plan["quant"] == "fp8"
    assert plan["fits"] is True and plan["reason"] is None
    assert set(plan["memory_per_gpu_bytes"]) >= {"weights", "kv_cache", "activations", "overhead", "total"}
    assert [e["concurrency"] for e in plan["estimates"]] == [1, 10, 100]
    assert plan["memory_per_gpu_bytes"]["total"] <= plan["memory_per_gpu_bytes"]["capacity"]


def test_recommend_text_explains_itself() -> None:
    done = run("recommend", "--model", "distill-qwen-32b", "--gpu", "v100-32g", "--gpus", "4", "--concurrency",
               "1,10,100", "--slo-tpot", "100ms", "--slo-ttft", "2s", "--price", "0.8", "--api-price", "0.5")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "fits" in out and "262,144 bytes per token" in out and "no bf16" in out
    assert "largest concurrency meeting TPOT <= 100.0 ms, TTFT <= 2.00 s" in out
    assert "break-even vs API at $0.500" in out and "4 x $0.800/h" in out
    assert "launch: vllm serve deepseek-ai/DeepSeek-R1-Distill-Qwen-32B --tensor-parallel-size 4" in out


def test_launch_command_prints_only_the_serve_line() -> None:
    done = run("recommend", "--model", "qwen2.5-72b", "--gpu", "h100", "--launch-command")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vllm serve Qwen/Qwen2.5-72B-Instruct ")
    assert "--max-model-len 8192" in lines[0]


def test_without_gpu_every_card_is_compared() -> None:
    done = run("recommend", "--model", "qwen2.5-7b", "--concurrency", "1,16", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["gpu"] is None and len(result["plans"]) >= 25


@pytest.mark.parametrize("args,flag,words", [
    (("recommend", "--model", "deepsek-r1", "--gpu", "h100"), "--model", "deepseek-r1"),
    (("recommend", "--model", "r1", "--gpu", "a100-40gb-x"), "--gpu", "a100-40g-sxm"),
    (("recommend", "--model", "r1", "--gpu", "v100", "--quant", "fp8"), "--quant", "compute capability 7.0"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--context", "200000"), "--context", "32,768"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--slo-tpot", "50"), "--slo-tpot", "50ms"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--slo-ttft", "two seconds"), "--slo-ttft", "2s"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--concurrency", "1,ten"), "--concurrency", "1,10,100"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--quant", "awqq"), "--quant", "awq"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--gpus", "0"), "--gpus", "at least 1"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--gpus", "two"), "--gpus", "invalid int"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "v100", "--quant", "bf16"), "--quant", "fp16"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--quant", "ud-iq1_s"), "--quant", "DeepSeek"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--engine", "trt"), "--engine", "trtllm"),
    (("recommend", "--model", "qwen2.5-7b", "--launch-command"), "--launch-command", "--gpu"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--calibration", "x.json"), "--calibration",
     "no file at 'x.json'"),
    (("recomend", "--model", "r1"), "recommend", "did you mean"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--slo", "e2e=2s"), "--slo", "ttft or tpot"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--slo", "ttft=2"), "--slo", "2s"),
    (("recommend", "--model", "qwen2.5-7b", "--gpu", "h100", "--slo", "ttft=2s", "--slo-ttft", "1s"), "--slo",
     "give one"),
])
def test_typos_and_impossible_asks_exit_2_with_one_clear_sentence(args, flag, words) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stdout == ""
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("sizing: error:")
    assert flag in message and words in message


def test_a_config_json_path_on_the_command_line(tmp_path: pathlib.Path) -> None:
    config = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
              "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = run("recommend", "--model", str(path), "--gpu", "l4", "--concurrency", "1", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["fits"] and plan["gpus"] == 1
    # 8,030,261,248 parameters x 2 bytes = 16.06 GB of bf16 weights on the one L4
    assert plan["memory_per_gpu_bytes"]["weights"] == pytest.approx(8_030_261_248 * 2, rel=1e-6)


@pytest.mark.parametrize("command,key", [("models", "models"), ("gpus", "gpus"), ("quants", "quants")])
def test_catalog_listings(command: str, key: str) -> None:
    text = run(command)
    assert text.returncode == 0 and len(text.stdout.splitlines()) > 10
    listing = json.loads(run(command, "--json").stdout)[key]
    assert len(listing) > 10 and all(item["source"] for item in listing)


def test_validate_reports_errors_and_fit_checks() -> None:
    done = run("validate", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    summary = result["summary"]
    assert summary["median_abs_error_pct"] < 25 and summary["median_abs_loo_error_pct"] < 25
    assert summary["fit_correct"] == summary["fit_checks"] >= 6
    ids = {row["id"] for row in result["rows"]}
    assert {"Q01", "Q02", "Q03", "D26", "D27"} <= ids
    text = run("validate", "--no-loo").stdout
    assert "median |error|" in text and "fits / doesn't fit: 6 of 6 right" in text


def test_plot_writes_readable_pngs(tmp_path: pathlib.Path) -> None:
    done = run("plot", "--out", str(tmp_path / "charts"), "--model", "qwen2.5-7b", "--model", "llama-3.1-70b",
               "--gpu", "l40s", "--gpu", "h100", "--json")
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    # the cost chart comes too: both cards have an indicative hourly price in the catalog
    assert [pathlib.Path(f).name for f in files] == ["gpus_needed.png", "throughput.png", "memory.png", "cost.png"]
    for f in files:
        data = pathlib.Path(f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_a_predicted_capacity_comes_with_the_bench_command_that_measures_it() -> None:
    import shlex

    from bench.cli import build_parser
    from bench.slo import parse_slo

    res = run("recommend", "--model", "qwen2.5-7b", "--gpu", "a10", "--input-len", "512", "--output-len", "128",
              "--slo-ttft", "1.5s", "--slo-tpot", "45ms", "--concurrency", "1")
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if "bench capacity" in ln)
    argv = shlex.split(line[line.index("bench capacity"):].rstrip(")"))[1:]
    args = build_parser().parse_args([a.replace("URL", "http://127.0.0.1:8000") for a in argv])
    assert args.command == "capacity"
    assert args.slo == parse_slo("ttft=1.5s,tpot=45ms")
    assert (args.input_len.a, args.output_len.a, args.ignore_eos) == (512, 128, True)


def test_slo_takes_the_same_targets_as_slo_ttft_and_slo_tpot() -> None:
    base = ("recommend", "--model", "qwen2.5-7b", "--gpu", "a10", "--input-len", "512", "--output-len", "128", "--json")
    combined = json.loads(run(*base, "--slo", "ttft=1.5s,tpot=45ms").stdout)["slo"]
    separate = json.loads(run(*base, "--slo-ttft", "1.5s", "--slo-tpot", "45ms").stdout)["slo"]
    assert combined == separate and combined["ttft_s"] == 1.5 and combined["tpot_s"] == 0.045
    only_tpot = json.loads(run(*base, "--slo", "tpot=45ms").stdout)["slo"]
    assert only_tpot["ttft_s"] is None and only_tpot["max_concurrency"] >= combined["max_concurrency"]

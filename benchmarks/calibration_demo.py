#!/usr/bin/env python
"""Calibration end to end: measure a deployment that is slower than sizing thinks, calibrate sizing on concurrency 1,
predict concurrency 10 and 100, and print the error before and after.

    .venv/bin/python benchmarks/calibration_demo.py [--slowdown 1.4] [--out DIR]      # about 3 minutes, no GPU

The measured server is bench's emulator of DeepSeek-R1-Distill-Qwen-32B on 4x V100-32G (sizing's own model of that
deployment: continuous batching, KV admission, chunked prefill) with every step and every fixed delay made
--slowdown times longer, so its truth is known and is not what sizing predicts. It serves the Hugging Face id, as
vLLM would, and `bench run --hardware "4x V100-32G"` records the card, so `sizing calibrate` finds the deployment
in run.json alone. Each level is its own run (concurrency 1, 10, 100); its first round of requests is warm-up, so
the measured requests see a steady mix of prefills and decodes. The shape is a reasoning model's (a short question,
a long answer): 128-word prompts, outputs uniform in 96..160 tokens (ignore_eos) so requests do not finish in lock
step. `sizing calibrate` fits on the concurrency-1 run only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.sim.config import SimConfig
from bench.sim.engine import EngineSpec, spec_from_sizing
from bench.sim.process import SimThread

MODEL, GPU, GPUS, HARDWARE = "distill-qwen-32b", "v100-32g", 4, "4x V100-32G"
LEVELS = ((1, 1, 3), (10, 10, 30), (100, 100, 200))     # concurrency, warm-up requests, measured requests


def slowed(spec: EngineSpec, factor: float) -> EngineSpec:
    """The same deployment with every decode step, prefill chunk and fixed TTFT delay `factor` times longer."""
    return replace(spec, label=f"{spec.label}, {factor:g}x slower than sizing's model",
                   decode_step_s=lambda b, ctx: factor * spec.decode_step_s(b, ctx),
                   prefill_compute_s=lambda tokens, prompt: factor * spec.prefill_compute_s(tokens, prompt),
                   prefill_s=lambda prompt: factor * spec.prefill_s(prompt))


def bench_run(url: str, model_id: str, out_dir: str, concurrency: int, warmup: int, requests: int) -> None:
    cmd = [sys.executable, "-m", "bench", "run", "--base-url", url, "--model", model_id, "--hardware", HARDWARE,
           "--concurrency", str(concurrency), "--warmup", str(warmup), "--num-requests", str(requests),
           "--input-len", "128", "--output-len", "uniform:96,160", "--ignore-eos", "--seed", "0",
           "--no-telemetry", "--quiet", "--no-progress", "--out", out_dir]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowdown", type=float, default=1.4, help="how much slower the measured server is")
    parser.add_argument("--out", help="folder for the runs and the profile (default: a temporary folder)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="calibration-demo-")
    spec = spec_from_sizing(MODEL, GPU, GPUS)
    model_id = spec.plan["hf_id"]
    truth = slowed(spec, args.slowdown)
    print(f"measured server: {truth.label}", flush=True)
    runs = []
    with SimThread(SimConfig(models=(model_id,), engine=truth, max_model_len=spec.max_model_len or 8192)) as sim:
        for concurrency, warmup, requests in LEVELS:
            run_dir = os.path.join(out, f"c{concurrency}")
            print(f"bench run --concurrency {concurrency} ({warmup} warm-up + {requests} measured requests) "
                  f"-> {run_dir}", flush=True)
            bench_run(sim.url, model_id, run_dir, concurrency, warmup, requests)
            runs.append(run_dir)
    calibrate = [sys.executable, "-m", "sizing.cli", "calibrate", *(os.path.relpath(r, out) for r in runs), "--on", "1",
                 "--out", "calibration.json"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    print(f"\n$ cd {out} && sizing calibrate {' '.join(calibrate[4:])}", flush=True)
    subprocess.run(calibrate, check=True, cwd=out, env=env)
    recommend = [sys.executable, "-m", "sizing.cli", "recommend", "--model", MODEL, "--gpu", GPU, "--gpus", str(GPUS),
                 "--input-len", "135", "--output-len", "128", "--concurrency", "1,10,100", "--calibration",
                 "calibration.json"]
    print(f"\n$ sizing recommend --model {MODEL} --gpu {GPU} --gpus {GPUS} --input-len 135 --output-len 128 "
          f"--calibration calibration.json", flush=True)
    text = subprocess.run(recommend, check=True, cwd=out, capture_output=True, text=True, env=env).stdout
    print("\n".join(line for line in text.splitlines()[:10] + [x for x in text.splitlines() if "Calibration" in x]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

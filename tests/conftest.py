"""Shared test helpers: a real simulated endpoint on loopback, and the CLI run as a user runs it."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from bench.sim import SimConfig, SimThread

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def make_sim():
    """Start a simulated endpoint (its own event loop in a thread) with the given SimConfig fields."""
    started: list[SimThread] = []

    def start(**fields) -> SimThread:
        fields.setdefault("keep_truth", True)
        sim = SimThread(SimConfig(**fields))
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def run(coro):
    return asyncio.run(coro)


def bench_cli(*args: str, env: dict | None = None, timeout: float = 120, cwd: Path | None = None):
    """Run ``python -m bench ARGS`` as a child process, as a user would from a shell."""
    full_env = dict(os.environ)
    full_env.pop("OPENAI_API_KEY", None)
    full_env.pop("ANTHROPIC_API_KEY", None)
    full_env["COLUMNS"] = "200"
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd or ROOT)


@pytest.fixture
def cli():
    return bench_cli


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_running(marker: str) -> list[psutil.Process]:
    """Live processes (not this one, not zombies) whose command line contains ``marker`` (e.g. a test's port)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [p for p in found if p.pid != os.getpid()]


def kill_leftovers(marker: str) -> None:
    """Kill (process group first) whatever still runs with ``marker`` in its command line: a test's teardown."""
    left = processes_running(marker)
    for p in left:
        try:
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            p.kill()
    psutil.wait_procs(left, timeout=10)


@contextlib.contextmanager
def app_in_thread(routes):
    """Serve a hand-written aiohttp app on a loopback port from a thread; ``routes`` is [(method, path, handler)].
    Yields the port."""
    import threading

    from aiohttp import web

    ready = threading.Event()
    box = {}

    def serve():
        loop = asyncio.new_event_loop()
        app = web.Application()
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        box["port"] = site._server.sockets[0].getsockname()[1]
        box["loop"] = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield box["port"]
    finally:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join(5)

"""Run the simulated endpoint beside a client: in a child process (what ``bench run`` does) or a thread (tests).

The child is ``python -m bench sim --port 0 ...``; it prints ``listening on URL`` as its first line once bound, so
the parent learns the port without racing. The child can be pinned to a CPU so the client keeps the other one. It
has its own process group and, started from the main thread, dies with its parent even on SIGKILL
(``bench.children``).
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from typing import Sequence

from ..children import OWN_GROUP, die_with_parent
from .config import SimConfig
from .server import SimServer

READY_PREFIX = "listening on "


class SimProcess:
    """A ``bench sim`` child process; a context manager that always stops it."""

    def __init__(self, args: Sequence[str] = (), cpu: int | None = None, startup_timeout_s: float = 20.0):
        self.args = list(args)
        self.cpu = cpu
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self) -> str:
        cmd = die_with_parent([sys.executable, "-m", "bench", "sim", "--host", "127.0.0.1", "--port", "0",
                               *self.args])
        preexec = None
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            cpu = self.cpu
            preexec = lambda: os.sched_setaffinity(0, {cpu})  # noqa: E731
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec, **OWN_GROUP)
        line = _readline_with_timeout(self.proc, self.startup_timeout_s)
        if not line.startswith(READY_PREFIX):
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"simulated endpoint failed to start: {line.strip() or err.strip()[-500:]}")
        self.url = line[len(READY_PREFIX):].strip()
        return self.url

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        self.proc = None

    def __enter__(self) -> "SimProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _readline_with_timeout(proc: subprocess.Popen, timeout_s: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0] if result else ""


class SimThread:
    """The simulated endpoint on its own event loop in a background thread (for tests)."""

    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self.server: SimServer | None = None
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        ready = threading.Event()
        error: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.server = SimServer(self.config)
                self.url = loop.run_until_complete(self.server.start())
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                error.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True, name="gpucap-sim")
        self._thread.start()
        ready.wait(20)
        if error:
            raise error[0]
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> "SimThread":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

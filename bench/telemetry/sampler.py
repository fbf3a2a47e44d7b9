"""The sampler: a thread that reads every available source each interval and appends one row to samples.csv.

Files, all beside `out_path` (samples.csv):
- samples.csv: one row per tick, flushed as written, so a crash keeps what was sampled. `t_ns` is `clock_ns()`
  at the start of the tick (time.perf_counter_ns, CLOCK_MONOTONIC on Linux: the request records' clock, and
  comparable across processes on one host); `wall_time` is UTC ISO 8601, for humans. The header is decided at
  start from what is available and stays fixed; what cannot be read at a tick is an empty cell.
- gpu_processes.jsonl: one line per compute process per GPU per tick: {"t_ns", "gpu", "pid", "mem_bytes"}.
  (Processes come and go during a run, so they cannot be columns of a fixed header.)
- server_metrics_first.prom / server_metrics_last.prom: the first and last successful scrapes of the server's
  Prometheus text, whole, for histogram_delta() (server-side TTFT/ITL distributions over the run).
- telemetry.json: what was sampled (GPUs by name and UUID, the server's pids, the metrics URL), the columns,
  the notes, the sample count; written at start and rewritten at stop.

Nothing here touches the client's event loop: the thread calls `client_probe()` (which must only read a few
attributes) and otherwise spends its time in NVML, /proc and one short HTTP GET, mostly outside the GIL.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
import urllib.error
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import psutil

from bench.telemetry.config import TelemetryConfig
from bench.telemetry.gpu import GpuReader
from bench.telemetry.processes import HostReader, ProcessTreeReader
from bench.telemetry.server_metrics import (
    COLUMNS as METRICS_COLUMNS,
    MetricsFormatError,
    MetricsScraper,
    has_vllm_metrics,
    parse_vllm_metrics,
)
from bench.telemetry.server_process import listening_pids, topmost

CLIENT_COLUMNS = ("phase", "in_flight", "client_loop_lag_ms", "client_cpu_pct", "client_rss_bytes", "sampler_cpu_pct")
SERVER_COLUMNS = ("server_virt_bytes", "server_res_bytes", "server_cpu_pct", "server_num_procs")
# client_probe() keys -> columns
PROBE_KEYS = {"phase": "phase", "in_flight": "in_flight", "loop_lag_ms": "client_loop_lag_ms"}

SAMPLES_FILE = "samples.csv"
GPU_PROCESSES_FILE = "gpu_processes.jsonl"
METRICS_FIRST_FILE = "server_metrics_first.prom"
METRICS_LAST_FILE = "server_metrics_last.prom"
META_FILE = "telemetry.json"


def _why(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


class Sampler:
    """Samples GPUs, host, server process, server metrics and the client itself every config.sample_interval_s.

    start() decides the columns, writes the header and starts the thread (the first row is taken at once);
    stop() takes a last row, joins and closes. Also a context manager. `note(line)` is called once per part
    that is skipped or breaks (from the caller's thread at start, from the sampler thread afterwards).
    """

    def __init__(self, config: TelemetryConfig, out_path: Path, *, clock_ns: Callable[[], int] = time.perf_counter_ns,
                 client_probe: Callable[[], dict] | None = None, nvml_module: Any = None,
                 note: Callable[[str], None] = print):
        self.config = config
        self.out_path = Path(out_path)
        self._clock_ns = clock_ns
        self._probe = client_probe
        self._nvml_module = nvml_module
        self._user_note = note
        self.notes: list[str] = []
        self.meta: dict[str, Any] = {}
        self.columns: list[str] = []
        self.sample_count = 0
        self._latest: dict[str, Any] | None = None
        self._lock = threading.Lock()  # guards _latest, the files and _closed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = self._closed = False
        self._gpu: GpuReader | None = None
        self._host = HostReader()
        self._client: ProcessTreeReader | None = None
        self._server: ProcessTreeReader | None = None
        self._scraper: MetricsScraper | None = None
        self._metrics_first: str | None = None
        self._metrics_last: str | None = None
        self._metrics_failing = False
        self._broken: set[str] = set()
        self._thread_cpu: tuple[float, float] | None = None
        self._csv_file = self._csv = self._procs_file = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            raise RuntimeError("Sampler.start() called twice")
        self._started = True
        if not self.config.enabled:
            return
        self._gpu = GpuReader.open(self._nvml_module, self.config.gpus, self._note)
        try:
            self._client = ProcessTreeReader([os.getpid()], self._note, label="client process", children=False)
            self._server = self._open_server()
            self._scraper = self._open_metrics()
            self.columns = self._decide_columns()
            self.out_path.parent.mkdir(parents=True, exist_ok=True)
            self._csv_file = open(self.out_path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - see stop()
            self._csv = csv.DictWriter(self._csv_file, fieldnames=self.columns, extrasaction="ignore")
            self._csv.writeheader()
            self._csv_file.flush()
            if self._gpu is not None:
                self._procs_file = open(self._side(GPU_PROCESSES_FILE), "w", encoding="utf-8")  # noqa: SIM115
            self._write_meta()
        except BaseException:  # e.g. the run folder is not writable: leave nothing open behind
            for f in (self._csv_file, self._procs_file):
                if f is not None:
                    f.close()
            if self._gpu is not None:
                self._gpu.close()
            self._closed = True
            raise
        self._thread = threading.Thread(target=self._run, name="gpucap-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if not self._started or self._closed or self._thread is None:
            self._closed = True
            return
        self._stop.set()
        wait_s = 5.0 + 2 * self.config.sample_interval_s + self.config.effective_scrape_timeout_s
        self._thread.join(wait_s)
        if self._thread.is_alive():
            self._note(f"telemetry thread did not stop within {wait_s:.0f} s; files closed without its last row")
        with self._lock:
            self._closed = True
            for f in (self._csv_file, self._procs_file):
                if f is not None:
                    f.close()
        if self._metrics_last is not None:
            self._side(METRICS_LAST_FILE).write_text(self._metrics_last, encoding="utf-8")
        if self._gpu is not None:
            self._gpu.close()
        self._write_meta()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading from outside ----------------------------------------------------------------------------------
    def latest(self) -> dict[str, Any] | None:
        """A copy of the last row written (column -> value, None for an empty cell), or None before the first."""
        with self._lock:
            return None if self._latest is None else dict(self._latest)

    def scrape_server_metrics(self) -> str | None:
        """Scrape the server's metrics now (blocking; call it through asyncio.to_thread from a loop), e.g. at a
        phase boundary for histogram_delta(). None when there is no metrics endpoint or it did not answer."""
        if self._scraper is None:
            return None
        try:
            return self._scraper.fetch()
        except OSError:
            return None

    # -- setup -------------------------------------------------------------------------------------------------
    def _note(self, line: str) -> None:
        self.notes.append(line)
        try:
            self._user_note(line)
        except Exception:  # noqa: BLE001 - a broken note callback must not stop sampling
            pass

    def _side(self, name: str) -> Path:
        return self.out_path.parent / name

    def _open_server(self) -> ProcessTreeReader | None:
        cfg = self.config
        if cfg.server_pid is not None:
            roots, how = [cfg.server_pid], f"--server-pid {cfg.server_pid}"
        elif cfg.server_port is not None:
            try:
                pids, why = listening_pids(cfg.server_port)
            except psutil.Error as err:
                pids, why = [], f"cannot list listening sockets ({err})"
            if not pids:
                self._note(f"server process telemetry skipped: {why}")
                return None
            roots, how = topmost(pids), f"listening on port {cfg.server_port}"
        else:
            self._note("server process telemetry skipped: no --server-pid, and the endpoint is not on this host")
            return None
        try:
            reader = ProcessTreeReader(roots, self._note)
        except psutil.NoSuchProcess:
            self._note(f"server process telemetry skipped: no process with pid {', '.join(map(str, roots))}")
            return None
        except psutil.AccessDenied:
            self._note(f"server process telemetry skipped: access denied to pid {', '.join(map(str, roots))}")
            return None
        if os.getpid() in roots:
            self._note("server process: the server is this process itself (an in-process server); "
                       "its VIRT, RES and CPU include the load generator's")
        names = []
        for pid in roots:
            try:
                names.append(f"{pid} ({psutil.Process(pid).name()})")
            except psutil.Error:
                names.append(str(pid))
        self.meta["server_process"] = {"pids": roots, "found_by": how, "names": names}
        return reader

    def _open_metrics(self) -> MetricsScraper | None:
        cfg = self.config
        url = cfg.server_metrics_url
        if not url:
            self._note("server metrics skipped: no --server-metrics URL")
            return None
        try:
            scraper = MetricsScraper(url, cfg.effective_scrape_timeout_s)
        except ValueError as err:
            self._note(f"server metrics skipped: {err}")
            return None
        try:
            text = scraper.fetch()
        except OSError as err:
            if cfg.server_metrics_auto:
                self._note(f"server metrics: nothing at {url} ({_why(err)}); skipped")
                return None
            self._note(f"server metrics: {url} did not answer ({_why(err)}); its cells stay empty until it does")
            self._metrics_failing = True
            self._broken.add("metrics failing")  # this was the one note for a failing endpoint
            self.meta["server_metrics_url"] = url
            return scraper
        try:
            found = has_vllm_metrics(text)
        except MetricsFormatError:
            found = False
        if not found:
            self._note(f"server metrics skipped: {url} has no vLLM metrics (vllm:*)")
            return None
        self._keep_metrics_text(text)
        self.meta["server_metrics_url"] = url
        return scraper

    def _decide_columns(self) -> list[str]:
        cols = ["t_ns", "wall_time", *CLIENT_COLUMNS, *HostReader.COLUMNS]
        if self._gpu is not None:
            cols += self._gpu.columns()
        if self._server is not None:
            cols += SERVER_COLUMNS
            if self._gpu is not None:
                cols.append("server_gpu_mem_bytes")
        if self._scraper is not None:
            cols += METRICS_COLUMNS
        return cols

    def _write_meta(self) -> None:
        cfg = self.config
        self.meta.update({
            "clock": "time.perf_counter_ns (CLOCK_MONOTONIC on Linux)",
            "sample_interval_s": cfg.sample_interval_s,
            "columns": self.columns,
            "gpus": self._gpu.describe() if self._gpu is not None else [],
            "samples": self.sample_count,
            "notes": self.notes,
            "files": {"samples": self.out_path.name,
                      "gpu_processes": GPU_PROCESSES_FILE if self._gpu is not None else None,
                      "server_metrics_first": METRICS_FIRST_FILE if self._metrics_first is not None else None,
                      "server_metrics_last": METRICS_LAST_FILE if self._metrics_last is not None else None},
        })
        if "started_t_ns" not in self.meta:
            self.meta["started_wall_time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            self.meta["started_t_ns"] = self._clock_ns()
        self._side(META_FILE).write_text(json.dumps(self.meta, indent=2, default=str) + "\n", encoding="utf-8")

    # -- the thread --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        interval = self.config.sample_interval_s
        next_t = time.monotonic()
        while True:
            self._tick_safely()
            next_t += interval
            now = time.monotonic()
            if next_t <= now:  # a slow tick: skip the slots it ran over instead of bunching rows together
                next_t += interval * (int((now - next_t) / interval) + 1)
            if self._stop.wait(next_t - now):
                break
        self._tick_safely()  # a last row at stop, so the end of the last phase has a sample

    def _tick_safely(self) -> None:
        try:
            self._tick()
        except Exception as err:  # noqa: BLE001 - a bug in one tick must not end sampling
            self._part_failed("sample row", err)

    def _part_failed(self, part: str, err: BaseException) -> None:
        if part not in self._broken:
            self._broken.add(part)
            self._note(f"telemetry: reading {part} failed ({type(err).__name__}: {err}); those cells stay empty")

    def _tick(self) -> None:
        row: dict[str, Any] = dict.fromkeys(self.columns)
        t_ns = self._clock_ns()
        row["t_ns"] = t_ns
        row["wall_time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        if self._probe is not None:
            try:
                info = self._probe() or {}
                for key, col in PROBE_KEYS.items():
                    row[col] = info.get(key)
            except Exception as err:  # noqa: BLE001
                self._part_failed("client_probe()", err)
        try:
            client = self._client.read() if self._client is not None else {}
            row["client_cpu_pct"] = client.get("cpu_pct")
            row["client_rss_bytes"] = client.get("res_bytes")
        except Exception as err:  # noqa: BLE001
            self._part_failed("the client process", err)
        row["sampler_cpu_pct"] = self._sampler_cpu_pct()
        try:
            row.update(self._host.read())
        except Exception as err:  # noqa: BLE001
            self._part_failed("host memory and CPU", err)
        gpu_procs = []
        if self._gpu is not None:
            try:
                values, gpu_procs = self._gpu.read()
                row.update(values)
            except Exception as err:  # noqa: BLE001
                self._part_failed("GPUs", err)
        if self._server is not None:
            try:
                server = self._server.read()
                for key in ("virt_bytes", "res_bytes", "cpu_pct", "num_procs"):
                    row[f"server_{key}"] = server[key]
                if self._gpu is not None:
                    pids = set(server["pids"])
                    mine = [p.mem_bytes for p in gpu_procs if p.pid in pids and p.mem_bytes is not None]
                    row["server_gpu_mem_bytes"] = sum(mine) if mine else None
            except Exception as err:  # noqa: BLE001
                self._part_failed("the server process", err)
        if self._scraper is not None:
            row.update(self._scrape())
        self._write(row, [{"t_ns": t_ns, "gpu": p.gpu, "pid": p.pid, "mem_bytes": p.mem_bytes} for p in gpu_procs])

    def _sampler_cpu_pct(self) -> float | None:
        now = (time.monotonic(), time.thread_time())
        last, self._thread_cpu = self._thread_cpu, now
        if last is None or now[0] <= last[0]:
            return None
        return 100.0 * (now[1] - last[1]) / (now[0] - last[0])

    def _scrape(self) -> dict[str, float | None]:
        try:
            text = self._scraper.fetch()
            values = parse_vllm_metrics(text)
        except (OSError, MetricsFormatError) as err:
            self.meta["server_metrics_failed_scrapes"] = self.meta.get("server_metrics_failed_scrapes", 0) + 1
            if not self._metrics_failing:
                self._metrics_failing = True
                if "metrics failing" not in self._broken:  # one note per run, however often it flaps
                    self._broken.add("metrics failing")
                    self._note(f"server metrics: scrape of {self._scraper.url} failed ({_why(err)}); "
                               "its cells stay empty while it fails")
            return {}
        if self._metrics_failing:
            self._metrics_failing = False
            if "metrics answering" not in self._broken:
                self._broken.add("metrics answering")
                self._note(f"server metrics: {self._scraper.url} answering")
        self._keep_metrics_text(text)
        return values

    def _keep_metrics_text(self, text: str) -> None:
        if self._metrics_first is None:
            self._metrics_first = text
            self._side(METRICS_FIRST_FILE).parent.mkdir(parents=True, exist_ok=True)
            self._side(METRICS_FIRST_FILE).write_text(text, encoding="utf-8")
        self._metrics_last = text

    def _write(self, row: dict[str, Any], procs: list[dict]) -> None:
        with self._lock:
            if self._closed:
                return
            self._csv.writerow(row)
            self._csv_file.flush()
            if self._procs_file is not None and procs:
                self._procs_file.write("".join(json.dumps(p) + "\n" for p in procs))
                self._procs_file.flush()
            self._latest = row
            self.sample_count += 1

"""`bench monitor`: the sampler alone, with a live view, for servers loaded by another tool.

Parses flags into one TelemetryConfig, runs a Sampler until --duration or Ctrl-C, renders, prints one summary line.
Also runnable as `python -m bench.telemetry.monitor_cmd`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from bench.telemetry.config import TelemetryConfig
from bench.telemetry.sampler import SAMPLES_FILE, Sampler
from bench.telemetry.summary import gpu_indices, summarize_samples

GIB = 1024**3


# -- flag types: each raises ArgumentTypeError, which argparse turns into "error: argument ...", exit 2 -----------
def _gpu_list(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected GPU indices like 0 or 0,1; got {text!r}")
    return tuple(dict.fromkeys(int(p) for p in parts))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {text!r}")
    return value


def _seconds(minimum: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds as a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum:g} seconds, got {text!r}")
        return value
    return parse


def _url(text: str) -> str:
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(f"expected an http(s) URL such as http://127.0.0.1:8000/metrics, got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=_gpu_list, default=None, metavar="I[,J...]",
                        help="NVML GPU indices to sample, as nvidia-smi numbers them (default: all)")
    parser.add_argument("--server-pid", type=_positive_int, default=None, metavar="PID",
                        help="the server process; its VIRT, RES and CPU are summed with its children's")
    parser.add_argument("--server-port", type=_port, default=None, metavar="PORT",
                        help="find the server as the local process listening on PORT (when no --server-pid); "
                             "http://127.0.0.1:PORT/metrics is then tried for server metrics")
    parser.add_argument("--server-metrics", type=_url, default=None, metavar="URL",
                        help="the server's Prometheus endpoint, e.g. http://127.0.0.1:8000/metrics (vLLM)")
    parser.add_argument("--sample-interval", type=_seconds(0.05), default=0.5, metavar="S",
                        help="seconds between samples (default 0.5, at least 0.05)")
    parser.add_argument("--duration", type=_seconds(0.05), default=None, metavar="S",
                        help="stop after S seconds (default: run until Ctrl-C)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help=f"write {SAMPLES_FILE} and its companions into DIR (default: keep nothing)")


def config_from_args(args: argparse.Namespace) -> TelemetryConfig:
    url, auto = args.server_metrics, False
    if url is None and args.server_port is not None:
        url, auto = f"http://127.0.0.1:{args.server_port}/metrics", True
    return TelemetryConfig(sample_interval_s=args.sample_interval, gpus=args.gpus, server_pid=args.server_pid,
                           server_port=args.server_port, server_metrics_url=url, server_metrics_auto=auto)


# -- rendering -----------------------------------------------------------------------------------------------------
def _gib(value: Any) -> str:
    return "-" if value is None else f"{value / GIB:.1f} GiB"


def _num(value: Any, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def render(row: dict | None, prev: dict | None, elapsed_s: float, samples: int) -> Table:
    """The live view: one line per source, from the latest sample row (and the one before, for rates)."""
    table = Table(title=f"bench monitor  {elapsed_s:.0f} s, {samples} samples", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    if row is None:
        table.add_row("", "waiting for the first sample...")
        return table
    for i in gpu_indices(list(row)):
        g = {k[len(f"gpu{i}_"):]: v for k, v in row.items() if k.startswith(f"gpu{i}_")}
        table.add_row(f"GPU {i}", f"mem {_gib(g['mem_used_bytes'])} / {_gib(g['mem_total_bytes'])}   "
                      f"util {_num(g['util_pct'], '.0f', '%')}   mem util {_num(g['mem_util_pct'], '.0f', '%')}   "
                      f"{_num(g['power_w'], '.0f', ' W')}   {_num(g['temp_c'], '.0f', ' °C')}   "
                      f"{_num(g['sm_clock_mhz'], '.0f', ' MHz')}")
    if "gpu_mem_used_bytes_total" in row:
        table.add_row("GPUs", f"mem {_gib(row['gpu_mem_used_bytes_total'])}")
    table.add_row("host", f"RAM used {_gib(row['host_ram_used_bytes'])}   available "
                  f"{_gib(row['host_ram_available_bytes'])}   swap {_gib(row['host_swap_used_bytes'])}   "
                  f"CPU {_num(row['host_cpu_pct'], '.0f', '%')}")
    if "server_res_bytes" in row:
        gpu_mem = f"   GPU mem {_gib(row['server_gpu_mem_bytes'])}" if "server_gpu_mem_bytes" in row else ""
        table.add_row("server", f"RES {_gib(row['server_res_bytes'])}   VIRT {_gib(row['server_virt_bytes'])}   "
                      f"CPU {_num(row['server_cpu_pct'], '.0f', '%')}   "
                      f"{_num(row['server_num_procs'], 'd', ' processes')}{gpu_mem}")
    if "kv_cache_usage_pct" in row:
        rate = None
        if prev is not None and row["generation_tokens_total"] is not None \
                and prev.get("generation_tokens_total") is not None and row["t_ns"] > prev["t_ns"]:
            rate = max(0.0, row["generation_tokens_total"] - prev["generation_tokens_total"]) \
                / ((row["t_ns"] - prev["t_ns"]) / 1e9)
        table.add_row("server metrics", f"KV cache {_num(row['kv_cache_usage_pct'], '.1f', '%')}   running "
                      f"{_num(row['requests_running'], '.0f')}   waiting {_num(row['requests_waiting'], '.0f')}   "
                      f"generation {_num(rate, '.0f', ' tok/s')}   preemptions {_num(row['preemptions_total'], '.0f')}")
    table.add_row("monitor", f"CPU {_num(row['client_cpu_pct'], '.1f', '%')}")
    return table


def summary_line(s: dict, samples_path: Path | None) -> str:
    parts = [f"bench monitor: {s['duration_s']:.1f} s, {s['n_samples']} samples"]
    if s["gpus"]:
        per_gpu = ", ".join(f"gpu{i} {_gib(s[f'gpu{i}_mem_used_bytes_peak'])}" for i in s["gpus"])
        parts.append(f"peak GPU memory {_gib(s['gpu_mem_used_bytes_total_peak'])} ({per_gpu})")
    parts.append(f"peak host RAM used {_gib(s['host_ram_used_bytes_peak'])}")
    if s["server_res_bytes_peak"] is not None:
        parts.append(f"peak server RES {_gib(s['server_res_bytes_peak'])}, VIRT {_gib(s['server_virt_bytes_peak'])}")
    if s["kv_cache_usage_pct_peak"] is not None:
        parts.append(f"peak KV cache {s['kv_cache_usage_pct_peak']:.1f}%")
    if samples_path is not None:
        parts.append(f"samples in {samples_path}")
    return "; ".join(parts)


# -- the command ---------------------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    config = config_from_args(args)
    out_dir = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="gpucap-monitor-"))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err.print(f"bench monitor: cannot create --out {out_dir}: {e.strerror or e}", markup=False, soft_wrap=True)
        return 1
    stop = threading.Event()
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
    samples_path = out_dir / SAMPLES_FILE
    sampler = Sampler(config, samples_path, note=lambda line: err.print(line, markup=False, soft_wrap=True))
    t_start_ns = time.perf_counter_ns()
    try:
        sampler.start()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        prev = row = None
        # Not a terminal (piped, logged): no live view, samples.csv is the record and the summary line the result.
        live = Live(render(None, None, 0.0, 0), console=out, auto_refresh=False) if out.is_terminal else None
        with live if live is not None else contextlib.nullcontext():
            while not stop.is_set():
                wait = config.sample_interval_s
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                stop.wait(wait)
                latest = sampler.latest()
                if latest is not None and (row is None or latest["t_ns"] != row["t_ns"]):
                    prev, row = row, latest
                if live is not None:
                    elapsed_s = (time.perf_counter_ns() - t_start_ns) / 1e9
                    live.update(render(row, prev, elapsed_s, sampler.sample_count), refresh=True)
    except KeyboardInterrupt:  # only when SIGINT could not be routed to `stop` (not the main thread)
        pass
    finally:
        sampler.stop()
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
    t_end_ns = time.perf_counter_ns()
    summary = summarize_samples(samples_path, [("monitor", t_start_ns, t_end_ns)])["monitor"]
    out.print(summary_line(summary, samples_path if args.out is not None else None), markup=False, soft_wrap=True)
    if args.out is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench monitor", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_standalone())

"""``bench selftest``: how accurate and how strong is this client on this machine? A benchmark, not a unit test.

The simulated endpoint runs in a child process (pinned to its own CPU when there are two or more) and records
the true emission time of every token (``--record-truth``). The client runs here, pinned to another CPU, at each
concurrency and inter-token delay, and every measurement is compared with the truth of the same request:

- TTFT error = measured TTFT - true TTFT, where true TTFT = first token's emission - the request's arrival in the
  server's handler (so the error is everything the client and the loopback network add), as mean and p99 of the
  two distributions;
- ITL error = measured ITL - true ITL (gaps between emissions), mean and p99 of the two distributions;
- event delay = arrival of an event at the client - its emission at the server (mean, p99); for the first token
  this is the client's whole share of the TTFT error, since TTFT starts when the request's bytes were handed to
  the socket;
- server pickup = the server's receipt of the request - the client's write. On loopback the bytes are in the
  server's socket when the write returns, so this is the simulator's own delay in getting to them (its event loop
  was busy), which the TTFT error above includes: that column is an upper bound on the client's error;
- throughput = measured aggregate output tokens/s / true tokens/s over the same requests;
- achieved concurrency (Little's law) against the target;
- token events per second received, and client CPU seconds per 1,000 tokens.

All times come from ``perf_counter_ns`` (CLOCK_MONOTONIC), which both processes share.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import aio
from .apis import APIS
from .client import Target
from .metrics import derive
from .records import RequestRecord
from .runner import LoadLevel, LoadPlan, Runner, make_session
from .sim.process import SimProcess
from .sim.truth import read_truth
from .summary import summarize_level
from .workload import LengthSpec, synthetic_prompts

NS_PER_MS = 1e6
TARGETS = {  # at concurrency 100, 10 ms inter-token delay; and at 0 ms delay
    "ttft_err_mean_ms": 3.0, "ttft_err_p99_ms": 8.0, "itl_err_mean_ms": 0.1, "itl_err_p99_ms": 0.5,
    "throughput_pct": 99.0, "events_per_s": 100_000,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import int_list
    p.add_argument("--concurrency", type=int_list, default=[1, 10, 100, 500], metavar="N[,N...]")
    p.add_argument("--itl-ms", default="10,1,0", metavar="MS[,MS...]", help="inter-token delays to test")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--output-len", type=int, default=100, help="tokens per request")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="requests per level = rounds x concurrency (min 30)")
    p.add_argument("--json", type=Path, help="also write the table as JSON here")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    p.add_argument("--busy-poll", action="store_true",
                   help="run the client as bench run --busy-poll does (its core kept awake)")
    p.add_argument("--telemetry-check", action="store_true",
                   help="also run c=100 at 10 ms twice without and twice with the telemetry sampler (every 0.1 s)")


@dataclass
class Cell:
    concurrency: int
    itl_ms: float
    row: dict[str, Any]


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def compare(records: list[RequestRecord], truth: dict[str, dict], cpu_s: float, duration_s: float,
            concurrency: int, itl_ms: float) -> dict[str, Any]:
    """Measured vs true for one level (pure: records and truth in, one table row out)."""
    m_ttft, t_ttft, m_itl, t_itl, delays, first_delays, pickups = [], [], [], [], [], [], []
    true_tokens = 0
    first_arrival, last_emit = None, None
    events = 0
    ok_records = [r for r in records if r.error_class is None and r.request_id in truth]
    for r in ok_records:
        t = truth[r.request_id]
        m = derive(r)
        emits = t["emit_ns"]
        if not emits or m.ttft_ms is None:
            continue
        m_ttft.append(m.ttft_ms)
        t_ttft.append((emits[0] - t["arrival_ns"]) / NS_PER_MS)
        m_itl.extend(m.itl_ms)
        t_itl.extend((b - a) / NS_PER_MS for a, b in zip(emits, emits[1:]))
        text = [i for i, k in enumerate(r.event_kinds) if k in "ar"]
        events += len(text)
        for idx, emit in zip(text, emits):
            delays.append((r.send_ns + r.event_offsets_ns[idx] - emit) / NS_PER_MS)
        first_delays.append((r.send_ns + r.event_offsets_ns[text[0]] - emits[0]) / NS_PER_MS)
        if r.written_ns is not None:
            pickups.append((t["arrival_ns"] - r.written_ns) / NS_PER_MS)
        true_tokens += t["output_tokens"]
        first_arrival = t["arrival_ns"] if first_arrival is None else min(first_arrival, t["arrival_ns"])
        last_emit = emits[-1] if last_emit is None else max(last_emit, emits[-1])
    summary = summarize_level("selftest", records, concurrency=concurrency, request_rate=None)
    true_tps = true_tokens / ((last_emit - first_arrival) / 1e9) if true_tokens and last_emit else None
    measured_tps = summary["output_tokens_per_s"]
    mean_or = lambda a, b: a - b if a is not None and b is not None else None  # noqa: E731
    return {
        "concurrency": concurrency,
        "itl_ms": itl_ms,
        "requests": len(records),
        "ok": summary["ok"],
        "true_ttft_mean_ms": _mean(t_ttft),
        "ttft_err_mean_ms": mean_or(_mean(m_ttft), _mean(t_ttft)),
        "ttft_err_p99_ms": mean_or(_pct(m_ttft, 99), _pct(t_ttft, 99)),
        "true_itl_mean_ms": _mean(t_itl),
        "itl_err_mean_ms": mean_or(_mean(m_itl), _mean(t_itl)),
        "itl_err_p99_ms": mean_or(_pct(m_itl, 99), _pct(t_itl, 99)),
        "first_token_delay_mean_ms": _mean(first_delays),
        "first_token_delay_p99_ms": _pct(first_delays, 99),
        "event_delay_mean_ms": _mean(delays),
        "event_delay_p99_ms": _pct(delays, 99),
        "server_pickup_mean_ms": _mean(pickups),
        "server_pickup_p99_ms": _pct(pickups, 99),
        "achieved_concurrency": summary["achieved_concurrency"],
        "throughput_pct": 100.0 * measured_tps / true_tps if measured_tps and true_tps else None,
        "token_events_per_s": events / duration_s if duration_s > 0 else None,
        "client_cpu_s_per_1k_tokens": 1000.0 * cpu_s / true_tokens if true_tokens else None,
        "client_cpu_pct": 100.0 * cpu_s / duration_s if duration_s > 0 else None,
    }


async def _run_level(url: str, concurrency: int, n: int, args, sampler=None) -> tuple[list[RequestRecord], float, float]:
    target = Target(url, APIS["openai-chat"], "gpucap-sim", continuous_usage=True,
                    extra_body={"ignore_eos": True})
    prompts = synthetic_prompts(np.random.default_rng(0), n, LengthSpec("fixed", args.input_len),
                                LengthSpec("fixed", args.output_len))
    level = LoadLevel(f"c={concurrency}", concurrency, num_requests=n)
    plan = LoadPlan(levels=(level,), prompts=tuple(prompts), timeout_s=120,
                    busy_poll=args.busy_poll)
    runner = Runner(target, plan, None)
    async with make_session(concurrency, 120) as session:
        # one untimed request per connection first, so connection set-up is not part of the measurement
        warm = LoadLevel("warm", concurrency, num_requests=concurrency)
        await runner.run_level(session, 0, warm)
        if sampler is not None:
            sampler.start()
        try:
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = await runner.run_level(session, 1, level)
            cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - t0
        finally:
            if sampler is not None:
                sampler.stop()
    return result.records, cpu_s, wall_s


def telemetry_check(args, progress=print) -> list[dict[str, Any]]:
    """The same level (c=100, 10 ms) without and with the telemetry sampler running (every 0.1 s, watching the
    simulator's process and /metrics): the sampler must not move the client's measurements."""
    from .telemetry import Sampler, TelemetryConfig

    rows = []
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    sim_cpu = cpus[-1] if len(cpus) >= 2 else None
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            truth_path = Path(tmp) / "truth.jsonl"
            sim = SimProcess(["--ttft-ms", f"{args.ttft_ms:g}", "--itl-ms", "10", "--record-truth", str(truth_path),
                              "--max-model-len", "1000000"], cpu=sim_cpu)
            with sim:
                root = sim.url.rsplit("/v1", 1)[0]
                for with_sampler in (False, True, False, True):
                    sampler = None
                    if with_sampler:
                        config = TelemetryConfig(sample_interval_s=0.1, server_pid=sim.pid,
                                                 server_metrics_url=root + "/metrics")
                        sampler = Sampler(config, Path(tmp) / "samples.csv", note=lambda _m: None)
                    records, cpu_s, wall_s = aio.run(_run_level(sim.url, 100, 300, args, sampler))
                    time.sleep(0.2)
                    row = compare(records, read_truth(truth_path), cpu_s, wall_s, 100, 10.0)
                    row["telemetry"] = with_sampler
                    rows.append(row)
                    progress(row)
    finally:
        if len(cpus) >= 2:
            os.sched_setaffinity(0, set(cpus))
    return rows


def run_selftest(concurrencies: list[int], itls: list[float], args, progress=print) -> list[dict[str, Any]]:
    rows = []
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    sim_cpu = cpus[-1] if len(cpus) >= 2 else None
    client_cpus = {cpus[0]} if len(cpus) >= 2 else None
    old_affinity = set(cpus)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    try:
        for itl in itls:
            with tempfile.TemporaryDirectory() as tmp:
                truth_path = Path(tmp) / "truth.jsonl"
                sim = SimProcess(["--ttft-ms", f"{args.ttft_ms:g}", "--itl-ms", f"{itl:g}",
                                  "--record-truth", str(truth_path), "--max-model-len", "1000000"], cpu=sim_cpu)
                with sim:
                    for c in concurrencies:
                        n = max(30, args.rounds * c)
                        records, cpu_s, wall_s = aio.run(_run_level(sim.url, c, n, args))
                        time.sleep(0.2)  # let the simulator flush the truth of the last requests
                        truth = read_truth(truth_path)
                        row = compare(records, truth, cpu_s, wall_s, c, itl)
                        rows.append(row)
                        progress(row)
    finally:
        if client_cpus:
            os.sched_setaffinity(0, old_affinity)
    return rows


COLUMNS = [
    ("concurrency", "conc", 0), ("itl_ms", "ITL set ms", 0), ("ok", "ok", 0),
    ("ttft_err_mean_ms", "TTFT err mean ms", 2), ("ttft_err_p99_ms", "TTFT err p99 ms", 2),
    ("itl_err_mean_ms", "ITL err mean ms", 3), ("itl_err_p99_ms", "ITL err p99 ms", 3),
    ("first_token_delay_mean_ms", "1st-token delay mean ms", 2),
    ("first_token_delay_p99_ms", "1st-token delay p99 ms", 2),
    ("event_delay_p99_ms", "event delay p99 ms", 2), ("server_pickup_p99_ms", "sim pickup p99 ms", 2),
    ("achieved_concurrency", "achieved conc", 1),
    ("throughput_pct", "throughput % of true", 1), ("token_events_per_s", "token events/s", 0),
    ("client_cpu_s_per_1k_tokens", "client CPU s / 1k tok", 4), ("client_cpu_pct", "client CPU %", 0),
]


def _cell(value, digits) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(r[k], d) for k, _, d in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    ref = next((r for r in rows if r["concurrency"] == 100 and r["itl_ms"] == 10), None)
    if ref:
        for key in ("ttft_err_mean_ms", "ttft_err_p99_ms", "itl_err_mean_ms", "itl_err_p99_ms"):
            v = ref[key]
            ok = v is not None and abs(v) < TARGETS[key]
            out.append(f"{'PASS' if ok else 'FAIL'} c=100 itl=10ms {key} = {_cell(v, 3)} (target |x| < "
                       f"{TARGETS[key]})")
        out.append(f"     TTFT error split: the client's own first-token delay mean "
                   f"{_cell(ref['first_token_delay_mean_ms'], 3)} / p99 {_cell(ref['first_token_delay_p99_ms'], 3)} "
                   f"ms; the simulator's pickup of the request mean {_cell(ref['server_pickup_mean_ms'], 3)} / "
                   f"p99 {_cell(ref['server_pickup_p99_ms'], 3)} ms")
        v = ref["throughput_pct"]
        out.append(f"{'PASS' if v and v >= TARGETS['throughput_pct'] else 'FAIL'} c=100 itl=10ms throughput "
                   f"{_cell(v, 1)}% of true (target >= {TARGETS['throughput_pct']}%)")
    zero = [r for r in rows if r["itl_ms"] == 0 and r["token_events_per_s"]]
    if zero:
        best = max(zero, key=lambda r: r["token_events_per_s"])
        rate = best["token_events_per_s"]
        out.append(f"{'PASS' if rate >= TARGETS['events_per_s'] else 'FAIL'} itl=0ms best token events/s = "
                   f"{rate:,.0f} on one client core (target >= {TARGETS['events_per_s']:,})")
        per_k, pct = best["client_cpu_s_per_1k_tokens"], best["client_cpu_pct"]
        if per_k and pct is not None:
            out.append(f"     at c={best['concurrency']} the client used {pct:.0f}% of its core, {per_k * 1000:.1f} us "
                       f"per token event: about {1e6 / (per_k * 1000):,.0f} events/s when the core is fully used"
                       + (" (the simulator, not the client, set the pace)" if pct < 90 else ""))
    return out


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.table import Table

    from .console import default_console

    try:
        itls = [float(x) for x in args.itl_ms.split(",") if x.strip()]
        if not itls or any(x < 0 for x in itls):
            raise ValueError
    except ValueError:
        parser.error(f"--itl-ms {args.itl_ms!r}: expected milliseconds >= 0, comma-separated (example: 10,1,0)")
    console = default_console()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    console.print(f"bench selftest: simulated endpoint (TTFT {args.ttft_ms:g} ms, {args.output_len} tokens) "
                  f"{'on its own CPU, client on another' if cpus >= 2 else 'sharing the only CPU with the client'}"
                  + ("; client core kept awake (--busy-poll)" if args.busy_poll else ""))
    rows = run_selftest(args.concurrency, itls, args, progress=lambda r: console.print(
        f"  c={r['concurrency']:<4} itl={r['itl_ms']:g} ms: TTFT err {_cell(r['ttft_err_mean_ms'], 2)} ms, "
        f"{_cell(r['token_events_per_s'], 0)} events/s"))
    if args.markdown:
        console.print(markdown(rows), markup=False)
    else:
        table = Table(title="client accuracy and capacity (measured - true)")
        for _, title, _ in COLUMNS:
            table.add_column(title, justify="right")
        for r in rows:
            table.add_row(*[_cell(r[k], d) for k, _, d in COLUMNS])
        console.print(table)
    for line in verdicts(rows):
        console.print(line, markup=False, soft_wrap=True)
    if args.telemetry_check:
        console.print("telemetry check: c=100, 10 ms between tokens, sampler off/on/off/on (every 0.1 s)")
        checks = telemetry_check(args, progress=lambda r: None)
        for r in checks:
            console.print(f"  sampler {'on ' if r['telemetry'] else 'off'}: ITL err mean {_cell(r['itl_err_mean_ms'], 3)} "
                          f"p99 {_cell(r['itl_err_p99_ms'], 3)} ms, event delay p99 {_cell(r['event_delay_p99_ms'], 3)} "
                          f"ms, TTFT err mean {_cell(r['ttft_err_mean_ms'], 2)} ms", markup=False)
        rows += checks
    if args.json:
        import json
        args.json.write_text(json.dumps(rows, indent=2))
    return 0

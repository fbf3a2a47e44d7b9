"""Reading `bench run` folders for calibration: which deployment was measured, and what each load level measured.

A run folder holds run.json (the target, the `--hardware` text, `sim` when the built-in emulator served it,
`server` with the engine's details when `--launch` started it), summary.json (`levels[]`, see docs/metrics.md) and,
when a GPU was present, telemetry.json (NVML names under `gpus`).

Each field of the deployment is taken from the first source that names it:
  explicit values (the `sizing calibrate` flags) > run.json `sim` > run.json `server` > the `hardware` text
  ('4x V100-32G', '8 x a100-40g', '2xH100') > telemetry.json GPU names;
the model falls back to the served id (`target.model`). Nothing here prints or fits; bad input is a SizingError.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from sizing.errors import SizingError
from sizing.gpus import Gpu, match_device_name, resolve_gpu
from sizing.models import resolve_model

RUN_FLAG = "RUN_DIR"
# vLLM --quantization / --dtype words -> sizing quantization keys
_QUANT_WORDS = {"awq": "awq", "awq_marlin": "awq", "gptq": "gptq-int4", "gptq_marlin": "gptq-int4",
                "fp8": "fp8", "float16": "fp16", "half": "fp16", "fp16": "fp16", "torch.float16": "fp16",
                "bfloat16": "bf16", "bf16": "bf16", "torch.bfloat16": "bf16"}


@dataclass(frozen=True)
class MeasuredLevel:
    """One closed-loop level of a run, as summary.json reports it (means over the successful requests)."""

    run: str
    label: str
    concurrency: int
    ok: int
    input_tokens: float          # mean prompt tokens (server usage)
    output_tokens: float         # mean output tokens
    tpot_s: float | None         # mean time per output token; None without streaming or with 1-token outputs
    ttft_s: float | None         # mean time to first token
    seen_concurrency: float | None = None   # requests in flight while the measured ones decoded (requests.jsonl)

    @property
    def model_concurrency(self) -> int:
        """The concurrency to predict at: what the requests saw when requests.jsonl tells, else the target."""
        return max(1, round(self.seen_concurrency)) if self.seen_concurrency else self.concurrency

    @property
    def key(self) -> tuple[str, int]:
        return (self.run, self.concurrency)


@dataclass(frozen=True)
class RunFolder:
    path: str
    run: dict[str, Any]
    levels: tuple[MeasuredLevel, ...]
    telemetry_gpus: tuple[str, ...]
    skipped: tuple[str, ...] = ()          # levels left out, each with its reason


@dataclass(frozen=True)
class Deployment:
    model: str                   # sizing model key (or a config.json path)
    gpu: str                     # catalog card key
    gpus: int
    quant: str | None            # None: the model's released precision
    engine: str
    layout: dict[str, int] | None = None   # tp/pp/dp when the server said so
    decided_from: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "gpu": self.gpu, "gpus": self.gpus, "quant": self.quant, "engine": self.engine,
                "layout": self.layout, "decided_from": dict(self.decided_from)}


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SizingError(RUN_FLAG, f"{path} cannot be read as JSON ({exc.__class__.__name__}: {exc}).") from None


def _mean(stat: Any) -> float | None:
    return float(stat["mean"]) if isinstance(stat, dict) and stat.get("mean") is not None else None


def seen_concurrency(records: list[dict[str, Any]]) -> dict[str, float]:
    """{phase: mean over its measured, streamed requests of the requests in flight (send to end, warm-up included)
    averaged over that request's decode (first to last text event)}.

    sizing's closed-loop estimate assumes c requests in the system all the time; a bench level ramps up and drains
    at its end, so a level of c = 100 whose last requests decode beside fewer and fewer others saw less than 100."""
    import numpy as np

    by_phase: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if isinstance(r.get("send_ns"), int) and isinstance(r.get("end_ns"), int):
            by_phase.setdefault(str(r.get("phase")), []).append(r)
    out = {}
    for phase, recs in by_phase.items():
        starts = np.array([r["send_ns"] for r in recs], dtype=float)
        ends = np.array([r["end_ns"] for r in recs], dtype=float)
        seen = []
        for r in recs:
            text = [o for o, k in zip(r.get("event_offsets_ns") or [], r.get("event_kinds") or "") if k in "ar"]
            if r.get("warmup") or r.get("error_class") or len(text) < 2:
                continue
            a, b = r["send_ns"] + text[0], r["send_ns"] + text[-1]
            if b <= a:
                continue
            overlap = np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0.0, None)
            seen.append(float(overlap.sum()) / (b - a))
        if seen:
            out[phase] = float(np.mean(seen))
    return out


def _read_records(path: str) -> list[dict[str, Any]]:
    """requests.jsonl, each line one request record; unreadable lines are skipped (a run cut short)."""
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(item, dict):
                    records.append(item)
    except OSError:
        return []
    return records


def level_from_summary(run: str, item: dict[str, Any], seen: float | None = None
                       ) -> tuple[MeasuredLevel | None, str | None]:
    """(the level, None) or (None, why it cannot be used)."""
    label = str(item.get("phase") or item.get("label") or "?")
    if item.get("concurrency") is None or item.get("request_rate") is not None:
        return None, f"{label}: open-loop (--request-rate) levels are not used; sizing models a closed loop"
    inp, out = _mean(item.get("input_tokens")), _mean(item.get("output_tokens"))
    if not item.get("ok") or inp is None or out is None:
        return None, f"{label}: no successful request with server-reported token counts"
    tpot, ttft = _mean(item.get("tpot_ms")), _mean(item.get("ttft_ms"))
    if tpot is None and ttft is None:
        return None, f"{label}: neither TPOT nor TTFT was measured (streaming is needed)"
    return MeasuredLevel(run=run, label=label, concurrency=int(item["concurrency"]), ok=int(item["ok"]),
                         input_tokens=inp, output_tokens=out, tpot_s=None if tpot is None else tpot / 1e3,
                         ttft_s=None if ttft is None else ttft / 1e3, seen_concurrency=seen), None


def read_run(path: str) -> RunFolder:
    """run.json, summary.json and telemetry.json's GPU names of one run folder."""
    run_json, summary_json = os.path.join(path, "run.json"), os.path.join(path, "summary.json")
    if not (os.path.isfile(run_json) and os.path.isfile(summary_json)):
        raise SizingError(RUN_FLAG, f"{path} is not a bench run folder: it needs run.json and summary.json "
                                    f"(`bench summarize {path}` rebuilds the summary from requests.jsonl).")
    run, summary = _read_json(run_json), _read_json(summary_json)
    if not isinstance(run, dict) or not isinstance(summary, dict) or not isinstance(summary.get("levels"), list):
        raise SizingError(RUN_FLAG, f"{path}: run.json or summary.json is not what `bench run` writes "
                                    f"(summary.json needs a 'levels' list).")
    levels, skipped = [], []
    seen = seen_concurrency(_read_records(os.path.join(path, "requests.jsonl")))
    for item in summary["levels"]:
        item = item if isinstance(item, dict) else {}
        level, why = level_from_summary(path, item, seen.get(str(item.get("phase"))))
        if level is not None:
            levels.append(level)
        else:
            skipped.append(why or "?")
    names: tuple[str, ...] = ()
    tel_path = os.path.join(path, "telemetry.json")
    if os.path.isfile(tel_path):
        tel = _read_json(tel_path)
        gpus = tel.get("gpus") if isinstance(tel, dict) else None
        names = tuple(str(g["name"]) for g in gpus or () if isinstance(g, dict) and g.get("name"))
    return RunFolder(path=path, run=run, levels=tuple(levels), telemetry_gpus=names, skipped=tuple(skipped))


# -- the deployment -------------------------------------------------------------------------------------------
# '4x V100', '8 x a100-40g', '2xH100' | 'H100 x 2' (a space before the x, so 'RTX 3090' is not 3090 'RT's)
_HARDWARE = (re.compile(r"^\s*(\d+)\s*[x×*]\s*(.+?)\s*$", re.IGNORECASE),
             re.compile(r"^\s*(.+?)\s+[x×*]\s*(\d+)\s*$", re.IGNORECASE))


def parse_hardware(text: str) -> tuple[int | None, Gpu | None]:
    """'4x V100-32G' -> (4, the V100-32G record); '8 x a100-40g', 'H100 x 2', '2xH100', 'NVIDIA H100 80GB HBM3'.
    A part in parentheses is ignored ('4x V100-32G (NVLink)'); an unknown card gives (count, None)."""
    clean = re.sub(r"\([^)]*\)", " ", str(text)).strip().rstrip(",;")
    count, card = None, clean
    first = _HARDWARE[0].match(clean)
    last = _HARDWARE[1].match(clean)
    if first:
        count, card = int(first.group(1)), first.group(2)
    elif last:
        count, card = int(last.group(2)), last.group(1)
    return count, _card(card)


def _card(text: str) -> Gpu | None:
    if not text.strip():
        return None
    try:
        return resolve_gpu(text)
    except SizingError:
        return match_device_name(text)


def _model_key(name: str | None) -> str | None:
    """A sizing model for a served id: catalog key/alias/Hugging Face id, a local checkpoint's config.json, or the
    last path part of a local path ('/models/Qwen2.5-7B-Instruct')."""
    if not name:
        return None
    for candidate in (name, os.path.basename(str(name).rstrip("/"))):
        try:
            entry = resolve_model(candidate)
        except SizingError:
            continue
        return candidate if os.path.exists(candidate) else entry.key
    return None


def _quant_key(word: Any) -> str | None:
    if not word:
        return None
    text = str(word).strip().lower()
    if text == "auto":
        return None
    if text in _QUANT_WORDS:
        return _QUANT_WORDS[text]
    from sizing.quants import resolve_quant
    try:
        return resolve_quant(text).key
    except SizingError:
        return None


def hints(run: RunFolder) -> dict[str, list[tuple[Any, str]]]:
    """Every candidate value of each deployment field in this run, best source first: {field: [(value, source)]}."""
    info = run.run
    sim = info.get("sim") if isinstance(info.get("sim"), dict) else {}
    server = info.get("server") if isinstance(info.get("server"), dict) else {}
    target = info.get("target") if isinstance(info.get("target"), dict) else {}
    out: dict[str, list[tuple[Any, str]]] = {k: [] for k in ("model", "gpu", "gpus", "quant", "engine", "layout")}

    def add(key: str, value: Any, source: str) -> None:
        if value is not None:
            out[key].append((value, source))

    if sim.get("gpu"):
        add("model", _model_key(sim.get("model")), f"run.json sim.model {sim.get('model')!r}")
        add("gpu", _card(str(sim["gpu"])), f"run.json sim.gpu {sim['gpu']!r}")
        add("gpus", sim.get("gpus"), "run.json sim.gpus")
        add("quant", _quant_key(sim.get("quant")), "run.json sim.quant")
        add("engine", "vllm", "the emulator (bench sim) models vLLM")
    tp, pp, dp = (server.get(k) for k in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"))
    if any(isinstance(v, int) for v in (tp, pp, dp)):
        layout = {"tp": tp or 1, "pp": pp or 1, "dp": dp or 1}
        add("layout", layout, "run.json server (tensor/pipeline/data parallel sizes)")
        add("gpus", layout["tp"] * layout["pp"] * layout["dp"], "run.json server (TP x PP x DP)")
    add("model", _model_key(server.get("model")), f"run.json server.model {server.get('model')!r}")
    add("quant", _quant_key(server.get("quantization")), f"run.json server.quantization {server.get('quantization')!r}")
    add("quant", _quant_key(server.get("dtype")), f"run.json server.dtype {server.get('dtype')!r}")
    engine = server.get("engine")
    if engine:
        add("engine", str(engine), "run.json server.engine")
    if info.get("hardware"):
        count, card = parse_hardware(str(info["hardware"]))
        add("gpu", card, f"run.json hardware {info['hardware']!r}")
        add("gpus", count, f"run.json hardware {info['hardware']!r}")
    if run.telemetry_gpus:
        cards = {name: match_device_name(name) for name in run.telemetry_gpus}
        known = [c for c in cards.values() if c is not None]
        if known and len({c.key for c in known}) == 1:
            add("gpu", known[0], f"telemetry.json GPU name {run.telemetry_gpus[0]!r}")
        add("gpus", len(run.telemetry_gpus), f"telemetry.json ({len(run.telemetry_gpus)} GPUs seen by NVML)")
    add("model", _model_key(target.get("model")), f"run.json target.model {target.get('model')!r}")
    return out


def _missing(field_name: str, run: RunFolder) -> SizingError:
    info = run.run
    served = (info.get("target") or {}).get("model") if isinstance(info.get("target"), dict) else None
    text = {
        "model": f"which model was served: run.json names {served!r}, which is not in sizing's catalog and is not a "
                 f"local config.json; give --model (a `sizing models` name or a config.json path)",
        "gpu": "which GPU served it: run.json has no --hardware text naming a known card, no emulated card, and "
               "telemetry.json saw no known GPU; give --gpu (a `sizing gpus` name)",
        "gpus": "how many GPUs served it: neither the --hardware text, the server's parallel sizes nor telemetry "
                "say; give --gpus",
    }[field_name]
    flag = "--" + field_name
    return SizingError(flag, f"{run.path}: cannot tell {text}.")


def decide_deployment(runs: list[RunFolder], explicit: dict[str, Any]) -> Deployment:
    """The one deployment every run measured. `explicit` holds the flags (model, gpu, gpus, quant, engine; None when
    not given); a run whose own fields disagree with another run's is refused."""
    decided: list[Deployment] = []
    for run in runs:
        found = hints(run)
        chosen: dict[str, Any] = {}
        where: dict[str, str] = {}
        for key in ("model", "gpu", "gpus", "quant", "engine", "layout"):
            if explicit.get(key) is not None:
                chosen[key], where[key] = explicit[key], f"--{key}"
            elif found[key]:
                chosen[key], where[key] = found[key][0]
        if explicit.get("gpu") is not None:
            chosen["gpu"] = resolve_gpu(str(explicit["gpu"]))
        if explicit.get("model") is not None:
            name = str(explicit["model"])
            chosen["model"] = name if os.path.exists(name) else resolve_model(name).key
        if explicit.get("quant") is not None:
            from sizing.quants import resolve_quant
            chosen["quant"] = resolve_quant(str(explicit["quant"])).key
        for key in ("model", "gpu"):
            if chosen.get(key) is None:
                raise _missing(key, run)
        if chosen.get("gpus") is None and run.run.get("sim", None) and (run.run["sim"] or {}).get("gpu"):
            from sizing.api import plan  # the emulator ran sizing's minimum count
            chosen["gpus"] = plan(chosen["model"], chosen["gpu"].key, quant=chosen.get("quant")).gpus
            where["gpus"] = "the minimum count sizing plans (the emulator ran it: run.json sim.gpus is empty)"
        if chosen.get("gpus") is None:
            raise _missing("gpus", run)
        if not chosen.get("engine"):
            chosen["engine"], where["engine"] = "vllm", "not recorded: sizing's default engine (vLLM) assumed"
        layout = chosen.get("layout")
        if layout and explicit.get("gpus") is not None and layout["tp"] * layout["pp"] * layout["dp"] != chosen["gpus"]:
            layout = None   # the flags win over a server layout that disagrees with them
        decided.append(Deployment(model=chosen["model"], gpu=chosen["gpu"].key, gpus=int(chosen["gpus"]),
                                  quant=chosen.get("quant"), engine=str(chosen["engine"]).lower(), layout=layout,
                                  decided_from=where))
    first = decided[0]
    for run, other in zip(runs[1:], decided[1:]):
        mine = (first.model, first.gpu, first.gpus, first.quant, first.engine)
        theirs = (other.model, other.gpu, other.gpus, other.quant, other.engine)
        if mine != theirs:
            raise SizingError(RUN_FLAG, f"{run.path} measured {_describe(other)}, but {runs[0].path} measured "
                                        f"{_describe(first)}; calibrate one deployment at a time.")
    return first


def _describe(d: Deployment) -> str:
    return f"{d.model} ({d.quant or 'released precision'}) on {d.gpus} x {d.gpu} with {d.engine}"

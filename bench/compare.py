"""``bench compare``: two run folders, level by level — did the candidate make things better or worse?

This module owns the comparison as values: which metrics are compared and in which direction, the noise threshold,
the configuration diff, and the regression gate. It prints nothing; ``read_run_folder`` is its only function that
touches files (the CLI's shell), everything else takes dicts and returns values.

For one metric of one level, with ``b`` the baseline's value and ``c`` the candidate's::

    absolute_change = c - b
    relative_change = (c - b) / |b|          (b = 0: 0 when c = 0, else +-infinity: "from 0")
    verdict = "same"    when |relative_change| <= threshold (default 0.05 = 5 %)
              "better"  when the change goes the metric's good way (latency, error rate, memory: down;
                        tokens/s, requests/s, goodput: up)
              "worse"   otherwise
              None      when b or c is missing (None): a missing value never counts as a change

Levels are matched by their phase label (``c=10`` with ``c=10``, ``rate=2/s`` with ``rate=2/s``); a level only one
run has is reported as such.

The gate (``--fail-on-regression ttft_p99=10%,tpot_mean=5%``) fails when, on any matched level, a named metric's
relative change in its bad direction is larger than the given limit (a change from 0 in the bad direction, e.g.
errors where there were none, is infinitely large). The gate uses its own limits, not the threshold, and fails too
when it had nothing to check (no matched level, or none of its metrics measured in both runs). See docs/compare.md.
"""
from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_REGRESSION = 3
DEFAULT_THRESHOLD = 0.05

BETTER, WORSE, SAME = "better", "worse", "same"


@dataclass(frozen=True)
class Metric:
    """One compared quantity. ``path`` is where a summary.json level keeps it; ``optional`` metrics get a row only
    when both levels have a value (goodput needs an SLO in both runs, memory needs telemetry in both)."""
    name: str                 # the gate's name for it, e.g. "ttft_p99"
    label: str                # for people, e.g. "TTFT p99"
    unit: str                 # "ms", "tokens/s", "requests/s", "fraction", "bytes"
    higher_is_better: bool
    path: tuple[str, ...]
    optional: bool = False


METRICS: tuple[Metric, ...] = (
    Metric("ttft_p50", "TTFT p50", "ms", False, ("ttft_ms", "p50")),
    Metric("ttft_p99", "TTFT p99", "ms", False, ("ttft_ms", "p99")),
    Metric("tpot_mean", "TPOT mean", "ms", False, ("tpot_ms", "mean")),
    Metric("tpot_p99", "TPOT p99", "ms", False, ("tpot_ms", "p99")),
    Metric("itl_p99", "ITL p99", "ms", False, ("itl_ms", "p99")),
    Metric("e2e_p50", "E2E p50", "ms", False, ("e2e_ms", "p50")),
    Metric("e2e_p99", "E2E p99", "ms", False, ("e2e_ms", "p99")),
    Metric("per_request_output_tokens_per_s", "output tok/s per request (mean)", "tokens/s", True,
           ("per_request_output_tokens_per_s", "mean")),
    Metric("output_tokens_per_s", "aggregate output tok/s", "tokens/s", True, ("output_tokens_per_s",)),
    Metric("steady_output_tokens_per_s", "steady output tok/s", "tokens/s", True, ("steady_output_tokens_per_s",)),
    Metric("requests_per_s", "requests/s", "requests/s", True, ("requests_per_s",)),
    Metric("error_rate", "error rate", "fraction", False, ("error_rate",)),
    Metric("goodput_fraction", "goodput (share meeting the SLO)", "fraction", True, ("goodput", "fraction"),
           optional=True),
    Metric("gpu_mem_peak_bytes", "GPU memory peak", "bytes", False,
           ("telemetry", "gpu_mem_used_bytes_total_peak"), optional=True),
    Metric("server_res_peak_bytes", "server RES peak", "bytes", False, ("telemetry", "server_res_bytes_peak"),
           optional=True),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)


@dataclass(frozen=True)
class Change:
    """One metric of one matched level."""
    phase: str
    metric: Metric
    baseline: float | None
    candidate: float | None
    absolute_change: float | None
    relative_change: float | None  # +-inf: changed from 0
    verdict: str | None            # "better" / "worse" / "same"; None when a value is missing


@dataclass(frozen=True)
class ConfigField:
    name: str
    baseline: Any
    candidate: Any

    @property
    def differs(self) -> bool:
        return self.baseline != self.candidate


@dataclass
class Comparison:
    baseline_dir: str
    candidate_dir: str
    threshold: float
    config: list[ConfigField]
    warnings: list[str]
    levels: dict[str, list[Change]]          # matched phase -> its rows, in the baseline's level order
    only_in_baseline: list[str] = field(default_factory=list)
    only_in_candidate: list[str] = field(default_factory=list)
    baseline_started_at: str | None = None
    candidate_started_at: str | None = None


@dataclass(frozen=True)
class Breach:
    change: Change
    limit: float


@dataclass(frozen=True)
class GateResult:
    limits: dict[str, float]
    breaches: list[Breach]
    unchecked: list[str]      # gate metrics no matched level had in both runs
    levels_checked: int

    @property
    def checked_nothing(self) -> bool:
        """No matched level, or none of the gate's metrics measured in both runs: a gate that saw nothing fails."""
        return self.levels_checked == 0 or len(self.unchecked) == len(self.limits)

    @property
    def passed(self) -> bool:
        return not self.breaches and not self.checked_nothing


class CompareInputError(ValueError):
    """A run folder that cannot be compared; the message is one sentence saying why and what to do."""


# ---- the arithmetic --------------------------------------------------------------------------------------------

def number(value: Any) -> float | None:
    """A finite number, or None (missing, a bool, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def value_at(level: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = level
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return number(value)


def relative_change(baseline: float | None, candidate: float | None) -> float | None:
    """(c - b) / |b|; from b = 0 it is 0 (no change) or +-inf; None when either is missing."""
    if baseline is None or candidate is None:
        return None
    if baseline == 0:
        return 0.0 if candidate == 0 else math.copysign(math.inf, candidate)
    return (candidate - baseline) / abs(baseline)


def verdict(baseline: float | None, candidate: float | None, higher_is_better: bool,
            threshold: float = DEFAULT_THRESHOLD) -> str | None:
    rel = relative_change(baseline, candidate)
    if rel is None:
        return None
    if abs(rel) <= threshold:
        return SAME
    return BETTER if (rel > 0) == higher_is_better else WORSE


def compare_level(phase: str, baseline: dict[str, Any], candidate: dict[str, Any],
                  threshold: float = DEFAULT_THRESHOLD) -> list[Change]:
    rows = []
    for m in METRICS:
        b, c = value_at(baseline, m.path), value_at(candidate, m.path)
        if m.optional and (b is None or c is None):
            continue
        rows.append(Change(phase=phase, metric=m, baseline=b, candidate=c,
                           absolute_change=None if b is None or c is None else c - b,
                           relative_change=relative_change(b, c),
                           verdict=verdict(b, c, m.higher_is_better, threshold)))
    return rows


# ---- what was compared -----------------------------------------------------------------------------------------

WORKLOAD_FIELDS = ("input_len", "output_len", "dataset", "prefix_len", "ignore_eos", "min_tokens", "stream")


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _endpoint(run: dict[str, Any]) -> Any:
    if _get(run, "target", "simulated"):
        return "built-in simulated endpoint"  # its port changes every run: not a difference worth showing
    return _get(run, "target", "url") or _get(run, "target", "base_url")


def _sim(run: dict[str, Any]) -> Any:
    sim = run.get("sim")
    if not isinstance(sim, dict) or not _get(run, "target", "simulated"):
        return None
    keys = ("ttft_ms", "itl_ms", "itl_per_running_ms", "max_batch", "model", "gpu", "gpus", "quant")
    return {k: sim[k] for k in keys if sim.get(k) is not None}


CONFIG_FIELDS = (
    ("label", lambda r: r.get("label")),
    ("endpoint", _endpoint),
    ("model", lambda r: _get(r, "target", "model")),
    ("server", lambda r: _get(r, "server", "version")),
    ("hardware", lambda r: r.get("hardware")),
    ("api", lambda r: _get(r, "target", "api")),
    ("stream", lambda r: _get(r, "target", "stream")),
    ("input_len", lambda r: _get(r, "workload", "input_len")),
    ("output_len", lambda r: _get(r, "workload", "output_len")),
    ("dataset", lambda r: _get(r, "workload", "dataset")),
    ("prefix_len", lambda r: _get(r, "workload", "prefix_len")),
    ("ignore_eos", lambda r: _get(r, "workload", "ignore_eos")),
    ("min_tokens", lambda r: _get(r, "workload", "min_tokens")),
    ("num_requests", lambda r: _get(r, "load", "num_requests")),
    ("duration_s", lambda r: _get(r, "load", "duration_s")),
    ("warmup", lambda r: _get(r, "load", "warmup")),
    ("slo", lambda r: r.get("slo")),
    ("sim", _sim),
    ("status", lambda r: r.get("status")),
    ("gpucap", lambda r: _get(r, "tool", "version")),
)


def config_diff(baseline_run: dict[str, Any], candidate_run: dict[str, Any]) -> list[ConfigField]:
    return [ConfigField(name, get(baseline_run), get(candidate_run)) for name, get in CONFIG_FIELDS]


def config_warnings(config: list[ConfigField]) -> list[str]:
    by_name = {f.name: f for f in config}
    out = []
    unfair = [f for f in config if f.name in WORKLOAD_FIELDS and f.differs]
    if unfair:
        what = "; ".join(f"{f.name} {f.baseline} vs {f.candidate}" for f in unfair)
        out.append(f"The workloads differ ({what}): latencies and throughput are not like for like, so a change "
                   "may come from the workload rather than the server.")
    if by_name["slo"].differs and by_name["slo"].baseline and by_name["slo"].candidate:
        out.append("The SLOs differ, so the goodput fractions are measured against different objectives.")
    return out


def _lag_warnings(which: str, levels: dict[str, dict[str, Any]], phases: list[str]) -> list[str]:
    return [f"{phase} of the {which}: the client itself lagged, so its latencies include client delay."
            for phase in phases if _get(levels[phase], "client", "lagged")]


def compare_runs(baseline_run: dict[str, Any], baseline_summary: dict[str, Any], candidate_run: dict[str, Any],
                 candidate_summary: dict[str, Any], threshold: float = DEFAULT_THRESHOLD,
                 baseline_dir: str = "baseline", candidate_dir: str = "candidate") -> Comparison:
    """Compare two runs given their run.json and summary.json contents."""
    base = _levels_by_phase(baseline_summary)
    cand = _levels_by_phase(candidate_summary)
    matched = [p for p in base if p in cand]
    config = config_diff(baseline_run, candidate_run)
    warnings = config_warnings(config)
    warnings += _lag_warnings("baseline", base, matched) + _lag_warnings("candidate", cand, matched)
    if not matched:
        warnings.append("No level ran in both runs (levels are matched by their label, e.g. c=10 with c=10), "
                        "so nothing was compared.")
    return Comparison(baseline_dir=baseline_dir, candidate_dir=candidate_dir, threshold=threshold, config=config,
                      warnings=warnings,
                      levels={p: compare_level(p, base[p], cand[p], threshold) for p in matched},
                      only_in_baseline=[p for p in base if p not in cand],
                      only_in_candidate=[p for p in cand if p not in base],
                      baseline_started_at=baseline_run.get("started_at"),
                      candidate_started_at=candidate_run.get("started_at"))


def _levels_by_phase(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for level in summary.get("levels") or []:
        if isinstance(level, dict) and isinstance(level.get("phase"), str):
            out.setdefault(level["phase"], level)
    return out


# ---- the gate --------------------------------------------------------------------------------------------------

_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


def parse_fraction(text: str) -> float:
    """'10%' -> 0.1, '0.1' -> 0.1; a bare number above 1 is refused as ambiguous. Raises ValueError."""
    m = _PERCENT.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a percentage (examples: 5%, 0.05)")
    value = float(m.group(1))
    if m.group(2):
        return value / 100
    if value > 1:
        raise ValueError(f"{text!r} is ambiguous: write {value:g}% or {value / 100:g}")
    return value


def parse_gate(text: str) -> dict[str, float]:
    """``ttft_p99=10%,tpot_mean=5%`` -> {"ttft_p99": 0.1, "tpot_mean": 0.05}. Raises ValueError (one sentence)."""
    limits: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in METRIC_NAMES:
            raise ValueError(f"{part!r} is not NAME=PERCENT with NAME one of {', '.join(METRIC_NAMES)} "
                             "(example: ttft_p99=10%,tpot_mean=5%)")
        if name in limits:
            raise ValueError(f"{name} is given twice")
        limits[name] = parse_fraction(value)
    if not limits:
        raise ValueError(f"no limit given (example: ttft_p99=10%,tpot_mean=5%; names: {', '.join(METRIC_NAMES)})")
    return limits


def regression(change: Change) -> float | None:
    """How far a change went the bad way, as a positive relative amount (0 when it went the good way or not at all);
    None when a value is missing."""
    rel = change.relative_change
    if rel is None:
        return None
    bad = -rel if change.metric.higher_is_better else rel
    return max(bad, 0.0)


def check_gate(comparison: Comparison, limits: dict[str, float]) -> GateResult:
    breaches, seen = [], set()
    for rows in comparison.levels.values():
        for change in rows:
            if change.metric.name not in limits:
                continue
            amount = regression(change)
            if amount is None:
                continue
            seen.add(change.metric.name)
            if amount > limits[change.metric.name]:
                breaches.append(Breach(change, limits[change.metric.name]))
    return GateResult(limits=dict(limits), breaches=breaches, unchecked=[n for n in limits if n not in seen],
                      levels_checked=len(comparison.levels))


# ---- JSON ------------------------------------------------------------------------------------------------------

def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def change_dict(change: Change) -> dict[str, Any]:
    m = change.metric
    rel = change.relative_change
    return {"metric": m.name, "label": m.label, "unit": m.unit, "higher_is_better": m.higher_is_better,
            "baseline": change.baseline, "candidate": change.candidate, "absolute_change": change.absolute_change,
            "relative_change": _finite(rel), "from_zero": rel is not None and math.isinf(rel),
            "verdict": change.verdict}


def to_json(comparison: Comparison, gate: GateResult | None = None) -> dict[str, Any]:
    """Everything compared, as one JSON-ready object (no NaN or infinity: a change from 0 has relative_change null
    and from_zero true)."""
    out = {
        "baseline": {"run_dir": comparison.baseline_dir, "started_at": comparison.baseline_started_at},
        "candidate": {"run_dir": comparison.candidate_dir, "started_at": comparison.candidate_started_at},
        "threshold": comparison.threshold,
        "config": [{"field": f.name, "baseline": f.baseline, "candidate": f.candidate, "differs": f.differs}
                   for f in comparison.config],
        "warnings": list(comparison.warnings),
        "levels": [{"phase": phase, "metrics": [change_dict(c) for c in rows]}
                   for phase, rows in comparison.levels.items()],
        "only_in_baseline": list(comparison.only_in_baseline),
        "only_in_candidate": list(comparison.only_in_candidate),
        "gate": None,
    }
    if gate is not None:
        out["gate"] = {"limits": gate.limits, "passed": gate.passed, "levels_checked": gate.levels_checked,
                       "unchecked": gate.unchecked, "checked_nothing": gate.checked_nothing,
                       "breaches": [{"phase": b.change.phase, **change_dict(b.change), "limit": b.limit}
                                    for b in gate.breaches]}
    return out


# ---- the shell: reading a run folder ---------------------------------------------------------------------------

def read_run_folder(path: Path, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run.json, summary.json) of a run folder; CompareInputError naming ``what`` (e.g. BASELINE_RUN) if it is not
    one."""
    where = f"{what} {str(path)!r}"
    if not path.exists():
        raise CompareInputError(f"{where} does not exist")
    if not path.is_dir():
        raise CompareInputError(f"{where} is a file, not a run folder (give the folder `bench run --out` wrote)")
    if not (path / "run.json").is_file():
        raise CompareInputError(f"{where} is not a run folder: it has no run.json (`bench run --out DIR` makes one)")
    if not (path / "summary.json").is_file():
        if (path / "requests.jsonl").is_file():
            raise CompareInputError(f"{where} has no summary.json: make it with `bench summarize {shlex.quote(str(path))}`")
        raise CompareInputError(f"{where} has neither summary.json nor requests.jsonl: the run measured nothing")
    run = _read_object(path / "run.json", where)
    summary = _read_object(path / "summary.json", where)
    if not isinstance(summary.get("levels"), list):
        raise CompareInputError(f"{where}: its summary.json has no list of levels")
    return run, summary


def _read_object(path: Path, where: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompareInputError(f"{where}: its {path.name} cannot be read ({e.__class__.__name__}: {e})") from None
    if not isinstance(value, dict):
        raise CompareInputError(f"{where}: its {path.name} is not a JSON object")
    return value

"""``bench capacity``: the highest load an endpoint serves within its objectives.

The question behind every sizing decision is "how many users can this deployment take at TTFT <= 2 s and
TPOT <= 100 ms?". ``bench capacity --slo ...`` answers it by measuring: it runs load levels one after another and
chooses each next level from the verdicts so far, like a person would, only without skipping steps.

The search is pure (this module): a level *passes* when at least ``goodput_min`` of its measured requests succeeded
and met every objective, and at most ``error_rate_max`` of them failed. From ``start`` the load doubles while levels
pass (up to ``limit``); after the first failure it bisects between the highest pass and the lowest failure until
they are within ``precision`` of each other (1 request for concurrency). The answer is the highest passing load;
``None`` when even the first level fails. Real servers are noisy near the edge: every level measured is kept
(levels, requests, telemetry), so a non-monotonic result is visible rather than hidden.

Closed loop (``by="concurrency"``): levels ``c=N``. Open loop (``by="rate"``): levels ``rate=R/s``, Poisson arrivals
(or the run's burstiness), optionally capped in flight.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from .metrics import RequestMetrics, derive
from .slo import SLO_METRICS, is_good

_NAMES = {v: k for k, v in SLO_METRICS.items()}


@dataclass(frozen=True)
class Criteria:
    slo: dict[str, float]  # {"ttft_ms": 2000.0, ...}, as bench.slo.parse_slo returns it
    goodput_min: float = 0.95  # fraction of measured requests that must succeed and meet every objective
    error_rate_max: float = 0.01  # fraction of measured requests that may fail

    def describe(self) -> str:
        objectives = ", ".join(f"{_NAMES.get(k, k)} <= {_fmt_ms(v)}" for k, v in self.slo.items())
        return (f"{objectives} for at least {self.goodput_min:.0%} of requests, "
                f"errors at most {self.error_rate_max:.0%}")


@dataclass(frozen=True)
class Verdict:
    passed: bool | None  # None: not judged (a level cut short, or nothing measured)
    good_fraction: float | None
    error_rate: float | None
    reason: str  # one phrase: why it passed or failed
    missed: dict[str, float]  # per objective: fraction of successful requests over its threshold


def judge(metrics: Iterable[RequestMetrics], criteria: Criteria) -> Verdict:
    """The verdict on one level from its measured requests' metrics (as :func:`level_metrics` gives them)."""
    metrics = list(metrics)
    ok = [m for m in metrics if m.ok]
    missed = {}
    for key, limit in criteria.slo.items():
        over = sum(1 for m in ok if _misses(m, key, limit))
        missed[_NAMES.get(key, key)] = over / len(ok) if ok else 1.0
    if not metrics:
        return Verdict(False, None, None, "no request was measured", missed)
    good = sum(1 for m in metrics if is_good(m, criteria.slo)) / len(metrics)
    err = (len(metrics) - len(ok)) / len(metrics)
    if not ok:
        return Verdict(False, good, err, "no request succeeded", missed)
    if err > criteria.error_rate_max:
        return Verdict(False, good, err, f"{pct(err)} errors (> {pct(criteria.error_rate_max)})", missed)
    if good < criteria.goodput_min:
        worst = ", ".join(f"{name} missed by {pct(frac)}" for name, frac in
                          sorted(missed.items(), key=lambda kv: -kv[1]) if frac > 0) or "objectives missed"
        return Verdict(False, good, err, f"{pct(good)} met the SLO (< {pct(criteria.goodput_min)}): {worst}", missed)
    return Verdict(True, good, err, f"{pct(good)} met the SLO", missed)


def pct(x: float) -> str:
    """A share as a percentage, whole when it is whole (95%), else to 0.1 (94.7%): never rounded onto a threshold."""
    return f"{x:.0%}" if abs(x * 100 - round(x * 100)) < 1e-9 else f"{x:.1%}"


def from_schedule(m: RequestMetrics, record) -> RequestMetrics:
    """For open-loop levels: TTFT, TTFAT and E2E counted from the request's scheduled arrival, so that time it was
    held back before sending (by ``--max-concurrency``, or a lagging client) counts against the objectives, as the
    user arriving then would feel it."""
    if record.scheduled_ns is None or not record.send_ns or record.send_ns <= record.scheduled_ns:
        return m
    held_ms = (record.send_ns - record.scheduled_ns) / 1e6
    shift = {k: getattr(m, k) + held_ms for k in ("ttft_ms", "ttfat_ms", "e2e_ms") if getattr(m, k) is not None}
    return dataclasses.replace(m, **shift)


def level_metrics(records: list, open_loop: bool) -> list[RequestMetrics]:
    """The measured requests' metrics as the search judges them (see :func:`from_schedule`)."""
    measured = [r for r in records if not r.warmup]
    metrics = [derive(r) for r in measured]
    return [from_schedule(m, r) for m, r in zip(metrics, measured)] if open_loop else metrics


def _misses(m: RequestMetrics, key: str, limit: float) -> bool:
    if key == "itl_ms":
        return not m.itl_ms or max(m.itl_ms) > limit
    value = getattr(m, key)
    return value is None or value > limit


@dataclass
class Search:
    """Doubling, then bisection. ``first()`` gives the first load; ``next(load, passed)`` the one after it, or None
    when the search is done. Loads are whole requests in flight (concurrency) or requests/s (rate)."""

    by: str = "concurrency"  # or "rate"
    start: float = 1
    limit: float = 1024
    precision: float = 0.1  # stop bisecting when (fail - pass) <= precision x pass (and <= 1 for concurrency)
    passed: list[float] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.by not in ("concurrency", "rate"):
            raise ValueError(f"by must be 'concurrency' or 'rate', not {self.by!r}")
        if not self.start > 0 or not self.limit >= self.start:
            raise ValueError(f"need 0 < start <= limit (got start {self.start:g}, limit {self.limit:g})")
        if self.by == "concurrency":
            self.start, self.limit = int(self.start), int(self.limit)

    def first(self) -> float:
        return self.start

    @property
    def best(self) -> float | None:
        """The highest load that passed below every failure: the answer."""
        below = [p for p in self.passed if not self.failed or p < min(self.failed)]
        return max(below) if below else None

    @property
    def lowest_failure(self) -> float | None:
        return min(self.failed) if self.failed else None

    def next(self, load: float, passed: bool) -> float | None:
        (self.passed if passed else self.failed).append(load)
        lo, hi = self.best, self.lowest_failure
        if hi is None:  # still doubling
            if load >= self.limit:
                return None
            doubled = load * 2
            if doubled >= self.limit:
                return self.limit  # the limit itself, never a rounding of it (which could repeat or pass it)
            following = self._round(doubled)
            return following if load < following < self.limit else self.limit
        if lo is None:  # the lowest load tried failed: nothing below start is tried
            return None
        if self._close_enough(lo, hi):
            return None
        mid = self._round((lo + hi) / 2)
        if mid <= lo or mid >= hi:
            return None
        return mid

    def _close_enough(self, lo: float, hi: float) -> bool:
        if self.by == "concurrency":
            return hi - lo <= max(1, math.floor(self.precision * lo))
        return hi - lo <= self.precision * lo

    def _round(self, value: float) -> float:
        if self.by == "concurrency":
            return int(value)
        return float(f"{value:.3g}")  # labels stay readable: 12.5/s, not 12.4999/s

    @property
    def limited(self) -> bool:
        """True when even the limit passed: the capacity is at least the limit, not found."""
        return self.lowest_failure is None and self.best is not None and self.best >= self.limit


def load_of(concurrency: int | None, request_rate: float | None) -> float:
    """A level's load as the search counts it: its request rate, else its concurrency."""
    return request_rate if request_rate is not None else int(concurrency or 1)


def label(by: str, load: float) -> str:
    return f"c={int(load)}" if by == "concurrency" else f"rate={load:g}/s"


def result(search: Search, criteria: Criteria, probes: list[dict[str, Any]],
           pending: float | None = None) -> dict[str, Any]:
    """What summary.json keeps under ``capacity``: the answer, the criteria and every level's verdict, in the order
    they ran. ``probes`` are ``{"phase", "load", "verdict": Verdict, "entry": summary entry}``; ``pending`` is the
    load the search wanted next when the run ended before it (Ctrl-C): the answer is then provisional."""
    best = search.best
    at_best = next((p for p in probes if p["load"] == best), None)
    fail = search.lowest_failure
    at_fail = next((p for p in probes if p["load"] == fail), None)
    unit = "concurrent requests" if search.by == "concurrency" else "requests/s"
    if best is None:
        first = probes[0] if probes else None
        if first is None:
            sentence = "Nothing was measured."
        elif first["verdict"].passed is None:
            sentence = f"No answer: {first['phase']}, the first level, was {first['verdict'].reason}."
        else:
            sentence = f"No load met the objectives: {first['phase']} already failed ({first['verdict'].reason})."
    elif search.limited:
        sentence = (f"At least {best:g} {unit}: every level up to the limit ({search.limit:g}) met the objectives; "
                    "raise --limit to find the edge.")
    else:
        sentence = f"Capacity: {best:g} {unit} within the objectives"
        if at_best is not None:
            e = at_best["entry"]
            sentence += (f" ({at_best['verdict'].reason}, {_f(e.get('output_tokens_per_s'))} output tok/s in all, "
                         f"{_f(_stat(e, 'per_request_output_tokens_per_s', 'mean'))} tok/s per request)")
        if at_fail is not None:
            sentence += f"; at {fail:g}: {at_fail['verdict'].reason}"
        sentence += "."
    if pending is not None and probes:
        unjudged = next((p for p in probes if p["verdict"].passed is None), None)
        why = (f"{unjudged['phase']} was {unjudged['verdict'].reason.split(':')[0]}" if unjudged
               else f"it would have tried {label(search.by, pending)} next")
        sentence = f"The search did not finish ({why}), so this is provisional. {sentence}"
    return {
        "by": search.by,
        "unit": unit,
        "criteria": {"slo": criteria.slo, "goodput_min": criteria.goodput_min,
                     "error_rate_max": criteria.error_rate_max, "text": criteria.describe()},
        "search": {"start": search.start, "limit": search.limit, "precision": search.precision},
        "max_load": best,
        "limited_by_search_limit": search.limited,
        "lowest_failing_load": fail,
        "complete": pending is None,
        "sentence": sentence,
        "probes": [{"phase": p["phase"], "load": p["load"], "passed": p["verdict"].passed,
                    "good_fraction": p["verdict"].good_fraction, "error_rate": p["verdict"].error_rate,
                    "missed": p["verdict"].missed, "reason": p["verdict"].reason,
                    "output_tokens_per_s": p["entry"].get("output_tokens_per_s"),
                    "ttft_ms_p99": _stat(p["entry"], "ttft_ms", "p99"),
                    "tpot_ms_p99": _stat(p["entry"], "tpot_ms", "p99")} for p in probes],
    }


def _stat(entry: dict[str, Any], key: str, sub: str) -> float | None:
    value = entry.get(key)
    return value.get(sub) if isinstance(value, dict) else None


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _fmt_ms(ms: float) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


def from_run(run_info: dict[str, Any], ran: list[tuple[str, float, list, int | None]],
             levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The capacity answer of a run: its levels (label, load, records, planned measured requests or None; in the
    order they ran) judged again and the search replayed on those verdicts, so ``bench summarize`` re-derives the
    same answer from the records. A level that was cut short -- the last one of a run that did not complete
    (Ctrl-C, an abort, a crash) with fewer measured requests than planned -- is not judged, nor is one that measured
    nothing: the answer is then provisional. None when the run was not a capacity search."""
    spec = run_info.get("capacity")
    if not spec:
        return None
    criteria = Criteria(run_info.get("slo") or {}, spec["goodput_min"], spec["error_rate_max"])
    search = Search(spec["by"], spec["start"], spec["limit"], spec["precision"])
    entries = {lv["phase"]: lv for lv in levels}
    finished = run_info.get("status") == "completed"
    probes = []
    pending = None
    ran = [item for item in ran if item[0] in entries]
    for i, (phase, load, records, planned) in enumerate(ran):
        metrics = level_metrics(records, open_loop=spec["by"] == "rate")
        last = i == len(ran) - 1
        cut = last and not finished and (planned is None or len(metrics) < planned)
        if cut or not metrics:
            why = ("cut short (the run ended during it): not judged" if cut
                   else "no request was measured (more --num-requests or --duration, less --warmup): not judged")
            probes.append({"phase": phase, "load": load, "entry": entries[phase],
                           "verdict": Verdict(None, None, None, why, {})})
            pending = load
            break
        verdict = judge(metrics, criteria)
        pending = search.next(load, verdict.passed)
        probes.append({"phase": phase, "load": load, "verdict": verdict, "entry": entries[phase]})
    return result(search, criteria, probes, pending)


def parse_label(text: str) -> tuple[int | None, float | None]:
    """``c=12`` -> (12, None), ``rate=2.5/s`` -> (None, 2.5); anything else (None, None)."""
    try:
        if text.startswith("c="):
            return int(text[2:]), None
        if text.startswith("rate=") and text.endswith("/s"):
            return None, float(text[5:-2])
    except ValueError:
        pass
    return None, None

"""Reading run folders for reports: what a run folder must hold, and how a run is named.

A run folder is what `bench run` writes: `run.json` (required), `summary.json` (re-derived from `requests.jsonl`
with `bench.results.summarize_run_dir` when a run died before writing it), `requests.jsonl`, and optionally
`samples.csv` and `telemetry.json`. Nothing here derives a metric: the summary is `bench.summary`'s, per-request
values come from `bench.metrics.derive` (see tables.py).

A run's name, used in every legend and table, is "endpoint · model · hardware" from its `run.json`, prefixed with
its `--label` when it has one, so "vLLM on 4x V100 vs the cloud API" reads as such.
"""
from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


class NotARunError(ValueError):
    """A folder given as a run is not one; the message is one sentence naming it."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is not a bench run folder: {reason}")


@dataclass
class RunData:
    run_dir: Path
    run: dict[str, Any]                 # run.json
    levels: list[dict[str, Any]]        # summary.json "levels" (or re-derived)
    telemetry: dict[str, Any] = field(default_factory=dict)  # telemetry.json, {} when absent
    name: str = ""                      # unique display name (legends, tables)
    summary_rederived: bool = False     # summary.json was missing; levels came from requests.jsonl
    capacity: dict[str, Any] | None = None  # summary.json run.capacity: a `bench capacity` run's answer

    @property
    def requests_path(self) -> Path:
        return self.run_dir / "requests.jsonl"

    @property
    def samples_path(self) -> Path:
        return self.run_dir / "samples.csv"

    @property
    def slo(self) -> dict[str, float]:
        return dict(self.run.get("slo") or {})


def _read_json(path: Path, what: str, run_dir: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotARunError(run_dir, f"its {what} cannot be read ({e.__class__.__name__}: {e})") from None


def load_run(run_dir: Path | str) -> RunData:
    """Read one run folder; NotARunError (one sentence) when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise NotARunError(run_dir, "no such folder")
    if not run_dir.is_dir():
        raise NotARunError(run_dir, "it is a file, not a folder")
    if not (run_dir / "run.json").is_file():
        raise NotARunError(run_dir, "it has no run.json (make one with `bench run --out DIR`)")
    run = _read_json(run_dir / "run.json", "run.json", run_dir)
    if not isinstance(run, dict) or not isinstance(run.get("load"), dict):
        raise NotARunError(run_dir, "its run.json has no load levels")
    rederived = False
    capacity = None
    if (run_dir / "summary.json").is_file():
        summary = _read_json(run_dir / "summary.json", "summary.json", run_dir)
        levels = summary.get("levels") if isinstance(summary, dict) else None
        if not isinstance(levels, list):
            raise NotARunError(run_dir, "its summary.json has no levels")
        capacity = (summary.get("run") or {}).get("capacity")
    elif (run_dir / "requests.jsonl").is_file():
        from bench.results import capacity_of_run_dir, summarize_run_dir
        levels, rederived = summarize_run_dir(run_dir), True
        capacity = capacity_of_run_dir(run_dir, levels)
    else:
        raise NotARunError(run_dir, "it has neither summary.json nor requests.jsonl")
    if not levels:
        raise NotARunError(run_dir, "it has no measured level yet")
    telemetry = {}
    if (run_dir / "telemetry.json").is_file():
        try:
            telemetry = json.loads((run_dir / "telemetry.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            telemetry = {}
    data = RunData(run_dir=run_dir, run=run, levels=levels, telemetry=telemetry, summary_rederived=rederived,
                   capacity=capacity if isinstance(capacity, dict) else None)
    data.name = run_name(data)
    return data


def load_runs(run_dirs: Iterable[Path | str]) -> list[RunData]:
    """Read several run folders; runs that would share a name get their folder's name added ('... [run_c10]'),
    then a number if even that repeats."""
    runs = [load_run(p) for p in run_dirs]
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.name} [{run.run_dir.resolve().name}]"
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} #{seen[run.name]}"
    return runs


# -- names -------------------------------------------------------------------------------------------------------

def endpoint_name(run: dict[str, Any]) -> str:
    target = run.get("target") or {}
    if target.get("simulated"):
        return "emulated endpoint" if (run.get("sim") or {}).get("gpu") else "simulated endpoint"
    url = target.get("base_url") or target.get("url") or ""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or url or "unknown endpoint"
    if parts.port and host in LOCAL_HOSTS:
        return f"{host}:{parts.port}"
    return host


def hardware_name(run: dict[str, Any], telemetry: dict[str, Any]) -> str:
    if run.get("hardware"):
        return str(run["hardware"])
    gpus = [g.get("name") or "GPU" for g in telemetry.get("gpus") or [] if isinstance(g, dict)]
    if gpus:
        names = sorted(set(gpus))
        return f"{len(gpus)}x {names[0]}" if len(names) == 1 else " + ".join(f"1x {n}" for n in gpus)
    if (run.get("target") or {}).get("simulated"):
        sim = run.get("sim") or {}
        if sim.get("gpu"):  # bench run --sim-model M --sim-gpu G: an emulated deployment, not a real one
            return f"emulated {sim['gpus']}x {sim['gpu']}" if sim.get("gpus") else f"emulated {sim['gpu']} (fewest that fit)"
        return "no GPU (simulated)"
    host = urllib.parse.urlsplit((run.get("target") or {}).get("base_url") or "").hostname
    if telemetry and host in LOCAL_HOSTS:
        return "no GPU seen"  # a local server sampled without NVML: a CPU server, or a GPU this user cannot see
    return "hardware not given"


def run_parts(data: RunData) -> dict[str, str]:
    """endpoint, model, hardware and label of a run (label '' when none)."""
    target = data.run.get("target") or {}
    return {"endpoint": endpoint_name(data.run), "model": str(target.get("model") or "unknown model"),
            "hardware": hardware_name(data.run, data.telemetry), "label": str(data.run.get("label") or "")}


def run_name(data: RunData) -> str:
    parts = run_parts(data)
    base = f"{parts['endpoint']} · {parts['model']} · {parts['hardware']}"
    return f"{parts['label']}: {base}" if parts["label"] else base


def where(runs: list[RunData]) -> str:
    """The 'where' line of a title: the one run's name, or what the compared runs share and how many they are."""
    if len(runs) == 1:
        return runs[0].name
    parts = [run_parts(r) for r in runs]
    shared = [parts[0][k] for k in ("endpoint", "model", "hardware") if len({p[k] for p in parts}) == 1]
    return f"{len(runs)} runs compared" + (f": {' · '.join(shared)}" if shared else "")

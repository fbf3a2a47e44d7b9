"""The run folder: ``run.json`` (what was run, without secrets), ``requests.jsonl`` (raw records, appended as they
complete), ``summary.json`` / ``summary.csv`` (derived, one entry per level). ``bench summarize`` rebuilds the
summary from the first two alone.
"""
from __future__ import annotations

import csv
import getpass
import os
import platform
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson

from .records import RequestRecord, read_records
from .summary import flatten, summarize_level

SENSITIVE_HEADER = re.compile(r"(authorization|api[-_]?key|token|secret|cookie|password|session)", re.I)
REDACTED = "<redacted>"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def new_run_dir(results_dir: Path, label: str, now: datetime | None = None) -> Path:
    now = now or datetime.now()
    base = results_dir / f"{now:%Y%m%d-%H%M%S}_{slug(label)}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k: (REDACTED if SENSITIVE_HEADER.search(k) else v) for k, v in headers}


def scrub(text: str | None, secrets: Iterable[str]) -> str | None:
    """Remove secrets (API keys) from a text that may echo them (some providers quote the key in errors)."""
    if text is None:
        return None
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "user": _user(),
    }


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def write_summary(run_dir: Path, levels: list[dict[str, Any]], run_info: dict[str, Any] | None = None) -> None:
    write_json(run_dir / "summary.json", {"run": run_info or {}, "levels": levels})
    rows = [flatten(level) for level in levels]
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(run_dir / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def summarize_run_dir(run_dir: Path) -> list[dict[str, Any]]:
    """Re-derive every level's summary from ``requests.jsonl`` and the levels and SLO in ``run.json``."""
    run = read_json(run_dir / "run.json")
    records = list(read_records(run_dir / "requests.jsonl"))
    slo = run.get("slo")
    by_phase: dict[str, list[RequestRecord]] = {}
    for rec in records:
        by_phase.setdefault(rec.phase, []).append(rec)
    phases = {p["label"]: p for p in run.get("phases") or []}
    telemetry = {}
    samples = run_dir / "samples.csv"
    if samples.is_file() and phases:
        from .telemetry import summarize_samples
        telemetry = summarize_samples(samples, [(p["label"], p["start_ns"], p["end_ns"]) for p in phases.values()])
    levels = []
    for level in _levels_ran(run, records):
        recs = by_phase.get(level["label"])
        if recs is None:
            continue
        entry = summarize_level(level["label"], recs, concurrency=level.get("concurrency"),
                                request_rate=level.get("request_rate"), slo=slo)
        if level["label"] in phases:
            entry["client"] = phases[level["label"]].get("client")
        if level["label"] in telemetry:
            entry["telemetry"] = telemetry[level["label"]]
        levels.append(entry)
    return levels


def _levels_ran(run: dict[str, Any], records: list[RequestRecord]) -> list[dict[str, Any]]:
    """The levels of a run in the order they ran: those planned in ``run.json``, then any other the records show
    (``bench capacity`` chooses its levels as it goes; after a crash ``run.json`` names only the first), with their
    concurrency and rate from ``run.json``'s phases or, failing that, from the label (``c=N``, ``rate=R/s``)."""
    from .capacity import parse_label
    out = {lv["label"]: lv for lv in run["load"]["levels"]}
    phases = {p["label"]: p for p in run.get("phases") or []}
    cap = (run.get("capacity") or {}).get("max_concurrency")
    order = sorted({(r.level_index, r.phase) for r in records})
    for _, label in order:
        if label in out:
            continue
        if label in phases and "concurrency" in phases[label]:
            out[label] = {"label": label, "concurrency": phases[label]["concurrency"],
                          "request_rate": phases[label].get("request_rate")}
            continue
        c, rate = parse_label(label)
        out[label] = {"label": label, "concurrency": c if rate is None else cap, "request_rate": rate}
    index = {label: i for i, label in order}
    return sorted(out.values(), key=lambda lv: index.get(lv["label"], -1))


def capacity_of_run_dir(run_dir: Path, levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``bench capacity``'s answer re-derived from the run folder's records (None for other runs)."""
    run = read_json(run_dir / "run.json")
    if not run.get("capacity"):
        return None
    from .capacity import from_run, load_of
    by_phase: dict[str, list[RequestRecord]] = {}
    for rec in read_records(run_dir / "requests.jsonl"):
        by_phase.setdefault(rec.phase, []).append(rec)
    planned = {p["label"]: p.get("num_requests") for p in run.get("phases") or []}
    ran = [(lv["phase"], load_of(lv.get("concurrency"), lv.get("request_rate")), by_phase.get(lv["phase"], []),
            planned.get(lv["phase"])) for lv in levels]
    return from_run(run, ran, levels)

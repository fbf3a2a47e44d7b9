"""The report page: one self-contained HTML file (figures as base64 PNG, inline CSS, no script, no link out).

It holds the runs and their names, notes (sizing overlay, missing telemetry), the field table, every figure with one
sentence on how to read it, the full per-level table, and each run's configuration. `run.json` is already written
without secrets; the page redacts again any header value, and any text value of a key, whose name matches
authorization|key|token|secret, and any text that looks like a bearer token or an API key.
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from bench import __version__

from .style import png_bytes

SECRET_NAME = re.compile(r"authorization|key|token|secret", re.IGNORECASE)
SECRET_VALUE = re.compile(r"^\s*(bearer\s+\S|sk-[A-Za-z0-9_-]{6,})", re.IGNORECASE)
REDACTED = "<redacted>"

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;color:#222;
     padding:0 16px;line-height:1.45}
h1{font-size:22px;margin-bottom:2px} h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd}
.where{color:#555;margin-top:0}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f4} td.text,th.text{text-align:left;white-space:normal}
figure{margin:16px 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#444;font-size:13px;max-width:1000px}
pre{background:#f7f7f7;padding:10px;font-size:12px;overflow-x:auto}
ul.notes li{color:#6a4a00}
.scroll{overflow-x:auto}
"""

SECTIONS = {"throughput": "Throughput against load", "latency": "Latency percentiles",
            "latency_cdf": "Latency distributions", "pareto": "Throughput against latency",
            "capacity": "Capacity search", "timeline": "Telemetry over time"}


def redact(value: Any, key: str = "") -> Any:
    """A copy of a run configuration with secret-looking text replaced by '<redacted>': any text under a key (a
    header name included) matching authorization|key|token|secret, and any bearer token or sk-... key anywhere."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str) and (SECRET_NAME.search(key) or SECRET_VALUE.search(value)):
        return REDACTED
    return value


def fmt(value: Any) -> str:
    """Table cells: '–' for missing, thousands separators, about three significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 0.01:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def table_html(df: pd.DataFrame, text_columns: tuple[str, ...] = ("run", "level", "label", "endpoint", "model",
                                                                    "hardware", "folder", "started (UTC)")) -> str:
    head = "".join(f'<th class="{"text" if c in text_columns else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cells = "".join(f'<td class="{"text" if c in text_columns else ""}">{html.escape(fmt(row[c]))}</td>'
                        for c in df.columns)
        body.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


LEVEL_COLUMNS = ("run", "level", "requests", "ok", "error_rate", "achieved_concurrency", "output_tokens_per_s",
                 "total_tokens_per_s", "requests_per_s", "per_request_output_tokens_per_s_mean", "ttft_ms_p50",
                 "ttft_ms_p90", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "itl_ms_p50", "itl_ms_p99",
                 "e2e_ms_p50", "e2e_ms_p99", "goodput_requests_per_s", "client_lagged")


def _b64(chart, pngs: dict[str, bytes] | None) -> str:
    data = (pngs or {}).get(chart.name) or png_bytes(chart.figure)
    return base64.b64encode(data).decode("ascii")


def render_html(report, pngs: dict[str, bytes] | None = None) -> str:
    """The whole page for a `build.Report`; `pngs` holds already drawn PNGs by chart name (others are drawn)."""
    from .load import where
    place = where(report.runs)
    parts = [(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gpucap report: "
             f"{html.escape(place)}</title><style>{CSS}</style></head><body>"),
             "<h1>LLM endpoint benchmark report</h1>",
             (f'<p class="where">{html.escape(place)} · made {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by gpucap '
             f"{html.escape(__version__)}</p>"),
             "<h2>Runs</h2>", table_html(report.runs_table)]
    if report.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    parts += ["<h2>Field table</h2>",
              ("<p>Per level: peak GPU memory (all GPUs), the server process's peak VIRT and RES, mean tokens/s one "
              "request gets, tokens/s of all requests together, and TTFT. GB = 10<sup>9</sup> bytes; – = not "
              "measured.</p>"), table_html(report.field)]
    predicted = {p.run: p.capacity for p in report.predictions if p.capacity is not None}
    for run in report.runs:
        if run.capacity and run.capacity.get("sentence"):
            also = (f" Sizing predicts {predicted[run.name]} for the same deployment and objectives."
                    if run.name in predicted else "")
            parts.append(f'<p class="where"><b>{html.escape(run.name)}</b>: '
                         f'{html.escape(run.capacity["sentence"] + also)}</p>')
    seen = set()
    for chart in report.charts:
        section = SECTIONS.get(chart.name.split("_")[0] if chart.name.startswith("timeline") else chart.name,
                               chart.name)
        if section not in seen:
            parts.append(f"<h2>{html.escape(section)}</h2>")
            seen.add(section)
        alt = html.escape(chart.figure.get_suptitle().replace("\n", " — ") or chart.name)
        parts.append(f'<figure id="{html.escape(chart.name)}"><img alt="{alt}" '
                     f'src="data:image/png;base64,{_b64(chart, pngs)}"><figcaption>'
                     f"{html.escape(chart.caption)}</figcaption></figure>")
    levels = report.levels[[c for c in LEVEL_COLUMNS if c in report.levels.columns]]
    parts += ["<h2>Every level</h2>", ("<p>Units in the names: _ms milliseconds, _per_s per second. Definitions: "
              "docs/metrics.md.</p>"), table_html(levels), "<h2>Run configuration</h2>"]
    for run in report.runs:
        config = json.dumps(redact(run.run), indent=2, ensure_ascii=False)
        parts.append(f"<details><summary>{html.escape(run.name)} — {html.escape(str(run.run_dir))}</summary>"
                     f"<pre>{html.escape(config)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)

"""Text of `sizing calibrate` and `sizing probe`, rendered from the calibration profile document. Pure."""

from __future__ import annotations

import os
from typing import Any

from sizing.render import table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def _pct(error: float | None) -> str:
    return "-" if error is None else f"{error:+.1%}"


def _with_error(seconds: float | None, error: float | None) -> str:
    return "-" if seconds is None else f"{_ms(seconds)} ({_pct(error)})"


def _factor(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.3g} ms" if name.endswith("_s") else f"{value:.3g}"


def level_table(doc: dict[str, Any]) -> str:
    """One row per level: measured TPOT and TTFT, sizing before and after (error in brackets), in ms. 'saw' is the
    mean number of requests in flight while the level's requests decoded, the concurrency sizing predicts at."""
    several = len({lv["run"] for lv in doc["levels"]}) > 1
    rows = []
    for lv in doc["levels"]:
        m, b, a = lv["measured"], lv["before"], lv["after"]
        eb, ea = lv["error_before"], lv["error_after"]
        name = (f"{os.path.basename(lv['run'].rstrip('/'))} " if several else "") + f"c={lv['concurrency']}"
        if lv.get("seen_concurrency") is not None and lv["concurrency"] > 1:
            name += f" (saw {lv['seen_concurrency']:.1f})"
        rows.append([name, "fit" if lv["fitted"] else "predicted",
                     _ms(m["tpot_s"]), _with_error(b["tpot_s"], eb["tpot"]), _with_error(a["tpot_s"], ea["tpot"]),
                     _ms(m["ttft_s"]), _with_error(b["ttft_s"], eb["ttft"]), _with_error(a["ttft_s"], ea["ttft"])])
    return table(["level", "used", "TPOT ms", "before", "after", "TTFT ms", "before", "after"], rows,
                 right=(2, 3, 4, 5, 6, 7))


def summary_line(doc: dict[str, Any]) -> str:
    s = doc.get("summary") or {}

    def pair(metric: str) -> str:
        before, after = s.get(f"median_abs_{metric}_error_before"), s.get(f"median_abs_{metric}_error_after")
        if before is None or after is None:
            return f"{metric.upper()} -"
        return f"{metric.upper()} {before:.1%} -> {after:.1%}"

    return f"median |error| of the predicted levels: {pair('tpot')}, {pair('ttft')}"


def render_calibration(doc: dict[str, Any], out_path: str | None) -> str:
    dep, f = doc["deployment"], doc["factors"]
    lay = dep.get("layout") or {}
    runs = ", ".join(r["path"] for r in doc["runs"])
    fitted_on = ", ".join(f"c={lv['concurrency']}" for lv in doc["levels"] if lv["fitted"])
    out = [f"calibration of {f['engine']} on {f['family']} cards, from {runs}",
           f"deployment: {dep['model']} ({dep['quant']}) on {dep['gpus']} x {dep['gpu']}, "
           f"TP{lay.get('tp', 1)} PP{lay.get('pp', 1)}" + (f" x{lay['dp']} replicas" if lay.get("dp", 1) > 1 else "")
           + f", {dep['engine']}; fitted on {fitted_on}",
           "decided from: " + "; ".join(f"{k} <- {v}" for k, v in dep.get("decided_from", {}).items()), ""]
    rows = []
    for name in f["fitted"]:
        ceiling = f.get("ceilings", {}).get(name)
        rows.append([name, _factor(name, f["before"].get(name)), _factor(name, f["after"].get(name)),
                     "-" if ceiling is None else f"<= {ceiling:.3g} (probe)"])
    out += [table(["factor", "before", "after", "bound"], rows), "", level_table(doc), "", summary_line(doc)]
    skipped = [s for r in doc["runs"] for s in r.get("skipped", [])]
    out += [f"not used: {s}" for s in skipped]
    if out_path:
        out.append(f"profile written to {out_path}; use it with `sizing recommend ... --calibration {out_path}`")
    return "\n".join(out)


def _rate(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e9:,.0f} GB/s" if key.startswith("mem") else f"{value / 1e12:,.1f} TFLOPS"


def render_probe(card: dict[str, Any], out_path: str | None) -> str:
    probe = card.get("probe") or {}
    cc = probe.get("compute_capability") or ["?", "?"]
    known = f"{card['gpu']}" if card.get("gpu") else "not in sizing's catalog: no datasheet to compare"
    head = (f"{probe.get('device_name')} ({known}, compute capability {cc[0]}.{cc[1]}), torch {probe.get('torch')}, "
            f"CUDA {probe.get('cuda')}")
    out = [head]
    ds = card.get("datasheet") or {}
    rows = []
    for label, key, short in (("memory bandwidth (copy)", "mem_bandwidth_bytes_per_s", "mem_bandwidth"),
                              ("bf16 matmul", "bf16_flops_per_s", "bf16"), ("fp16 matmul", "fp16_flops_per_s", "fp16"),
                              ("fp8 matmul", "fp8_flops_per_s", "fp8")):
        ratio = (card.get("measured_vs_datasheet") or {}).get(short)
        rows.append([label, _rate(key, (card.get("measured") or {}).get(key)), _rate(key, ds.get(key)),
                     "-" if ratio is None else f"{ratio:.0%}"])
    out.append(table(["what", "measured", "datasheet", "measured/datasheet"], rows, right=(1, 2, 3)))
    out.append(f"(copy of {probe.get('copy_bytes', 0) / 2**30:.2f} GiB counted as read + written; "
               f"{probe.get('matmul_n')}^3 matmuls; median of {probe.get('timed_rounds')} CUDA-event timings after "
               f"{probe.get('warmup_rounds')} warm-up rounds)")
    out += [f"note: {n}" for n in probe.get("notes", [])]
    if out_path:
        out.append(f"written to {out_path} (card section); `sizing recommend --calibration {out_path}` caps "
                   f"efficiencies on this card at the measured ceiling")
    return "\n".join(out)

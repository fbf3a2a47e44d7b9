"""``bench compare`` for people: what was compared, one table per matched level, the unmatched levels, the gate.

Formatting only; every number and verdict comes from ``bench.compare``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .compare import Breach, Change, Comparison, GateResult

VERDICT_STYLE = {"better": "green", "worse": "red", "same": "dim"}


# ---- numbers ---------------------------------------------------------------------------------------------------

def row_format(unit: str, *values: float | None) -> Callable[..., str]:
    """A formatter for one row's values and change, all at the precision (and byte scale) of the row's largest
    value: ``fmt(value)``, ``fmt(change, signed=True)``; None is "-"."""
    biggest = max((abs(v) for v in values if v is not None), default=0.0)
    div, suffix = (1e9, " GB") if biggest >= 1e9 else (1e6, " MB")
    digits = 2 if (unit in ("ms", "requests/s") and biggest < 10) or unit == "bytes" else 1

    def fmt(value: float | None, signed: bool = False) -> str:
        if value is None:
            return "-"
        sign = "+" if signed else ""
        if unit == "fraction":
            return f"{value * 100:{sign}.1f} pp" if signed else f"{value:.1%}"
        if unit == "bytes":
            return f"{value / div:{sign},.{digits}f}{suffix}"
        return f"{value:{sign},.{digits}f}"

    return fmt


def fmt_relative(rel: float | None) -> str:
    if rel is None:
        return "-"
    if math.isinf(rel):
        return "from 0"
    return f"{rel:+.1%}"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def fmt_config(value: Any, other: Any = None) -> str:
    """A setting from run.json; of a dict (sim, slo) only the keys whose values differ from ``other``'s."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        keys = [k for k in value if not isinstance(other, dict) or other.get(k) != value.get(k)]
        return ", ".join(f"{k}={value[k]}" for k in keys) or "-"
    return str(value)


# ---- pieces ----------------------------------------------------------------------------------------------------

def header(cmp: Comparison) -> Text:
    text = Text()
    text.append("bench compare", style="bold")
    text.append(f" (changes within ±{cmp.threshold:.0%} count as \"same\")\n")
    for name, where, started in (("baseline ", cmp.baseline_dir, cmp.baseline_started_at),
                                 ("candidate", cmp.candidate_dir, cmp.candidate_started_at)):
        text.append(f"  {name}: {where}" + (f"  (started {started})" if started else "") + "\n")
    return text


def config_table(cmp: Comparison) -> RenderableType:
    """The configuration fields that differ, then one line with those that are the same."""
    differ = [f for f in cmp.config if f.differs]
    same = [f for f in cmp.config if not f.differs and f.baseline is not None]
    same_line = Text("Same in both: " + ("; ".join(f"{f.name} {fmt_config(f.baseline)}" for f in same) or "-"))
    if not differ:
        return Group(Text("The two runs' configurations are the same."), same_line)
    table = Table(title="What differs between the runs", title_justify="left", header_style="bold")
    for name in ("setting", "baseline", "candidate"):
        table.add_column(name)
    for f in differ:
        # Text, not str: a model or label like "qwen[awq]" is not rich markup
        table.add_row(Text(f.name), Text(fmt_config(f.baseline, f.candidate)), Text(fmt_config(f.candidate, f.baseline)))
    return Group(table, same_line)


def level_table(phase: str, rows: list[Change]) -> Table:
    counts = {v: sum(1 for c in rows if c.verdict == v) for v in ("better", "worse", "same")}
    table = Table(title=Text(f"{phase}: {counts['better']} better, {counts['worse']} worse, {counts['same']} same"),
                  title_justify="left", header_style="bold")
    table.add_column("metric")
    for name in ("baseline", "candidate", "change", "change %"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for c in rows:
        m = c.metric
        fmt = row_format(m.unit, c.baseline, c.candidate)
        verdict = c.verdict or "-"
        table.add_row(m.label + (" (ms)" if m.unit == "ms" else ""), fmt(c.baseline), fmt(c.candidate),
                      fmt(c.absolute_change, signed=True), fmt_relative(c.relative_change),
                      Text(verdict, style=VERDICT_STYLE.get(verdict, "")))
    return table


def unmatched(cmp: Comparison) -> list[Text]:
    out = []
    for which, phases in (("baseline", cmp.only_in_baseline), ("candidate", cmp.only_in_candidate)):
        if phases:
            out.append(Text(f"Only in {which} (not compared): {', '.join(phases)}", style="yellow"))
    return out


def breach_line(b: Breach) -> str:
    c, m = b.change, b.change.metric
    fmt = row_format(m.unit, c.baseline, c.candidate)
    unit = "" if m.unit in ("fraction", "bytes") else " " + m.unit
    way = "fell" if m.higher_is_better else "rose"
    return (f"  {c.phase} {m.name}: {fmt(c.baseline)} -> {fmt(c.candidate)}{unit} "
            f"({way} {fmt_relative(c.relative_change).lstrip('+-')}, limit {_pct(b.limit)})")


def gate_lines(gate: GateResult) -> list[Text]:
    spec = ",".join(f"{k}={_pct(v)}" for k, v in gate.limits.items())
    out = []
    if gate.unchecked:
        out.append(Text(f"--fail-on-regression: {', '.join(gate.unchecked)} not measured in both runs on any "
                        "matched level, so not checked.", style="yellow"))
    if gate.breaches:
        out.append(Text(f"REGRESSION: --fail-on-regression {spec} failed on {len(gate.breaches)} "
                        f"level/metric pair(s):", style="bold red"))
        out.extend(Text(breach_line(b), style="red") for b in gate.breaches)
    elif gate.checked_nothing:
        out.append(Text(f"--fail-on-regression {spec} failed: it had nothing to check (no matched level, or none "
                        "of its metrics measured in both runs).", style="bold red"))
    else:
        out.append(Text(f"--fail-on-regression {spec} passed on {gate.levels_checked} matched level(s).",
                        style="bold green"))
    return out


def render(cmp: Comparison, gate: GateResult | None, console: Console) -> None:
    console.print(header(cmp))
    console.print(config_table(cmp))
    for w in cmp.warnings:
        console.print(Text(w, style="yellow"))
    for phase, rows in cmp.levels.items():
        console.print()
        console.print(level_table(phase, rows))
    for line in unmatched(cmp):
        console.print(line)
    if gate is not None:
        console.print()
        for line in gate_lines(gate):
            console.print(line)

"""Terminal output: notes, a progress bar per level with live tokens/s and errors, and the final table."""
from __future__ import annotations

from time import perf_counter
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import errors
from .records import RequestRecord
from .runner import LevelResult, LoadLevel


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_bytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e9:,.1f} GB"


def stat(entry: dict[str, Any], key: str, sub: str) -> float | None:
    value = entry.get(key)
    return value.get(sub) if isinstance(value, dict) else None


class ConsoleObserver:
    """Renders a run for a person. With ``progress=False`` (or output not a terminal) it prints one line a level."""

    def __init__(self, console: Console | None = None, progress: bool = True, quiet: bool = False):
        self.console = console or default_console()
        self.quiet = quiet
        self.live = progress and self.console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task = None
        self._start = 0.0
        self._tokens = 0
        self._errors: dict[str, int] = {}
        self._seen_errors: set[str] = set()

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]{message}[/yellow]")

    def level_started(self, level: LoadLevel, total: int | None) -> None:
        self._start = perf_counter()
        self._tokens = 0
        self._errors = {}
        if not self.live:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description:>10}"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[rate]}"), TextColumn("[red]{task.fields[errs]}"),
            console=self.console, refresh_per_second=2, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(level.label, total=total, rate="", errs="")

    def request_done(self, record: RequestRecord) -> None:
        if record.error_class is None:
            self._tokens += record.output_tokens if record.output_tokens is not None else \
                (record.output_tokens_client or 0)
        else:
            self._errors[record.error_class] = self._errors.get(record.error_class, 0) + 1
            if record.error_class not in self._seen_errors and record.error_class != errors.CANCELLED:
                self._seen_errors.add(record.error_class)
                self._print_error(record)
        if self._progress is not None:
            elapsed = max(perf_counter() - self._start, 1e-9)
            errs = sum(self._errors.values())
            self._progress.update(self._task, advance=1, rate=f"{self._tokens / elapsed:,.0f} tok/s",
                                  errs=f"{errs} errors" if errs else "")

    def _print_error(self, record: RequestRecord) -> None:
        line = f"First {record.error_class} error: {errors.sentence(record.error_class)}"
        if record.error:
            line += f" — {record.error[:200]}"
        if self._progress is not None:
            self._progress.console.print(line, markup=False, style="red")
        elif not self.quiet:
            self.console.print(line, markup=False, style="red")

    def level_finished(self, result: LevelResult) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elapsed = perf_counter() - self._start
        ok = sum(1 for r in result.records if r.error_class is None and not r.warmup)
        n = sum(1 for r in result.records if not r.warmup)
        if not self.live and not self.quiet:
            errs = ", ".join(f"{k} {v}" for k, v in sorted(self._errors.items())) or "no errors"
            self.console.print(f"{result.level.label:>10}: {ok}/{n} ok in {elapsed:.1f} s, "
                               f"{self._tokens / max(elapsed, 1e-9):,.0f} output tok/s, {errs}", markup=False)
        if result.client.get("lagged"):
            self.warn(f"{result.level.label}: the client itself lagged ({result.client['lag_reason']}); "
                      "latencies of this level include client delay. Use fewer levels at once, a faster machine, "
                      "or check `bench selftest`.")

    def table(self, levels: list[dict[str, Any]], title: str | None = None) -> None:
        self.console.print(render_table(levels, title))

    def capacity(self, found: dict[str, Any]) -> None:
        self.console.print(render_capacity(found))
        self.console.print(found["sentence"], markup=False, style="bold")


def render_capacity(found: dict[str, Any]) -> Table:
    """``bench capacity``'s levels ordered by load, each with its verdict."""
    table = Table(title=f"capacity search: {found['criteria']['text']}", header_style="bold")
    for name, justify in (("level", "left"), ("verdict", "left"), ("met SLO", "right"), ("errors", "right"),
                          ("out tok/s", "right"), ("TTFT ms p99", "right"), ("TPOT ms p99", "right"),
                          ("why", "left")):
        table.add_column(name, justify=justify)
    best = found.get("max_load")
    for p in sorted(found["probes"], key=lambda p: p["load"]):
        verdict = "not judged" if p["passed"] is None else "pass" if p["passed"] else "FAIL"
        if best is not None and p["load"] == best:
            verdict += " <- capacity"
        good, err = p.get("good_fraction"), p.get("error_rate")
        table.add_row(p["phase"], verdict, "-" if good is None else f"{good:.0%}",
                      "-" if err is None else f"{err:.0%}", fmt(p.get("output_tokens_per_s")),
                      fmt(p.get("ttft_ms_p99")), fmt(p.get("tpot_ms_p99"), 2), p["reason"])
    return table


def render_table(levels: list[dict[str, Any]], title: str | None = None) -> Table:
    """The field table: one row per level."""
    tel = [lv.get("telemetry") or {} for lv in levels]
    has_gpu = any(t.get("gpu_mem_used_bytes_total_peak") is not None for t in tel)
    has_server = any(t.get("server_res_bytes_peak") is not None for t in tel)
    has_kv = any(t.get("kv_cache_usage_pct_peak") is not None for t in tel)
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("level")
    table.add_column("ok/req", justify="right")
    table.add_column("tok/s per req\n(mean)", justify="right")
    table.add_column("aggregate\nout tok/s", justify="right")
    has_steady = any(lv.get("steady_output_tokens_per_s") is not None for lv in levels)
    if has_steady:
        table.add_column("steady\nout tok/s", justify="right")
    table.add_column("TTFT ms\np50", justify="right")
    table.add_column("TTFT ms\np99", justify="right")
    table.add_column("TPOT ms\nmean", justify="right")
    table.add_column("ITL ms\np99", justify="right")
    table.add_column("E2E s\np50", justify="right")
    if has_gpu:
        table.add_column("GPU mem\npeak", justify="right")
        table.add_column("GPU util\nmean", justify="right")
    if has_server:
        table.add_column("server\nVIRT / RES", justify="right")
    if has_kv:
        table.add_column("KV cache\npeak", justify="right")
    table.add_column("errors")
    for lv in levels:
        errs = ", ".join(f"{k} {v}" for k, v in lv["errors"].items()) or "-"
        e2e = stat(lv, "e2e_ms", "p50")
        row = [
            lv["phase"] + (" (lagged)" if (lv.get("client") or {}).get("lagged") else ""),
            f"{lv['ok']}/{lv['requests']}",
            fmt(stat(lv, "per_request_output_tokens_per_s", "mean")) + ("*" if lv.get("tokens_estimated") else ""),
            fmt(lv.get("output_tokens_per_s")),
            *([fmt(lv.get("steady_output_tokens_per_s"))] if has_steady else []),
            fmt(stat(lv, "ttft_ms", "p50")),
            fmt(stat(lv, "ttft_ms", "p99")),
            fmt(stat(lv, "tpot_ms", "mean"), 2),
            fmt(stat(lv, "itl_ms", "p99"), 2),
            fmt(e2e / 1000 if e2e is not None else None, 2),
        ]
        tele = lv.get("telemetry") or {}
        if has_gpu:
            row.append(fmt_bytes(tele.get("gpu_mem_used_bytes_total_peak")))
            util = tele.get("gpu_util_pct_mean")
            row.append("-" if util is None else f"{util:.0f}%")
        if has_server:
            row.append(f"{fmt_bytes(tele.get('server_virt_bytes_peak'))} / {fmt_bytes(tele.get('server_res_bytes_peak'))}")
        if has_kv:
            kv = tele.get("kv_cache_usage_pct_peak")
            row.append("-" if kv is None else f"{kv:.1f}%")
        row.append(errs)
        table.add_row(*row)
    notes = []
    if has_steady:
        notes.append("steady: output tokens/s without the ramp-up and drain of the level (docs/metrics.md)")
    if any(lv.get("tokens_estimated") for lv in levels):
        notes.append("* token counts estimated by the client: the server sent no usage")
    if notes:
        table.caption = "\n".join(notes)
    return table


def default_console() -> Console:
    """Stdout; when it is not a terminal (CI logs, pipes) wide enough that the table is not squeezed."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=200)
    return console

"""The server's own Prometheus metrics (vLLM's /metrics): which series gpucap reads, and how they are combined.

Parsing is prometheus_client's text parser. Every series is summed over its label sets (vLLM labels each with
`model_name` and, since v1, `engine`; data-parallel engines and several models each add a set), except the KV-cache
usage, a fraction per engine, which is averaged over them and reported in percent (vLLM: "1 means 100 percent").
Where vLLM renamed a series, the names are tried in order and the first one present wins (newer vLLM exports
both the old and the new name for a while, with the same value).

Columns (one value per scrape, None when the server does not export it):
- kv_cache_usage_pct: vllm:kv_cache_usage_perc (>= 0.10), vllm:gpu_cache_usage_perc (older), x 100
- requests_running, requests_waiting: vllm:num_requests_running, vllm:num_requests_waiting (gauges)
- preemptions_total, prompt_tokens_total, generation_tokens_total: counters (reset when the server restarts)
- server_{ttft,itl,e2e}_count and _sum_s: count and sum of seconds of the histograms
  vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds (older: vllm:time_per_output_token_seconds),
  vllm:e2e_request_latency_seconds; the mean over a phase is delta(sum) / delta(count).
"""

from __future__ import annotations

import http.client
import math
import urllib.parse
import urllib.request
from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families

# column -> series names, first present wins
GAUGES: dict[str, tuple[str, ...]] = {
    "kv_cache_usage_pct": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
}
COUNTERS: dict[str, tuple[str, ...]] = {
    # prometheus_client exports Counter("vllm:num_preemptions") as the sample vllm:num_preemptions_total;
    # other exporters may write the bare name.
    "preemptions_total": ("vllm:num_preemptions_total", "vllm:num_preemptions"),
    "prompt_tokens_total": ("vllm:prompt_tokens_total", "vllm:prompt_tokens"),
    "generation_tokens_total": ("vllm:generation_tokens_total", "vllm:generation_tokens"),
}
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "server_ttft": ("vllm:time_to_first_token_seconds",),
    "server_itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "server_e2e": ("vllm:e2e_request_latency_seconds",),
}
MEAN_OVER_LABELS = {"kv_cache_usage_pct"}
SCALE = {"kv_cache_usage_pct": 100.0}

COLUMNS: tuple[str, ...] = (
    *GAUGES, *COUNTERS, *(f"{h}_{part}" for h in HISTOGRAMS for part in ("count", "sum_s")),
)


class MetricsFormatError(ValueError):
    """The text is not Prometheus exposition format."""


def _samples(text: str) -> tuple[dict[str, list[tuple[dict[str, str], float]]], set[str]]:
    """sample name -> [(labels, value)], and the family names seen (a family can be declared with no samples)."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    families: set[str] = set()
    try:
        for family in text_string_to_metric_families(text):
            families.add(family.name)
            for s in family.samples:
                by_name.setdefault(s.name, []).append((s.labels, float(s.value)))
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise MetricsFormatError(f"not Prometheus text: {err}") from err
    return by_name, families


def has_vllm_metrics(text: str) -> bool:
    _, families = _samples(text)
    return any(name.startswith("vllm:") for name in families)


# The sample names parse_vllm_metrics reads.
WANTED_SAMPLES = frozenset(
    [n for names in (*GAUGES.values(), *COUNTERS.values()) for n in names]
    + [f"{n}_{part}" for names in HISTOGRAMS.values() for n in names for part in ("count", "sum")]
)


def select_lines(text: str, wanted: frozenset[str] = WANTED_SAMPLES) -> str:
    """Only the sample lines of the wanted series, comments dropped, for the parser to parse.

    prometheus_client's parser is pure Python at ~30 us a line, holding the GIL; a vLLM /metrics is ~1,000 lines
    (mostly histogram buckets), which would stall the client's event loop for milliseconds at every tick. The
    sample names are unchanged without their # TYPE lines (an untyped family keeps each sample's own name), and
    the values and labels are still read by the real parser; only whole lines are chosen here, by their name.
    """
    keep = []
    for line in text.splitlines():
        if line and line[0] != "#":
            name = line.lstrip().split("{", 1)[0].split(" ", 1)[0]
            if name in wanted:
                keep.append(line)
    return "\n".join(keep) + "\n"


def parse_vllm_metrics(text: str) -> dict[str, float | None]:
    """One scrape -> {column: value or None}; columns as in COLUMNS. Raises MetricsFormatError."""
    by_name, _ = _samples(select_lines(text))
    out: dict[str, float | None] = dict.fromkeys(COLUMNS)
    for column, names in {**GAUGES, **COUNTERS}.items():
        for name in names:
            values = [v for _, v in by_name.get(name, ()) if not math.isnan(v)]
            if values:
                total = sum(values) / len(values) if column in MEAN_OVER_LABELS else sum(values)
                out[column] = total * SCALE.get(column, 1.0)
                break
    for prefix, names in HISTOGRAMS.items():
        for name in names:
            if f"{name}_count" in by_name:
                out[f"{prefix}_count"] = sum(v for _, v in by_name[f"{name}_count"])
                out[f"{prefix}_sum_s"] = sum(v for _, v in by_name.get(f"{name}_sum", ()))
                break
    return out


class HistogramDelta(NamedTuple):
    """What a histogram gained between two scrapes, summed over label sets; unpacks as (count, sum, buckets).

    count: observations; sum: their total (the histogram's unit, seconds for vLLM's latencies);
    buckets: {upper bound: cumulative count}, +inf included; mean = sum / count (None when count is 0).
    """

    count: float
    sum: float
    buckets: dict[float, float]

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def _histogram(text: str, name: str) -> tuple[float, float, dict[float, float]] | None:
    by_name, _ = _samples(text)
    if f"{name}_count" not in by_name:
        return None
    buckets: dict[float, float] = {}
    for labels, value in by_name.get(f"{name}_bucket", ()):
        le = float(labels["le"])  # float("+Inf") is inf
        buckets[le] = buckets.get(le, 0.0) + value
    count = sum(v for _, v in by_name[f"{name}_count"])
    total = sum(v for _, v in by_name.get(f"{name}_sum", ()))
    return count, total, buckets


def histogram_delta(before_text: str | None, after_text: str, name: str | tuple[str, ...]) -> HistogramDelta | None:
    """The histogram `name` in after_text minus the one in before_text (None: count from zero).

    `name` may be a tuple of alternatives (e.g. HISTOGRAMS["server_itl"]); the first one in after_text is used.
    None when after_text does not have it. A count that went down means the server restarted in between: then
    everything in after_text is new, and after_text alone is the delta.
    """
    for candidate in (name,) if isinstance(name, str) else name:
        after = _histogram(after_text, candidate)
        if after is not None:
            break
    else:
        return None
    before = _histogram(before_text, candidate) if before_text is not None else None
    if before is None or after[0] < before[0]:
        return HistogramDelta(after[0], after[1], dict(sorted(after[2].items())))
    buckets = {le: v - before[2].get(le, 0.0) for le, v in sorted(after[2].items())}
    return HistogramDelta(after[0] - before[0], after[1] - before[1], buckets)


class MetricsScraper:
    """GETs the metrics text with a short timeout. Loopback URLs bypass any HTTP proxy from the environment."""

    MAX_BYTES = 32 * 1024 * 1024

    def __init__(self, url: str, timeout_s: float):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"server metrics URL must be http(s)://host[:port]/path, got {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        local = parsed.hostname in ("localhost", "127.0.0.1", "::1") or parsed.hostname.startswith("127.")
        handlers = [urllib.request.ProxyHandler({})] if local else []
        self._opener = urllib.request.build_opener(*handlers)

    def fetch(self) -> str:
        """The body as text; raises OSError (URLError, HTTPError, timeouts) when the server does not answer 200."""
        req = urllib.request.Request(self.url, headers={"Accept": "text/plain"})
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                body = resp.read(self.MAX_BYTES)
                charset = resp.headers.get_content_charset() or "utf-8"
        except http.client.HTTPException as err:  # a garbled or cut-short response: not an OSError by itself
            raise OSError(f"bad HTTP response ({type(err).__name__})") from err
        return body.decode(charset, errors="replace")

"""The server's Prometheus metrics: parsing vLLM's text, histogram deltas, and the sampler scraping a real aiohttp
server on loopback whose counters reset (a server restart) between scrapes.

Fixtures (tests/fixtures/vllm_metrics_*.txt), two data-parallel engines each:
  scrape 1: KV usage 0.10 and 0.30; running 3 + 4; waiting 0 + 1; preemptions 0 + 0; prompt tokens 1000 + 1200;
            generation tokens 500 + 700; TTFT 10 x 0.125 s and 10 x 0.25 s; ITL 100 x 1/64 s and 100 x 1/32 s
  scrape 2: KV 0.50 and 0.70; running 5 + 5; waiting 2 + 3; preemptions 1 + 2; prompt 3000 + 3200;
            generation 2500 + 2700; TTFT 20 x 0.125 s and 20 x 0.25 s; ITL 200 x 1/64 s and 200 x 1/32 s
  scrape 3 (restarted): KV 0.05 and 0.05; running 1 + 0; prompt 100 + 100; generation 50 + 50; TTFT 2 x 0.5 s
  v0: one engine, older names: gpu_cache_usage_perc 0.42, time_per_output_token_seconds 50 x 1/128 s
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from aiohttp import web

from bench.telemetry import Sampler, TelemetryConfig, histogram_delta, parse_vllm_metrics, summarize_samples
from bench.telemetry.server_metrics import HISTOGRAMS, MetricsFormatError, has_vllm_metrics, select_lines

FIXTURES = Path(__file__).parent / "fixtures"
SCRAPE_1 = (FIXTURES / "vllm_metrics_1.txt").read_text()
SCRAPE_2 = (FIXTURES / "vllm_metrics_2.txt").read_text()
SCRAPE_3 = (FIXTURES / "vllm_metrics_3_restarted.txt").read_text()
SCRAPE_V0 = (FIXTURES / "vllm_metrics_v0.txt").read_text()


class _NoNvml:
    import pynvml as _p

    NVMLError = _p.NVMLError

    def nvmlInit(self):
        raise self._p.NVMLError(self._p.NVML_ERROR_LIBRARY_NOT_FOUND)


# -- parsing ---------------------------------------------------------------------------------------------------------
def test_parse_sums_engines_and_averages_kv_usage_in_percent():
    m = parse_vllm_metrics(SCRAPE_1)
    assert m["kv_cache_usage_pct"] == pytest.approx(20.0)  # mean(0.10, 0.30) x 100
    assert m["requests_running"] == 7.0  # 3 + 4
    assert m["requests_waiting"] == 1.0  # 0 + 1
    assert m["preemptions_total"] == 0.0  # measured zero, not missing
    assert m["prompt_tokens_total"] == 2200.0  # 1000 + 1200
    assert m["generation_tokens_total"] == 1200.0  # 500 + 700
    assert m["server_ttft_count"] == 20.0 and m["server_ttft_sum_s"] == 3.75  # 10 x 0.125 + 10 x 0.25
    assert m["server_itl_count"] == 200.0 and m["server_itl_sum_s"] == 4.6875  # 100/64 + 100/32
    assert m["server_e2e_count"] == 20.0 and m["server_e2e_sum_s"] == 40.0  # 10 x 1.5 + 10 x 2.5


def test_parse_reads_older_vllm_names():
    m = parse_vllm_metrics(SCRAPE_V0)
    assert m["kv_cache_usage_pct"] == pytest.approx(42.0)  # vllm:gpu_cache_usage_perc 0.42
    assert m["server_itl_count"] == 50.0 and m["server_itl_sum_s"] == 0.390625  # time_per_output_token: 50/128
    assert m["preemptions_total"] == 3.0


def test_newer_name_wins_and_missing_series_are_none():
    text = ('# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n'
            '# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{engine="0"} 0.99\n')
    m = parse_vllm_metrics(text)
    assert m["kv_cache_usage_pct"] == 25.0
    assert m["requests_running"] is None and m["prompt_tokens_total"] is None and m["server_ttft_count"] is None


def test_html_is_not_metrics():
    html = "<html><body>Not Found</body></html>\n"
    with pytest.raises(MetricsFormatError):
        has_vllm_metrics(html)
    assert set(parse_vllm_metrics(html).values()) == {None}
    assert has_vllm_metrics(SCRAPE_V0) and not has_vllm_metrics("# TYPE http_requests_total counter\n")


def test_only_the_lines_read_are_parsed():
    # 223 lines in, the 2 engines x (6 gauges/counters + 3 histograms x count/sum) = 24 sample lines out
    kept = select_lines(SCRAPE_1).splitlines()
    assert len(kept) == 24 + 2  # + the deprecated vllm:gpu_cache_usage_perc, exported beside the new name
    assert all(line.startswith("vllm:") and "_bucket" not in line for line in kept)


def test_histogram_delta_between_scrapes_and_across_a_restart():
    # TTFT gained 10 x 0.125 s + 10 x 0.25 s: count 20, sum 3.75 s, mean 0.1875 s; all 20 in the 0.25 s bucket
    d = histogram_delta(SCRAPE_1, SCRAPE_2, "vllm:time_to_first_token_seconds")
    assert (d.count, d.sum, d.mean) == (20.0, 3.75, 0.1875)
    count, total, buckets = d
    assert buckets[0.1] == 0.0 and buckets[0.25] == 20.0 and buckets[float("inf")] == 20.0
    # ITL by its alternatives (newer name first): 100/64 + 100/32 = 4.6875 s over 200 gaps
    d = histogram_delta(SCRAPE_1, SCRAPE_2, HISTOGRAMS["server_itl"])
    assert (d.count, d.sum) == (200.0, 4.6875)
    d = histogram_delta(None, SCRAPE_V0, HISTOGRAMS["server_itl"])
    assert (d.count, d.sum) == (50.0, 0.390625)
    # count 40 -> 2: the server restarted, so scrape 3 alone is what happened since: 2 x 0.5 s
    d = histogram_delta(SCRAPE_2, SCRAPE_3, "vllm:time_to_first_token_seconds")
    assert (d.count, d.sum, d.mean) == (2.0, 1.0, 0.5)
    assert d.buckets[0.25] == 0.0 and d.buckets[0.5] == 2.0
    assert histogram_delta(SCRAPE_1, SCRAPE_2, "vllm:no_such_histogram") is None


# -- a real server on loopback ---------------------------------------------------------------------------------------
class MetricsServer:
    """aiohttp on 127.0.0.1 in its own thread; GET /metrics answers `self.body` as Prometheus text."""

    def __init__(self, body: str = SCRAPE_1, port: int = 0):
        self.body = body
        self.port = port
        self.scrapes = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(text=self.body, content_type="text/plain", charset="utf-8")

    async def _html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    async def _other(self, request: web.Request) -> web.Response:
        return web.Response(text="# TYPE http_requests_total counter\nhttp_requests_total 3\n")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/html", self._html)
        app.router.add_get("/other/metrics", self._other)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())

    def url(self, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _wait_rows(sampler: Sampler, n: int) -> None:
    deadline = time.monotonic() + 10
    while sampler.sample_count < n:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_sampler_scrapes_a_server_whose_counters_reset(tmp_path):
    """Three phases; each boundary is taken while the counters are flat (two rows on each side), so the
    interpolated counter values at the boundaries are exact."""
    notes: list[str] = []
    with MetricsServer(SCRAPE_1) as srv:
        config = TelemetryConfig(sample_interval_s=0.02, server_metrics_url=srv.url())
        sampler = Sampler(config, tmp_path / "samples.csv", nvml_module=_NoNvml(), note=notes.append)
        with sampler:
            _wait_rows(sampler, 3)
            t0 = sampler.latest()["t_ns"]
            t1 = _boundary(sampler)
            srv.body = SCRAPE_2
            _wait_rows(sampler, sampler.sample_count + 3)
            t2 = _boundary(sampler)
            srv.body = SCRAPE_3  # the server restarted
            _wait_rows(sampler, sampler.sample_count + 3)
            t3 = sampler.latest()["t_ns"]
    assert not any("server metrics" in n for n in notes), notes
    df = pd.read_csv(tmp_path / "samples.csv")
    assert set(df["kv_cache_usage_pct"]) == {20.0, 60.0, 5.0}

    s = summarize_samples(df, [("a", t0, t1), ("b", t1, t2), ("c", t2, t3)])
    a, b, c = s["a"], s["b"], s["c"]
    # a: scrape 1 throughout; counters flat, so the deltas are a measured 0, not None
    assert (a["kv_cache_usage_pct_peak"], a["kv_cache_usage_pct_mean"]) == (20.0, 20.0)
    assert a["prompt_tokens_delta"] == 0.0 and a["generation_tokens_delta"] == 0.0 and a["preemptions_delta"] == 0.0
    assert a["server_ttft_mean_s"] is None  # no request finished in a: nothing to average
    assert a["requests_running_mean"] == 7.0
    # b: scrape 1 -> 2. prompt 6200 - 2200 = 4000; generation 5200 - 1200 = 4000; preemptions 3 - 0 = 3
    assert b["prompt_tokens_delta"] == 4000.0
    assert b["generation_tokens_delta"] == 4000.0
    assert b["preemptions_delta"] == 3.0
    assert b["server_generation_tokens_per_s"] == pytest.approx(4000.0 / ((t2 - t1) / 1e9))
    # TTFT mean = (7.5 - 3.75) s / (40 - 20) = 0.1875 s; ITL = (9.375 - 4.6875) s / 200 = 0.0234375 s
    assert b["server_ttft_mean_s"] == pytest.approx(0.1875)
    assert b["server_itl_mean_s"] == pytest.approx(0.0234375)
    assert b["server_e2e_mean_s"] == pytest.approx(2.0)  # (80 - 40) / 20
    assert b["kv_cache_usage_pct_peak"] == 60.0 and 20.0 < b["kv_cache_usage_pct_mean"] < 60.0
    assert b["requests_waiting_peak"] == 5.0
    # c: restart. prompt 6200 -> 200 is a reset: 200 new tokens; generation 100; preemptions 3 -> 0: none new
    assert c["prompt_tokens_delta"] == 200.0
    assert c["generation_tokens_delta"] == 100.0
    assert c["preemptions_delta"] == 0.0
    assert c["server_ttft_mean_s"] == pytest.approx(0.5)  # 1.0 s / 2 since the restart

    first = (tmp_path / "server_metrics_first.prom").read_text()
    last = (tmp_path / "server_metrics_last.prom").read_text()
    assert first == SCRAPE_1 and last == SCRAPE_3
    assert json.loads((tmp_path / "telemetry.json").read_text())["server_metrics_url"] == srv.url()


def _boundary(sampler: Sampler) -> int:
    """A phase boundary between two rows of flat counters: two rows before it and two after."""
    _wait_rows(sampler, sampler.sample_count + 2)
    t = time.perf_counter_ns()
    _wait_rows(sampler, sampler.sample_count + 2)
    return t


def test_a_guessed_url_that_fails_is_one_quiet_note_and_no_columns(tmp_path):
    with MetricsServer() as srv:
        for path, why in [("/nothing-here", "HTTP 404"), ("/html", "no vLLM metrics"),
                          ("/other/metrics", "no vLLM metrics")]:
            notes: list[str] = []
            out = tmp_path / path.strip("/").replace("/", "_") / "samples.csv"
            config = TelemetryConfig(sample_interval_s=0.02, server_metrics_url=srv.url(path),
                                     server_metrics_auto=True)
            with Sampler(config, out, nvml_module=_NoNvml(), note=notes.append) as sampler:
                _wait_rows(sampler, 3)
            metrics_notes = [n for n in notes if "server metrics" in n]
            assert len(metrics_notes) == 1 and why in metrics_notes[0], notes
            assert "kv_cache_usage_pct" not in pd.read_csv(out).columns


def test_a_named_url_that_is_down_keeps_its_columns_and_fills_them_when_it_answers(tmp_path):
    with socket.socket() as probe:  # a free loopback port, where the server will come up later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notes: list[str] = []
    config = TelemetryConfig(sample_interval_s=0.02, server_metrics_url=f"http://127.0.0.1:{port}/metrics")
    with Sampler(config, tmp_path / "samples.csv", nvml_module=_NoNvml(), note=notes.append) as sampler:
        _wait_rows(sampler, 3)
        t_up = time.perf_counter_ns()
        with MetricsServer(SCRAPE_2, port=port):
            _wait_rows(sampler, sampler.sample_count + 3)
            t_down = time.perf_counter_ns()
    df = pd.read_csv(tmp_path / "samples.csv")
    down, up = df[df["t_ns"] < t_up], df[(df["t_ns"] > t_up) & (df["t_ns"] < t_down)]
    assert down["kv_cache_usage_pct"].isna().all()
    assert up["kv_cache_usage_pct"].iloc[-1] == 60.0
    metrics_notes = [n for n in notes if "server metrics" in n]
    assert len(metrics_notes) == 2, notes
    assert f":{port}/metrics did not answer" in metrics_notes[0] and "answering" in metrics_notes[1]
    s = summarize_samples(df, [("down", 0, t_up)])["down"]
    assert s["kv_cache_usage_pct_mean"] is None and s["prompt_tokens_delta"] is None

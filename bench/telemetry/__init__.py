"""Telemetry beside a benchmark: GPUs through NVML, the host, the local server process, the server's Prometheus
metrics and the load generator itself, sampled in a thread into samples.csv and summarised per phase.

Public API:
- TelemetryConfig: what to sample and how often;
- Sampler(config, out_path, ...): start()/stop() or a context manager; writes samples.csv as it goes;
- summarize_samples(samples, phases): per-phase peaks, means and counter increases (None where not measured);
- histogram_delta(before_text, after_text, name): a server histogram's change between two scrapes.
See docs/telemetry.md for the columns and their units.
"""

from bench.telemetry.config import TelemetryConfig
from bench.telemetry.sampler import Sampler
from bench.telemetry.server_metrics import HISTOGRAMS as SERVER_HISTOGRAMS
from bench.telemetry.server_metrics import HistogramDelta, histogram_delta, parse_vllm_metrics
from bench.telemetry.summary import load_samples, summarize_samples

__all__ = [
    "SERVER_HISTOGRAMS",
    "HistogramDelta",
    "Sampler",
    "TelemetryConfig",
    "histogram_delta",
    "load_samples",
    "parse_vllm_metrics",
    "summarize_samples",
]

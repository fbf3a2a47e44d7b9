"""The one object that says what the telemetry sampler samples, and how often."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TelemetryConfig:
    """What to sample beside a benchmark run (or alone, in `bench monitor`).

    sample_interval_s: seconds between two sample rows (default 0.5 s).
    gpus: NVML indices (as nvidia-smi numbers them, not CUDA_VISIBLE_DEVICES order); None = every GPU.
    server_pid: the local server process; its children are summed with it.
    server_port: when no pid is given, the local process listening on this port is the server.
    server_metrics_url: the server's Prometheus text endpoint (vLLM's /metrics).
    server_metrics_auto: True when the URL was guessed, not given: a failure is then one quiet note.
    enabled: False turns the sampler into a no-op (no files, no notes).
    scrape_timeout_s: the longest one metrics scrape may take; None = min(1 s, the interval).
    """

    sample_interval_s: float = 0.5
    gpus: tuple[int, ...] | None = None
    server_pid: int | None = None
    server_port: int | None = None
    server_metrics_url: str | None = None
    server_metrics_auto: bool = False
    enabled: bool = True
    scrape_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sample_interval_s) and self.sample_interval_s > 0):
            raise ValueError(f"sample_interval_s must be a positive number of seconds, got {self.sample_interval_s!r}")
        if self.gpus is not None and any(i < 0 for i in self.gpus):
            raise ValueError(f"gpus must be non-negative NVML indices, got {self.gpus!r}")
        if self.server_pid is not None and self.server_pid <= 0:
            raise ValueError(f"server_pid must be a positive process id, got {self.server_pid!r}")
        if self.server_port is not None and not 0 < self.server_port < 65536:
            raise ValueError(f"server_port must be 1..65535, got {self.server_port!r}")

    @property
    def effective_scrape_timeout_s(self) -> float:
        if self.scrape_timeout_s is not None:
            return self.scrape_timeout_s
        return max(0.1, min(1.0, self.sample_interval_s))

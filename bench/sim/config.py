"""Configuration of the simulated endpoint (``bench sim``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FaultRule:
    """Inject a failure into a share of requests.

    ``kind``: ``status`` (answer ``status`` instead of generating), ``cut`` (drop the connection after
    ``after_tokens`` tokens, without the stream's end), ``malformed`` (send an undecodable event after
    ``after_tokens``), ``stream_error`` (send an in-stream error object after ``after_tokens``), ``hang`` (never answer
    until the client gives up). ``probability`` is per request; ``first_n`` limits the rule to the first n requests.
    """

    kind: str
    probability: float = 1.0
    status: int = 500
    after_tokens: int = 3
    first_n: int | None = None
    retry_after_s: float | None = None


FAULT_KINDS = ("status", "cut", "malformed", "stream_error", "hang")


@dataclass(frozen=True)
class SimConfig:
    models: tuple[str, ...] = ("gpucap-sim",)
    ttft_ms: float = 100.0  # from admission to the first token
    itl_ms: float = 20.0  # between tokens
    itl_per_running_ms: float = 0.0  # added to itl_ms per request running at that moment (batching slows steps)
    jitter: float = 0.0  # each delay is multiplied by a factor uniform in [1 - jitter, 1 + jitter]
    tokens_per_chunk: int = 1
    max_batch: int | None = None  # requests beyond this wait in a queue (their TTFT grows)
    default_max_tokens: int = 256  # output length when the request sets no max_tokens
    natural_len: int | None = None  # stop ("stop" finish) after this many tokens unless ignore_eos is set
    reasoning_tokens: int = 0  # tokens of reasoning before the answer (counted in usage.completion_tokens)
    reasoning_style: str = "field"  # "field" (reasoning_content / thinking blocks) or "tags" (<think> in content)
    max_model_len: int = 32768
    api_key: str | None = None  # when set, requests must carry it
    faults: tuple[FaultRule, ...] = field(default_factory=tuple)
    seed: int = 0
    truth_path: str | None = None  # append the true emission time of every token here (JSONL)
    keep_truth: bool = False  # also keep truth records in memory (tests)
    engine: Any = None  # an engine.EngineSpec: emulate a model on a GPU deployment (timing knobs above then unused)

"""`Plan`: the result of sizing one model on one card, as the CLI prints it and as `sizing.api.plan` returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sizing.plan import Evaluation
from sizing.serving import BreakEven


@dataclass(frozen=True)
class Plan:
    evaluation: Evaluation
    searched: bool                              # True: the GPU count is the searched minimum; False: it was given
    reasoning: tuple[str, ...] = ()
    launch_command: str | None = None
    alternatives: tuple[dict, ...] = ()
    suggestions: tuple[str, ...] = ()
    break_even: BreakEven | None = None
    api_price_per_million_usd: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    more_gpus: tuple[dict, ...] = ()             # the plan at larger, deployable counts (whole nodes...)

    # -- the stable attributes bench relies on -------------------------------------------------------------------
    @property
    def fits(self) -> bool:
        return self.evaluation.fits

    @property
    def reason(self) -> str | None:
        return None if self.evaluation.fits else self.evaluation.reason

    @property
    def gpus(self) -> int:
        return self.evaluation.gpus

    @property
    def tp(self) -> int:
        return self.evaluation.layout.tp

    @property
    def pp(self) -> int:
        return self.evaluation.layout.pp

    @property
    def ep(self) -> int:
        return self.evaluation.layout.ep

    @property
    def memory_per_gpu_bytes(self) -> dict[str, int]:
        return self.evaluation.memory.as_dict()

    @property
    def kv_capacity_tokens(self) -> int:
        """KV-cache tokens the whole deployment holds."""
        return self.evaluation.memory.kv_capacity_tokens

    @property
    def max_concurrency(self) -> int:
        """Requests of input_len + output_len tokens that run at once (KV cache and engine limit)."""
        return self.evaluation.max_running

    def decode_step_s(self, batch_size: int, mean_context_tokens: float) -> float:
        """Seconds of one decode step that gives each of `batch_size` sequences its next token."""
        return self.evaluation.perf.decode_step_s(batch_size, mean_context_tokens)

    def estimate(self, concurrency: int):
        """sizing's serving estimate at `concurrency` for this plan's request shape (what `sizing recommend
        --concurrency` prints): running requests, TPOT, TTFT (queueing included), tokens/s per request (1 / TPOT)
        and in aggregate, cost per million output tokens when the card has a price."""
        from sizing.serving import estimate
        ev = self.evaluation
        return estimate(ev.perf, concurrency, self.max_concurrency, ev.workload.input_len, ev.workload.output_len,
                        ev.price_per_hour_usd)

    def prefill_s(self, prompt_tokens: int) -> float:
        """Seconds to prefill one prompt on an idle deployment, fixed TTFT overhead included."""
        return self.evaluation.perf.prefill_s(prompt_tokens)

    def to_dict(self) -> dict[str, Any]:
        """The object `sizing recommend --json` prints for one card."""
        ev = self.evaluation
        setup, workload = ev.setup, ev.workload
        slo = None
        if workload.slo_tpot_s is not None or workload.slo_ttft_s is not None:
            slo = {"tpot_s": workload.slo_tpot_s, "ttft_s": workload.slo_ttft_s,
                   "max_concurrency": ev.slo_max_concurrency}
        return {
            "model": setup.model.key, "hf_id": setup.model.hf_id, "gpu": setup.gpu.key, "quant": setup.quant.key,
            "engine": setup.engine.key, "kv_cache_dtype": setup.kv_dtype.key,
            "context_tokens": workload.context_tokens, "input_len": workload.input_len,
            "output_len": workload.output_len,
            "gpus": ev.gpus, "gpus_searched": self.searched,
            "layout": ev.layout.as_dict(),
            "fits": ev.fits, "reason": self.reason,
            "compute": {"mode": ev.support.mode, "dtype": ev.support.compute},
            "memory_per_gpu_bytes": self.memory_per_gpu_bytes,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "max_concurrency": self.max_concurrency,
            "estimates": [e.as_dict() for e in ev.estimates] if ev.runs else [],
            "slo": slo,
            "price_per_hour_usd": ev.price_per_hour_usd,
            "price_source": setup.gpu.price_source or None,
            "break_even": None if self.break_even is None else self.break_even.as_dict(),
            "reasoning": list(self.reasoning),
            "suggestions": list(self.suggestions),
            "launch_command": self.launch_command,
            "alternatives": list(self.alternatives),
            "more_gpus": list(self.more_gpus),
            "factors": {**setup.factors.as_dict(), "origin": setup.factors.origin},
            "calibration": self.extras.get("calibration"),
        }

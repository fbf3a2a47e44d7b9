"""Steady-state serving at a given concurrency: time per output token, time to first token, throughput, cost.

Closed loop, every request `input_len` prompt tokens and `output_len` output tokens; c requests in the system.
  running b      = min(c, max_running)            max_running: the KV cache (tokens / (input + output)) and the
                                                  engine's max_num_seqs
  mean context   = input + output / 2
  tpot_s         = decode_step_s(b, mean context) + prefill FLOPs of the prompts admitted per step
                   (b / output requests per step, chunked into the decode steps)
  per request    = 1 / tpot_s tokens/s;   aggregate = b / tpot_s tokens/s
  ttft_s         = prefill_s(input) alone; among b > 1 running: the idle TTFT's fixed overhead + half a step of
                   waiting + the step that prefills it (b decodes + the prompts admitted in that step)
                   + queueing when c > b: (c / b - 1) x (time a running request spends), by Little's law
  cost per 1M output tokens = price_per_hour x gpus / (aggregate x 3600) x 1e6
"""

from __future__ import annotations

from dataclasses import dataclass

from sizing.perf import PerfModel


@dataclass(frozen=True)
class Estimate:
    concurrency: int
    running: int                          # sequences actually decoding together
    tpot_s: float
    ttft_s: float
    per_request_output_tokens_per_s: float
    output_tokens_per_s: float
    cost_per_million_output_tokens_usd: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"concurrency": self.concurrency, "running": self.running,
                "per_request_output_tokens_per_s": round(self.per_request_output_tokens_per_s, 3),
                "output_tokens_per_s": round(self.output_tokens_per_s, 3),
                "tpot_s": round(self.tpot_s, 6), "ttft_s": round(self.ttft_s, 6),
                "cost_per_million_output_tokens_usd": None if self.cost_per_million_output_tokens_usd is None
                else round(self.cost_per_million_output_tokens_usd, 4)}


def estimate(perf: PerfModel, concurrency: int, max_running: int, input_len: int, output_len: int,
             deployment_price_per_hour_usd: float | None) -> Estimate:
    """Tokens/s, TPOT and TTFT at `concurrency` for a deployment whose KV cache and engine run `max_running`."""
    c = max(1, int(concurrency))
    b = max(1, min(c, max_running))
    mean_ctx = input_len + output_len / 2
    admitted_tokens_per_step = b * input_len / max(output_len, 1) if b > 1 else 0.0
    tpot = perf.decode_step_s(b, mean_ctx) + perf.prefill_compute_s(admitted_tokens_per_step, input_len)
    ttft = perf.prefill_s(input_len)
    if b > 1:
        # a prompt arriving among b running requests waits for the current step to end (half a step on average),
        # then is prefilled inside the next one, which also decodes the b others and carries the other prompts
        # admitted per step: its first token comes at that step's end (the engine-independent overhead of the
        # idle TTFT -- HTTP, tokenisation, scheduling -- stays)
        idle_step = perf.decode_step_s(1, float(input_len)) + perf.prefill_compute_s(float(input_len), input_len)
        overhead = max(0.0, ttft - idle_step)
        step = perf.decode_step_s(b, mean_ctx) + perf.prefill_compute_s(max(float(input_len),
                                                                             admitted_tokens_per_step), input_len)
        ttft = overhead + tpot / 2 + step
    if c > b:
        running_time = ttft + max(output_len - 1, 0) * tpot
        ttft += (c / b - 1.0) * running_time
    aggregate = b / tpot
    cost = None
    if deployment_price_per_hour_usd is not None:
        cost = deployment_price_per_hour_usd / (aggregate * 3600.0) * 1e6
    return Estimate(concurrency=c, running=b, tpot_s=tpot, ttft_s=ttft, per_request_output_tokens_per_s=1.0 / tpot,
                    output_tokens_per_s=aggregate, cost_per_million_output_tokens_usd=cost)


def max_concurrency_meeting(perf: PerfModel, max_running: int, input_len: int, output_len: int,
                            slo_tpot_s: float | None, slo_ttft_s: float | None, limit: int = 100_000) -> int | None:
    """The largest concurrency whose TPOT and TTFT meet the targets (None: not even concurrency 1 does).

    TPOT and TTFT never improve with concurrency in this model, so a binary search over 1..limit suffices."""
    def ok(c: int) -> bool:
        e = estimate(perf, c, max_running, input_len, output_len, None)
        return (slo_tpot_s is None or e.tpot_s <= slo_tpot_s) and (slo_ttft_s is None or e.ttft_s <= slo_ttft_s)

    if not ok(1):
        return None
    lo, hi = 1, 2
    while hi <= limit and ok(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class BreakEven:
    api_price_per_million_usd: float
    deployment_price_per_hour_usd: float
    tokens_per_s_needed: float            # sustained output tokens/s at which both cost the same
    tokens_per_month_needed: float        # the same over a 730-hour month
    max_output_tokens_per_s: float        # the deployment's best aggregate among the estimates
    cheaper_at_full_load: bool

    def as_dict(self) -> dict[str, float | bool]:
        return {"api_price_per_million_output_tokens_usd": self.api_price_per_million_usd,
                "deployment_price_per_hour_usd": round(self.deployment_price_per_hour_usd, 4),
                "break_even_output_tokens_per_s": round(self.tokens_per_s_needed, 3),
                "break_even_output_tokens_per_month": round(self.tokens_per_month_needed),
                "max_output_tokens_per_s": round(self.max_output_tokens_per_s, 3),
                "cheaper_than_api_at_full_load": self.cheaper_at_full_load}


def break_even(api_price_per_million_usd: float, deployment_price_per_hour_usd: float,
               max_output_tokens_per_s: float) -> BreakEven:
    """Self-hosting pays off when sustained tokens/s >= price_per_hour / 3600 / (api_price / 1e6)."""
    needed = deployment_price_per_hour_usd / 3600.0 / (api_price_per_million_usd / 1e6)
    return BreakEven(api_price_per_million_usd=api_price_per_million_usd,
                     deployment_price_per_hour_usd=deployment_price_per_hour_usd,
                     tokens_per_s_needed=needed, tokens_per_month_needed=needed * 3600 * 730,
                     max_output_tokens_per_s=max_output_tokens_per_s,
                     cheaper_at_full_load=max_output_tokens_per_s >= needed)

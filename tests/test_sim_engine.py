"""The simulated endpoint emulating a deployment: `bench` against it reproduces what `sizing` predicts."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.apis import APIS
from bench.client import Target
from bench.metrics import derive
from bench.runner import LoadLevel, LoadPlan, Runner, make_session
from bench.sim.engine import Engine, EngineSpec, spec_from_sizing
from bench.workload import LengthSpec, synthetic_prompts
from conftest import run
from sizing.api import plan

MODEL, GPU, GPUS = "distill-qwen-32b", "v100-32g", 4  # the field deployment: ~14 tokens/s per request


async def drive(url: str, model: str, concurrency: int, n: int, out: int = 16):
    prompts = synthetic_prompts(np.random.default_rng(0), n, LengthSpec("fixed", 100), LengthSpec("fixed", out))
    level = LoadLevel(f"c={concurrency}", concurrency, num_requests=n)
    runner = Runner(Target(url, APIS["openai-chat"], model, extra_body={"ignore_eos": True}, continuous_usage=True),
                    LoadPlan(levels=(level,), prompts=tuple(prompts)), None)
    async with make_session(concurrency, 60) as session:
        return (await runner.run_level(session, 0, level)).records


def test_emulated_deployment_reproduces_sizing(make_sim):
    spec = spec_from_sizing(MODEL, GPU, GPUS)
    sim = make_sim(models=(MODEL,), engine=spec)
    p = plan(MODEL, GPU, gpus=GPUS)

    single = [derive(r) for r in run(drive(sim.url, MODEL, 1, 2))]
    assert all(m.ok for m in single)
    prompt_tokens = single[0].prompt_tokens  # 100 words + 7 of chat framing in the simulator's count
    # c=1: TTFT is sizing's prefill time for that prompt, TPOT its one-sequence decode step
    assert np.mean([m.ttft_ms for m in single]) == pytest.approx(p.prefill_s(prompt_tokens) * 1000, rel=0.10)
    assert np.mean([m.tpot_ms for m in single]) == pytest.approx(
        p.decode_step_s(1, prompt_tokens + 8) * 1000, rel=0.10)

    batch = [derive(r) for r in run(drive(sim.url, MODEL, 8, 8))]
    assert all(m.ok for m in batch)
    # c=8: every step decodes 8 sequences; the per-token time is sizing's step for a batch of 8
    assert np.mean([m.tpot_ms for m in batch]) == pytest.approx(p.decode_step_s(8, prompt_tokens + 8) * 1000,
                                                               rel=0.10)
    # requests that arrive while a step runs are prefilled together in a later step, so TTFTs come in groups:
    # at most 3 distinct step boundaries for 8 requests arriving within a few milliseconds
    ttfts = sorted(m.ttft_ms for m in batch)
    groups = 1 + sum(1 for a, b in zip(ttfts, ttfts[1:]) if b - a > 20)
    assert groups <= 3


def _toy_spec(kv_tokens: int, max_num_seqs: int = 64) -> EngineSpec:
    """A deployment with round numbers: 10 ms per step + 1 ms per sequence, prefill free, no overhead."""
    return EngineSpec(label="toy", kv_capacity_tokens=kv_tokens, max_num_seqs=max_num_seqs,
                      decode_step_s=lambda b, ctx: 0.010 + 0.001 * b, prefill_compute_s=lambda t, p: 0.0,
                      prefill_s=lambda p: 0.011)


def test_kv_capacity_limits_what_runs_at_once(make_sim):
    # prompts of 107 tokens (100 words + chat framing) growing by 20: 3 fit in 400 tokens of cache, not 4
    sim = make_sim(models=("toy",), engine=_toy_spec(kv_tokens=400))
    records = run(drive(sim.url, "toy", 6, 6, out=20))
    ms = [derive(r) for r in records]
    assert all(m.ok for m in ms)
    ttfts = sorted(m.ttft_ms for m in ms)
    # the first three start at once (one step of 13 ms), the others wait until the first ones finish
    assert ttfts[2] < 60 and ttfts[3] > 150
    assert sim.server.engine.stats.kv_used_tokens == 0  # every request gave its cache back


def test_max_num_seqs_queues_the_rest(make_sim):
    sim = make_sim(models=("toy",), engine=_toy_spec(kv_tokens=100_000, max_num_seqs=2))
    ms = [derive(r) for r in run(drive(sim.url, "toy", 4, 4, out=10))]
    ttfts = sorted(m.ttft_ms for m in ms)
    # steps of 10 + 2 x 1 ms; the second pair starts after the first pair's 10 tokens (~120 ms)
    assert ttfts[1] < 50 and ttfts[2] > 100


def test_preemption_when_the_cache_runs_out():
    """Pure engine check with a fake clock-free stream: growing sequences overflow the cache and the newest is
    preempted, counted, and resumed later."""
    from bench.sim.emitter import Stream
    from bench.sim.engine import NullTransport
    from bench.sim.formats import Ctx, OpenAIChat
    from bench.sim.truth import TruthRecord

    async def main():
        engine = Engine(_toy_spec(kv_tokens=60, max_num_seqs=8))
        streams = []
        for i in range(3):
            ctx = Ctx(f"p{i}", "toy", 10, False, False, "field")
            s = Stream(fmt=OpenAIChat(ctx), events=[("a", " x", 1)] * 30, truth=TruthRecord(f"p{i}", "x", 0),
                       transport=NullTransport(), step_ns=lambda: 0, finish_reason="length", due_ns=0)
            streams.append(s)
            engine.submit(s, 10)
        await asyncio.wait_for(asyncio.gather(*(s.done for s in streams)), timeout=30)
        return engine, streams

    engine, streams = run(main())
    # three sequences of 10 + 30 tokens need 120 tokens of cache; there are 60: someone was preempted
    assert engine.stats.preemptions >= 1
    assert all(s.sent_tokens == 30 for s in streams)  # every one still finished all its tokens
    assert engine.stats.kv_used_tokens == 0

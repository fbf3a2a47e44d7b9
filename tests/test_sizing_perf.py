"""Speed: the roofline arithmetic on worked numbers, and invariants of the decode/prefill/serving model."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from sizing.api import plan
from sizing.factors import Factors
from sizing.perf import experts_touched
from sizing.serving import break_even, estimate, max_concurrency_meeting

IDEAL = Factors(bw_efficiency=1.0, compute_efficiency=1.0, layer_floor_s=0.0, moe_layer_floor_s=0.0, expert_floor_s=0.0,
                dequant_ops_per_weight=0.0, ttft_overhead_s=0.0)


def ideal(p):
    """The plan's performance model with every efficiency 1 and every floor 0."""
    return dataclasses.replace(p.evaluation.perf, factors=IDEAL)


def test_single_stream_decode_is_weight_bytes_over_bandwidth() -> None:
    # Qwen2.5-7B bf16 on one A100-80G: every weight but the embedding table is read once per token:
    # (7,615,616,512 params - 544,997,376 embedding - 3,584 final norm) x 2 bytes = 14,141,231,104 bytes
    # / 2.039e12 bytes/s = 6.935 ms; the matmul FLOPs (2 x 7.07e9 / 312e12 = 0.045 ms) hide under the reads
    perf = ideal(plan("qwen2.5-7b", "a100-80g", gpus=1))
    assert perf.decode_step_s(1, 0) == pytest.approx(14_141_231_104 / 2.039e12, rel=1e-6)


def test_kv_reads_add_to_the_step() -> None:
    # 8 sequences x 4096 context x 57,344 KV bytes per token (2 x 28 x 4 x 128 x 2) = 1,879,048,192 bytes more
    perf = ideal(plan("qwen2.5-7b", "a100-80g", gpus=1))
    extra = perf.decode_step_s(8, 4096) - perf.decode_step_s(8, 0)
    assert extra == pytest.approx(8 * 4096 * 57344 / 2.039e12, rel=1e-6)


def test_tensor_parallel_adds_bandwidth_and_pipeline_does_not() -> None:
    tp = ideal(plan("llama-3.1-70b", "h100", gpus=4))          # TP4
    assert tp.layout.tp == 4
    single = tp.geometry.stages[0].dense_read_bytes / 3.35e12           # a quarter of the weights per GPU
    # + 80 layers x 2 all-reduces x (10 us NVLink latency + 2 x 3/4 x 8192 x 2 bytes / (900e9 / 2 x 0.7))
    all_reduce = 160 * (10e-6 + 1.5 * 8192 * 2 / (450e9 * 0.7))
    assert tp.decode_step_s(1, 0) == pytest.approx(single + all_reduce, rel=1e-6)
    # llama.cpp splits layers: 4 cards each read a quarter, one after another -> the whole model's bytes / 1 card
    gguf = dataclasses.replace(plan("llama-3.1-70b", "rtx4090", quant="q4_k_m", gpus=4).evaluation.perf, factors=IDEAL)
    assert gguf.layout.pp == 4
    whole = sum(s.dense_read_bytes for s in gguf.geometry.stages) / 1.008e12
    assert gguf.decode_step_s(1, 0) == pytest.approx(whole, rel=0.05)


def test_moe_touches_more_experts_as_the_batch_grows() -> None:
    # E x (1 - (1 - k/E)^b): one token touches its 8 experts; 1024 tokens touch nearly all 256
    assert experts_touched(256, 8, 1) == pytest.approx(8)
    assert experts_touched(256, 8, 2) == pytest.approx(256 * (1 - (248 / 256) ** 2))
    assert experts_touched(256, 8, 1024) == pytest.approx(256, rel=1e-6)
    touched = [experts_touched(128, 8, b) for b in (1, 4, 16, 64, 256)]
    assert touched == sorted(touched)


def test_moe_decode_at_batch_one_reads_only_active_weights() -> None:
    p = plan("r1", "h200", gpus=8)
    perf = ideal(p)
    # 37.6B active of 671B: a batch-1 step reads far less than the resident weights
    assert perf.decode_breakdown(1, 0).memory_s < 0.15 * p.memory_per_gpu_bytes["weights"] / 4.8e12
    assert perf.decode_step_s(256, 0) > 3 * perf.decode_step_s(1, 0)


@pytest.mark.parametrize("model,gpu", [("llama-3.1-8b", "a100-80g"), ("qwen2.5-72b", "h100"),
                                       ("qwen2.5-0.5b", "t4"), ("r1", "h200"), ("qwen3-30b-a3b", "l40s"),
                                       ("distill-qwen-32b", "v100")])
def test_more_gpus_never_slow_decode(model: str, gpu: str) -> None:
    steps, totals = [], []
    for gpus in (1, 2, 4, 8, 16):
        p = plan(model, gpu, gpus=gpus)
        if not p.fits:
            continue
        steps.append(p.decode_step_s(1, 1280.0))
        est = estimate(p.evaluation.perf, 64, p.max_concurrency, 1024, 512, None)
        totals.append(est.output_tokens_per_s)
    assert len(steps) >= 2
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in itertools.pairwise(steps))
    assert all(later >= earlier * (1 - 1e-9) for earlier, later in itertools.pairwise(totals))


def test_decode_slows_with_batch_and_context_and_prefill_with_prompt() -> None:
    p = plan("qwen2.5-32b", "a100-80g")
    assert p.decode_step_s(1, 1000) < p.decode_step_s(32, 1000) < p.decode_step_s(256, 1000)
    assert p.decode_step_s(32, 500) < p.decode_step_s(32, 8000)
    # prefill: compute-bound, 2 x 32.8e9 x 4096 FLOPs = 268 TFLOP at the fitted share of 312 TFLOP/s ... plus floors
    assert p.prefill_s(16) < p.prefill_s(1024) < p.prefill_s(4096)
    assert p.prefill_s(1) >= p.evaluation.setup.factors.ttft_overhead_s
    flops_s = 2 * 32.76e9 * 4096 / (312e12 * p.evaluation.setup.factors.compute_efficiency)
    assert p.prefill_s(4096) >= flops_s


def test_queueing_beyond_the_kv_capacity_follows_littles_law() -> None:
    p = plan("llama-3.1-8b", "a100-80g")
    perf = p.evaluation.perf
    cap = 50
    inside = estimate(perf, cap, cap, 1024, 512, None)
    beyond = estimate(perf, 2 * cap, cap, 1024, 512, None)
    assert beyond.running == cap and beyond.output_tokens_per_s == pytest.approx(inside.output_tokens_per_s)
    # twice the requests, same throughput: each waits one more request lifetime before its first token
    lifetime = inside.ttft_s + 511 * inside.tpot_s
    assert beyond.ttft_s == pytest.approx(inside.ttft_s + lifetime, rel=1e-6)


def test_slo_search_returns_the_largest_concurrency_meeting_the_target() -> None:
    p = plan("llama-3.1-8b", "h100")
    perf, cap = p.evaluation.perf, 1024
    target = estimate(perf, 100, cap, 1024, 512, None).tpot_s
    best = max_concurrency_meeting(perf, cap, 1024, 512, slo_tpot_s=target, slo_ttft_s=None)
    assert best is not None and best >= 100
    assert estimate(perf, best, cap, 1024, 512, None).tpot_s <= target < estimate(perf, best + 1, cap, 1024, 512,
                                                                                    None).tpot_s
    assert max_concurrency_meeting(perf, cap, 1024, 512, slo_tpot_s=1e-6, slo_ttft_s=None) is None


def test_cost_and_break_even_arithmetic() -> None:
    # $10/h against $1 per 1M tokens: 10 / 3600 / (1 / 1e6) = 2,777.8 tokens/s sustained
    be = break_even(api_price_per_million_usd=1.0, deployment_price_per_hour_usd=10.0, max_output_tokens_per_s=5000)
    assert be.tokens_per_s_needed == pytest.approx(10 / 3600 * 1e6)
    assert be.tokens_per_month_needed == pytest.approx(10 / 3600 * 1e6 * 3600 * 730)
    assert be.cheaper_at_full_load
    # cost per 1M output tokens at 1000 tokens/s and $3.6/h: 3.6 / 3.6e6 x 1e6 = $1
    p = plan("llama-3.1-8b", "h100")
    est = estimate(p.evaluation.perf, 1, 1, 1024, 512, 3.6)
    assert est.cost_per_million_output_tokens_usd == pytest.approx(3.6 / (est.output_tokens_per_s * 3600) * 1e6)


def test_llama_cpp_layer_split_costs_only_the_extra_hop() -> None:
    # llama.cpp has no tensor parallelism: with more cards a token still reads every layer once, one card after
    # another, so single-stream decode does not speed up; it slows by one activation hop per added card
    # (one PCIe hop: 30 us latency + 8192 x 2 bytes / (64e9 / 2 x 0.6))
    two = plan("llama-3.1-70b", "rtx4090", quant="q4_k_m", gpus=2)
    three = plan("llama-3.1-70b", "rtx4090", quant="q4_k_m", gpus=3)
    assert (two.pp, three.pp) == (2, 3)
    hop = 30e-6 + 8192 * 2 / (64e9 / 2 * 0.6)
    assert three.decode_step_s(1, 0) - two.decode_step_s(1, 0) == pytest.approx(hop, rel=1e-6)

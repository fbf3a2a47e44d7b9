"""Memory: worked numbers with the arithmetic written out, and the invariants a sizing tool must keep."""

from __future__ import annotations

import dataclasses

import pytest

from sizing.api import plan
from sizing.engines import load_engines, load_interconnects
from sizing.factors import load_factor_table
from sizing.geometry import build_geometry, stage_layer_ranges
from sizing.gpus import resolve_gpu
from sizing.layout import Layout, layout_problem
from sizing.memory import memory_per_gpu
from sizing.models import resolve_model
from sizing.params import count_params
from sizing.plan import Setup, Workload, evaluate, factors_for, search
from sizing.quants import resolve_kv_dtype, resolve_quant
from sizing.recommend import Request, build_plan
from sizing.units import GiB


def geometry(model: str, quant: str, layout: Layout, kv_bytes: float = 2.0):
    arch = resolve_model(model).arch_for(quant)
    return build_geometry(arch, count_params(arch), resolve_quant(quant), kv_bytes, layout)


def test_kv_bytes_per_token_gqa_qwen25_32b() -> None:
    # 2 (K and V) x 64 layers x 8 KV heads x 128 head_dim x 2 bytes = 262,144 bytes per token
    assert geometry("qwen2.5-32b", "bf16", Layout(1, 1)).kv_bytes_per_token_per_gpu == 2 * 64 * 8 * 128 * 2 == 262144
    # split over min(TP, KV heads): TP4 holds 2 heads per rank -> 262,144 / 4 = 65,536 bytes per GPU
    assert geometry("qwen2.5-32b", "bf16", Layout(4, 1)).kv_bytes_per_token_per_gpu == 65536
    # fp8 KV cache: 1 byte per value -> 131,072
    assert geometry("qwen2.5-32b", "bf16", Layout(1, 1), kv_bytes=1).kv_bytes_per_token_per_gpu == 131072


def test_kv_heads_are_replicated_when_tp_exceeds_them() -> None:
    # Qwen3-235B-A22B has 4 KV heads; at TP8 each rank keeps one: 2 x 94 layers x 1 x 128 x 2 = 48,128 bytes
    assert geometry("qwen3-235b-a22b", "bf16", Layout(8, 1, ep=8)).kv_bytes_per_token_per_gpu == 2 * 94 * 128 * 2


def test_kv_bytes_per_token_mla_deepseek() -> None:
    # MLA caches one latent of kv_lora_rank + qk_rope_head_dim = 512 + 64 values per layer:
    # 61 layers x 576 x 2 bytes = 70,272 bytes per token (not 2 x 61 x 128 heads x 192 x 2 = 5.9 MB)
    assert geometry("r1", "fp8", Layout(1, 1)).kv_bytes_per_token_per_gpu == 61 * 576 * 2 == 70272
    # replicated on every TP rank: still 70,272 per GPU at TP8 ...
    tp8 = geometry("r1", "fp8", Layout(8, 1, ep=8))
    assert tp8.kv_bytes_per_token_per_gpu == 70272 and tp8.kv_shards == 1
    # ... unless attention is data-parallel: each rank keeps only its own sequences (8 independent pools)
    assert geometry("r1", "fp8", Layout(8, 1, ep=8, dp_attention=True)).kv_shards == 8


def test_llama_31_70b_fp8_weights() -> None:
    # linear weights: 80 layers x (150,994,944 attention + 704,643,072 MLP) = 68,451,041,280 parameters
    #   x 8.002 bits / 8 (fp8 + one fp32 scale per 128x128 block) = 68,468,154,040 bytes
    # embedding + lm_head 2 x 128256 x 8192 = 2,101,346,304 and norms 1,318,912 stay 16 bit: x 2 = 4,205,330,432
    # total 72,673,484,472 bytes = 72.7 GB (the nvidia/RedHat FP8 checkpoints are ~72.7 GB)
    weights = geometry("llama-3.1-70b", "fp8", Layout(1, 1)).weight_bytes_per_gpu
    assert weights == pytest.approx(68_451_041_280 * 8.002 / 8 + (2_101_346_304 + 1_318_912) * 2)
    assert weights == pytest.approx(72_673_484_472, rel=1e-9)
    # TP2 halves everything but the (tiny) norms: (72,673,483,472 - 2,637,824) / 2 + 2,637,824
    assert geometry("llama-3.1-70b", "fp8", Layout(2, 1)).weight_bytes_per_gpu == pytest.approx(
        (72_673_484_472 - 1_318_912 * 2) / 2 + 1_318_912 * 2)


def test_pipeline_stages_split_layers_like_vllm() -> None:
    # 61 layers over 3 stages: 20, 21, 20 (remainder on the stages before the last)
    assert [len(r) for r in stage_layer_ranges(61, 3)] == [20, 21, 20]
    assert [len(r) for r in stage_layer_ranges(80, 8)] == [10] * 8


def test_vllm_rule_for_the_kv_pool() -> None:
    # Qwen2.5-32B bf16 on one H100: budget 0.9 x 85,520,809,984 = 76,968,728,986 bytes;
    # activations 38.7 x 1024 seqs x 152,064 vocab = 6,026,113,843 (H100: max_num_seqs 1024); non-torch 0.13 GiB
    p = plan("qwen2.5-32b", "h100", gpus=1)
    m = p.memory_per_gpu_bytes
    assert m["reserved"] == pytest.approx(0.9 * 85_520_809_984)
    assert m["activations"] == pytest.approx(38.7 * 1024 * 152064)
    assert m["overhead"] == pytest.approx(0.13 * GiB)
    assert m["kv_cache_pool"] == pytest.approx(m["reserved"] - m["weights"] - m["activations"] - m["overhead"], abs=2)
    # pool / 262,144 bytes per token = the deployment's KV capacity
    assert p.kv_capacity_tokens == int(m["kv_cache_pool"] / 262144)


def test_real_capacity_decides_a_fit_the_marketing_number_would_reject() -> None:
    # 65.5 GB of weights + 6.0 GB activations + 0.14 GB: 0.9 x 85.5 GB leaves 5.3 GB of KV (20k tokens) -> fits;
    # 0.9 x 80e9 = 72 GB would leave 0.3 GB (1.2k tokens), less than one 8192-token sequence
    assert plan("qwen2.5-32b", "h100", gpus=1).fits
    model, h100 = resolve_model("qwen2.5-32b"), resolve_gpu("h100")
    naive = dataclasses.replace(h100, memory_bytes=int(80e9))
    assert not build_plan(model, naive, Request(model="qwen2.5-32b", gpus=1, concurrency=(1,))).fits


def _setup(model: str, gpu: str, quant: str, engine: str = "vllm") -> Setup:
    eng = load_engines()[engine]
    card = resolve_gpu(gpu)
    return Setup(model=resolve_model(model), gpu=card, quant=resolve_quant(quant), kv_dtype=resolve_kv_dtype("auto"),
                 engine=eng, factors=factors_for(load_factor_table(), eng, card), interconnects=load_interconnects())


def test_memory_grows_with_context_and_with_concurrency() -> None:
    setup = _setup("llama-3.1-8b", "a100-80g", "bf16")
    layout = Layout(1, 1)

    def total(context: int, concurrency: int) -> float:
        work = Workload(context_tokens=context, input_len=512, output_len=512, concurrency=(concurrency,))
        return evaluate(setup, work, layout).memory.total_bytes

    assert total(2048, 1) < total(8192, 1) < total(32768, 1)
    assert total(8192, 1) < total(8192, 16) < total(8192, 64)


def test_minimum_gpu_count_never_drops_when_the_ask_grows() -> None:
    setup = _setup("qwen2.5-72b", "l40s", "bf16")
    counts = []
    for concurrency in (1, 32, 128, 512):
        found = search(setup, Workload(context_tokens=8192, input_len=2048, output_len=2048,
                                       concurrency=(concurrency,)))
        counts.append(found.gpus)
    assert counts == sorted(counts) and counts[-1] > counts[0]


@pytest.mark.parametrize("model,gpu", [("qwen2.5-7b", "rtx4090"), ("qwen2.5-72b", "a100-80g"), ("r1", "h200"),
                                       ("llama-3.1-405b", "h100"), ("qwen3-30b-a3b", "l4"), ("r1", "a100-40g"),
                                       ("distill-qwen-32b", "v100"), ("qwen3-235b-a22b", "mi300x")])
def test_a_recommendation_never_exceeds_the_card(model: str, gpu: str) -> None:
    for concurrency in ((1,), (1, 10, 100)):
        p = build_plan(resolve_model(model), resolve_gpu(gpu), Request(model=model, concurrency=concurrency))
        assert p.fits
        m = p.memory_per_gpu_bytes
        assert m["total"] <= m["reserved"] <= m["capacity"] == resolve_gpu(gpu).memory_bytes
        assert p.max_concurrency >= max(concurrency)


def test_layout_rules() -> None:
    arch, gpu, vllm = resolve_model("qwen2.5-72b").arch, resolve_gpu("a100-80g"), load_engines()["vllm"]
    awq, bf16 = resolve_quant("awq"), resolve_quant("bf16")
    assert layout_problem(arch, bf16, gpu, vllm, Layout(3, 1)) is not None        # 3 does not divide 64 heads
    assert layout_problem(arch, bf16, gpu, vllm, Layout(16, 1)) is not None       # TP stays inside a node
    assert layout_problem(arch, bf16, gpu, vllm, Layout(8, 2)) is None            # PP spans nodes
    # group quantization: the original 29568 / 8 = 3696 is not a multiple of 128 ...
    assert "128" in layout_problem(arch, awq, gpu, vllm, Layout(8, 1))
    # ... which is why Qwen's AWQ/GPTQ checkpoints pad intermediate_size to 29696 (29696 / 8 = 3712 = 29 x 128)
    padded = resolve_model("qwen2.5-72b").arch_for("awq")
    assert padded.intermediate_size == 29696 and layout_problem(padded, awq, gpu, vllm, Layout(8, 1)) is None
    assert layout_problem(arch, bf16, gpu, load_engines()["llama.cpp"], Layout(2, 1)) is not None


def test_memory_breakdown_reports_a_missing_fit_with_a_reason() -> None:
    geo = geometry("qwen2.5-72b", "bf16", Layout(1, 1))
    m = memory_per_gpu(geo, load_engines()["vllm"], resolve_gpu("a100-80g"), tp=1, vocab_size=152064,
                       prompt_tokens=1024, target_tokens=8192, context_tokens=8192)
    assert not m.fits and "weights" in m.reason and m.kv_capacity_tokens == 0

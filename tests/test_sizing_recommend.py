"""Recommendations through the library: the field numbers the issue names, alternatives, suggestions, the API."""

from __future__ import annotations

import pytest

from sizing.api import SizingError, plan
from sizing.gpus import resolve_gpu
from sizing.models import resolve_model
from sizing.recommend import Request, build_plan, recommend


def one(model: str, gpu: str, **kw) -> object:
    return build_plan(resolve_model(model), resolve_gpu(gpu), Request(model=model, gpu=gpu, **kw))


def test_r1_on_a100_uses_fp8_weights_without_fp8_compute() -> None:
    p = one("r1-671b", "a100-40g")
    assert p.fits and p.evaluation.setup.quant.key == "fp8"
    assert p.evaluation.support.mode == "weight_only"
    why = " ".join(p.reasoning)
    assert "671.0B parameters" in why and "1 byte (fp8" in why and "no fp8 compute" in why
    assert p.launch_command.startswith("vllm serve deepseek-ai/DeepSeek-R1 ")


def test_distill_qwen_32b_on_4_v100_field_numbers() -> None:
    # Qiniu FAQ: 13.85 / 14.12 / 13.41 tokens/s per request at concurrency 1 / 10 / 100, 95.9 GB in use
    p = one("distill-qwen-32b", "v100-32g", gpus=4, input_len=128, output_len=1024, concurrency=(1, 10, 100))
    assert p.fits and (p.tp, p.pp) == (4, 1) and p.evaluation.setup.quant.key == "fp16"   # V100: no bf16
    speeds = [e.per_request_output_tokens_per_s for e in p.evaluation.estimates]
    for predicted, measured in zip(speeds, (13.85, 14.12, 13.41)):
        assert abs(predicted / measured - 1) < 0.25
    in_use = p.memory_per_gpu_bytes["total"] * 4
    assert abs(in_use / 95.9e9 - 1) < 0.10
    assert "--tensor-parallel-size 4" in p.launch_command and "--dtype half" in p.launch_command


def test_quantized_671b_on_6_a100_40g_and_8_v100_32g() -> None:
    # the released fp8 needs ~673 GB: no fit on 6 x 42.9 GB; the GGUF quants up to 2.51 bits (212 GB) do,
    # Q2_K (3.35 bits, 281 GB) and AWQ (~350 GB) do not
    a100 = one("r1", "a100-40g", gpus=6, input_len=128, output_len=1024, concurrency=(1,))
    assert not a100.fits
    fitting = {alt["quant"] for alt in a100.alternatives}
    assert fitting == {"ud-iq1_s", "ud-iq1_m", "ud-iq2_xxs", "ud-q2_k_xl"}
    speed = {alt["quant"]: alt["per_request_output_tokens_per_s"] for alt in a100.alternatives}
    assert abs(speed["ud-q2_k_xl"] / 10.0 - 1) < 0.35          # field report: about 10 tokens/s
    # V100: fp8 cannot run at all (compute capability 7.0), so the plan says why and lists what runs
    v100 = one("r1", "v100-32g", gpus=8, input_len=128, output_len=1024, concurrency=(1,))
    assert not v100.fits and "compute capability" in v100.reason
    speed = {alt["quant"]: alt["per_request_output_tokens_per_s"] for alt in v100.alternatives}
    assert "ud-q2_k_xl" in speed and "awq" not in speed
    assert abs(speed["ud-q2_k_xl"] / 5.0 - 1) < 0.25            # field report: about 5 tokens/s
    assert any("another quantization" in s for s in v100.suggestions)


def test_an_explicit_impossible_quant_is_an_error_not_a_silent_change() -> None:
    with pytest.raises(SizingError) as err:
        one("r1", "v100", quant="fp8")
    assert err.value.flag == "--quant" and "compute capability 7.0" in err.value.message
    with pytest.raises(SizingError, match="limit of 32,768"):
        one("qwen2.5-7b", "h100", context_tokens=100_000)


def test_default_precision_is_the_released_one() -> None:
    assert one("qwen2.5-7b", "h100").evaluation.setup.quant.key == "bf16"
    assert one("qwen2.5-7b", "v100").evaluation.setup.quant.key == "fp16"
    assert one("r1", "h200").evaluation.setup.quant.key == "fp8"


def test_not_fitting_says_what_would() -> None:
    p = one("qwen2.5-72b", "a100-80g", gpus=1, concurrency=(1,))
    assert not p.fits and "weights" in p.reason
    text = " ".join(p.suggestions)
    # 145.4 GB of bf16 weights need two 85.9 GB cards; AWQ (about 41 GB) fits one
    assert "more GPUs: 2" in text and "another quantization" in text
    assert "awq" in {alt["quant"] for alt in p.alternatives} and "weights alone do not fit" in text


def test_kv_capacity_limits_concurrency_and_says_so() -> None:
    # about 5.3 GB of KV space / 262,144 bytes per token = about 20k tokens: one 16,000-token request at a time
    p = one("qwen2.5-32b", "h100", gpus=1, context_tokens=16384, input_len=8000, output_len=8000, concurrency=(1,))
    assert p.fits and p.max_concurrency == 1
    assert "1 request of 16,000 tokens" in " ".join(p.reasoning)
    crowded = one("qwen2.5-32b", "h100", gpus=1, context_tokens=16384, input_len=8000, output_len=8000,
                  concurrency=(4,))
    assert not crowded.fits and "KV cache holds" in crowded.reason


def test_every_card_compared_cheapest_first() -> None:
    rec = recommend(Request(model="qwen2.5-7b", concurrency=(1, 32)))
    fitting = [p for p in rec.plans if p.fits]
    priced = [p.evaluation.price_per_hour_usd for p in fitting if p.evaluation.price_per_hour_usd is not None]
    assert len(fitting) > 20 and priced == sorted(priced)
    assert rec.to_dict()["plans"][0]["price_per_hour_usd"] == priced[0]


def test_break_even_against_an_api_price() -> None:
    p = one("llama-3.1-8b", "h100", concurrency=(1, 64), api_price_per_million_usd=0.2)
    be = p.break_even
    assert be is not None
    # 1 x $2.99/h against $0.20 per 1M tokens: 2.99 / 3600 / 0.2e-6 = 4,152.8 tokens/s
    assert be.tokens_per_s_needed == pytest.approx(2.99 / 3600 / 0.2e-6)


def test_slo_gives_the_largest_concurrency_meeting_it() -> None:
    p = one("llama-3.1-8b", "h100", concurrency=(1, 64), slo_tpot_s=0.02, slo_ttft_s=2.0)
    assert p.evaluation.slo_max_concurrency is not None and p.evaluation.slo_max_concurrency >= 64
    assert p.to_dict()["slo"]["max_concurrency"] == p.evaluation.slo_max_concurrency


def test_api_plan_is_the_stable_surface_bench_uses() -> None:
    p = plan("distill-qwen-32b", "v100-32g", gpus=4)
    assert (p.fits, p.reason, p.gpus, p.tp, p.pp, p.ep) == (True, None, 4, 4, 1, 1)
    assert set(p.memory_per_gpu_bytes) >= {"weights", "kv_cache", "activations", "overhead", "total"}
    assert p.kv_capacity_tokens > 100_000
    step1, step32 = p.decode_step_s(1, 1000.0), p.decode_step_s(32, 1000.0)
    assert 0 < step1 < step32 and p.prefill_s(1024) > p.prefill_s(16) > 0
    d = p.to_dict()
    for key in ("model", "gpu", "quant", "gpus", "layout", "fits", "reason", "memory_per_gpu_bytes",
                "max_concurrency", "estimates"):
        assert key in d
    assert set(d["layout"]) >= {"tp", "pp", "ep"}
    assert set(d["estimates"][0]) >= {"concurrency", "per_request_output_tokens_per_s", "output_tokens_per_s",
                                      "tpot_s", "ttft_s"}
    with pytest.raises(SizingError) as err:
        plan("no-such-model", "h100")
    assert err.value.flag == "model"
    with pytest.raises(SizingError):
        plan("qwen2.5-7b", "h100", gpus=0)


def test_larger_counts_are_the_next_power_of_two_whole_node_and_one_node_more() -> None:
    from sizing.recommend import larger_counts
    # inside a node of 8: 1 -> 2 (next power of two) and 8 (the node); 3 -> 4 and 8; 2 -> 4 and 8
    assert larger_counts(1, 8) == [2, 8] and larger_counts(3, 8) == [4, 8] and larger_counts(2, 8) == [4, 8]
    # 21 (R1 fp8 on A100-40G: TP1 x PP21) -> 24 (three whole nodes) and 32 (one more); 8 -> 16
    assert larger_counts(21, 8) == [24, 32] and larger_counts(8, 8) == [16]


def test_a_minimum_that_nobody_deploys_is_shown_beside_whole_nodes() -> None:
    p = build_plan(resolve_model("r1-671b"), resolve_gpu("a100-40g"), Request(model="r1-671b"))
    assert p.searched and p.gpus == 21 and p.tp == 1  # 21 = 3 x 7: no TP that divides 128 heads
    rows = {row["gpus"]: row for row in p.more_gpus}
    assert set(rows) == {24, 32}
    for n, row in rows.items():
        lay = row["layout"]
        assert lay["tp"] * lay["pp"] * lay["dp"] == n
    # at 24 the tensor-parallel layout reads each token's weights from 8 GPUs at once: faster per request than the
    # minimum's pipeline of 21 single GPUs
    minimum = p.evaluation.estimates[0].per_request_output_tokens_per_s
    assert rows[24]["layout"]["tp"] == 8 and rows[24]["per_request_output_tokens_per_s"] > 1.5 * minimum
    assert p.to_dict()["more_gpus"] == list(p.more_gpus)
    given = build_plan(resolve_model("r1-671b"), resolve_gpu("a100-40g"), Request(model="r1-671b", gpus=24))
    assert given.more_gpus == ()  # a count the user chose is not second-guessed

"""Catalogs: every entry the issue asks for exists, loads, carries its source, and its numbers hold up."""

from __future__ import annotations

import json
import pathlib

import pytest

from sizing.arch import arch_from_config
from sizing.datafiles import read_csv, read_json
from sizing.errors import SizingError
from sizing.gpus import load_gpus, resolve_gpu
from sizing.models import load_models, resolve_model
from sizing.params import count_params
from sizing.quants import load_kv_dtypes, load_quants, quant_support, resolve_quant
from sizing.units import MiB

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Issue 4's card list -> catalog keys.
ISSUE_GPUS = {
    "V100-16G SXM2": "v100-16g-sxm2", "V100-32G SXM2": "v100-32g-sxm2", "V100-16G PCIe": "v100-16g-pcie",
    "V100-32G PCIe": "v100-32g-pcie", "T4": "t4", "A10": "a10", "A10G": "a10g", "L4": "l4", "L20": "l20",
    "L40S": "l40s", "A100-40G SXM": "a100-40g-sxm", "A100-40G PCIe": "a100-40g-pcie", "A100-80G SXM": "a100-80g-sxm",
    "A100-80G PCIe": "a100-80g-pcie", "A800": "a800-80g-sxm", "H20": "h20", "H800": "h800", "H100 SXM": "h100-sxm",
    "H100 PCIe": "h100-pcie", "H100 NVL": "h100-nvl", "H200": "h200", "B200": "b200", "RTX 3090": "rtx3090",
    "RTX 4090": "rtx4090", "RTX 5090": "rtx5090", "MI300X": "mi300x", "Ascend 910B": "ascend-910b",
}


@pytest.mark.parametrize("name,key", sorted(ISSUE_GPUS.items()))
def test_every_card_in_the_issue_is_in_the_catalog(name: str, key: str) -> None:
    assert resolve_gpu(name).key == key


def test_every_gpu_has_a_source_confidence_and_sane_numbers() -> None:
    for gpu in load_gpus():
        assert gpu.source.strip(), gpu.key
        assert gpu.memory_source.strip(), gpu.key
        assert gpu.confidence in {"high", "medium", "low"}, gpu.key
        # the driver's capacity is within 15% of the marketing size (GiB vs GB, ECC and reserved memory)
        assert 0.85 < gpu.memory_bytes / (gpu.memory_marketing_gb * 1e9) < 1.2, gpu.key
        assert gpu.mem_bandwidth_bytes_per_s > 1e11 and gpu.fp16_flops_per_s > 1e13, gpu.key
        if gpu.price_per_hour_usd is not None:
            assert gpu.price_source.strip(), gpu.key


def test_real_capacity_is_what_the_driver_reports_not_the_marketing_number() -> None:
    # SIZING_NOTES: an "80 GB" H100 reports 81,559 MiB = 85.52e9 bytes; a "141 GB" H200 reports 143,771 MiB.
    assert resolve_gpu("h100").memory_bytes == 81559 * MiB == 85_520_809_984
    assert resolve_gpu("h200").memory_bytes == 143771 * MiB
    assert resolve_gpu("h100").memory_marketing_gb == 80


@pytest.mark.parametrize("alias,key", [("a100-40g", "a100-40g-sxm"), ("a100", "a100-80g-sxm"), ("h20", "h20"),
                                       ("4090", "rtx4090"), ("NVIDIA H100", "h100-sxm"), ("v100", "v100-32g-sxm2")])
def test_card_aliases_people_type(alias: str, key: str) -> None:
    assert resolve_gpu(alias).key == key


def test_unknown_card_names_the_closest_ones() -> None:
    with pytest.raises(SizingError) as err:
        resolve_gpu("a100-40gb-x")
    assert err.value.flag == "--gpu"
    assert "a100-40g-sxm" in err.value.message and "sizing gpus" in err.value.message


def test_which_cards_run_which_dtypes() -> None:
    bf16, fp16, fp8, awq, gptq = (resolve_quant(k) for k in ("bf16", "fp16", "fp8", "awq", "gptq-int4"))
    v100, t4, a100, h100, l40s = (resolve_gpu(k) for k in ("v100", "t4", "a100", "h100", "l40s"))
    assert not quant_support(bf16, v100).ok and not quant_support(bf16, t4).ok   # no bf16 before Ampere
    assert quant_support(fp16, v100).ok
    assert not quant_support(fp8, v100).ok                                       # fp8: nothing on cc 7.0
    assert quant_support(fp8, a100).mode == "weight_only"                         # Marlin W8A16 on Ampere
    assert quant_support(fp8, h100).mode == "native" and quant_support(fp8, l40s).mode == "native"
    assert not quant_support(awq, v100).ok and quant_support(gptq, v100).ok      # vLLM AWQ needs cc 7.5
    assert not quant_support(resolve_quant("int8"), v100).ok                      # no int8 tensor cores


ISSUE_MODEL_ALIASES = {
    "r1-671b": "deepseek-r1", "r1": "deepseek-r1", "deepseek-r1": "deepseek-r1", "v3": "deepseek-v3",
    "distill-qwen-32b": "deepseek-r1-distill-qwen-32b", "qwen2.5-72b": "qwen2.5-72b-instruct",
    "qwen3-235b-a22b": "qwen3-235b-a22b", "llama-3.1-8b": "llama-3.1-8b-instruct",
    "llama-3.3-70b": "llama-3.3-70b-instruct", "deepseek-ai/DeepSeek-R1": "deepseek-r1",
}


@pytest.mark.parametrize("alias,key", sorted(ISSUE_MODEL_ALIASES.items()))
def test_model_aliases_people_type(alias: str, key: str) -> None:
    assert resolve_model(alias).key == key


def test_every_model_family_in_the_issue_is_there() -> None:
    keys = {m.key for m in load_models()}
    wanted = {"deepseek-r1", "deepseek-v3", "qwq-32b", "qwen3-30b-a3b", "qwen3-235b-a22b", "llama-3.1-8b-instruct",
              "llama-3.1-70b-instruct", "llama-3.3-70b-instruct", "llama-3.1-405b-instruct"}
    wanted |= {f"deepseek-r1-distill-qwen-{s}" for s in ("1.5b", "7b", "14b", "32b")}
    wanted |= {f"deepseek-r1-distill-llama-{s}" for s in ("8b", "70b")}
    wanted |= {f"qwen2.5-{s}-instruct" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")}
    wanted |= {f"qwen3-{s}" for s in ("0.6b", "1.7b", "4b", "8b", "14b", "32b")}
    assert wanted <= keys, wanted - keys


@pytest.mark.parametrize("model", load_models(), ids=lambda m: m.key)
def test_parameter_count_from_architecture_matches_published_total_within_2pct(model) -> None:
    params = count_params(model.arch)
    assert model.source.strip() and model.published_params_source.strip()
    assert abs(params.total / model.published_params_total - 1) < 0.02
    if model.published_params_active:
        assert abs(params.active / model.published_params_active - 1) < 0.02


def test_llama_70b_count_is_exact() -> None:
    # per layer: q 8192*8192 + k,v 2*8192*1024 + o 8192*8192 = 150,994,944; MLP 3*8192*28672 = 704,643,072;
    # norms 2*8192 -> 855,654,400 x 80 layers = 68,452,352,000; + embedding and lm_head 2*128256*8192 =
    # 2,101,346,304; + final norm 8192 -> 70,553,706,496 (the Hugging Face safetensors count)
    assert count_params(resolve_model("llama-3.1-70b").arch).total == 70_553_706_496


def test_deepseek_v3_counts_every_expert_and_the_dense_first_layers() -> None:
    arch = resolve_model("r1").arch
    params = count_params(arch)
    assert arch.num_moe_layers == 58 and len(arch.moe.dense_layer_indices) == 3
    # 58 MoE layers x 256 experts x 3 x 7168 x 2048 = 653.8B routed-expert weights
    assert params.routed_expert_params == 58 * 256 * 3 * 7168 * 2048
    assert arch.mtp_layers == 1          # in the checkpoint (685B), not in the served count (671B)


@pytest.mark.parametrize("key", ["bf16", "fp16", "fp8", "int8", "int8-w8a16", "awq", "gptq-int4", "q8_0", "q6_k",
                                 "q5_k_m", "q4_k_m", "q3_k_m", "q2_k", "ud-iq1_s", "ud-q2_k_xl"])
def test_every_quantization_in_the_issue_exists_with_a_source(key: str) -> None:
    quant = resolve_quant(key)
    assert quant.source.strip() and 1.0 < quant.bits_per_weight <= 16
    assert quant.confidence in {"high", "medium", "low"}


def test_quant_aliases_and_group_scale_overhead() -> None:
    assert resolve_quant("1.58bit").key == "ud-iq1_s" and resolve_quant("2.51-bit").key == "ud-q2_k_xl"
    # AWQ int4, group 128: 4 bits + a 16-bit scale and a 4-bit zero per 128 weights = 4 + 0.125 + 0.03125
    assert resolve_quant("awq").bits_per_weight == pytest.approx(4 + 16 / 128 + 4 / 128)
    assert resolve_quant("awq").applies_to == "linear"     # embeddings and lm_head stay 16 bit
    assert {q.key for q in load_quants()} >= {"fp8", "int8", "awq"}


def test_kv_cache_dtypes() -> None:
    keys = {kv.key: kv for kv in load_kv_dtypes()}
    assert {"fp16", "bf16", "fp8"} <= set(keys)
    assert keys["fp8"].value_bytes() == 1 and keys["fp16"].value_bytes() == 2 and keys["auto"].value_bytes() == 2


def test_data_files_carry_sources() -> None:
    efficiency = read_json("efficiency.json")
    assert efficiency["defaults"]["source"]
    assert all(group["source"] and group["fitted_on"] for group in efficiency["groups"])
    engines = read_json("engines.json")
    assert all(any(k.endswith("_source") for k in spec) or "inherits" in spec for spec in engines["engines"].values())
    for row in read_csv("calibration_measurements.csv") + read_csv("extra_measurements.csv"):
        assert row["source_url"] and row["source_title"], row["id"]


def test_calibration_copy_matches_the_shared_reference() -> None:
    shared = ROOT.parent / "shared" / "data" / "calibration_measurements.csv"
    if not shared.exists():
        pytest.skip("../shared is not beside this checkout")
    assert (ROOT / "sizing" / "data" / "calibration_measurements.csv").read_bytes() == shared.read_bytes()


def test_the_product_never_reads_the_shared_folder_at_run_time() -> None:
    for path in (ROOT / "sizing").glob("*.py"):
        text = path.read_text()
        assert "../shared" not in text and "shared/data" not in text, path.name


def _qwen7b_config() -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
            "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False,
            "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}


def test_a_hugging_face_config_json_given_by_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "my-model" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_qwen7b_config()))
    by_file, by_dir = resolve_model(str(path)), resolve_model(str(path.parent))
    assert by_file.arch == by_dir.arch == resolve_model("qwen2.5-7b").arch
    # 28 layers x (attention 3584*3584*2 + 2*3584*512 + biases 3584 + 2*512 = 29,364,224;
    # MLP 3*3584*18944 = 203,685,888; norms 7168) + 2 x 152064*3584 + 3584 = 7,615,616,512
    assert count_params(by_file.arch).total == 7_615_616_512


def test_yarn_rope_scaling_in_a_config_extends_the_context(tmp_path: pathlib.Path) -> None:
    config = dict(_qwen7b_config(), rope_scaling={"type": "yarn", "factor": 4.0,
                                                  "original_max_position_embeddings": 32768})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert resolve_model(str(path)).arch.max_context_tokens == 131072


def test_bad_config_files_are_clear_errors(tmp_path: pathlib.Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SizingError, match="not a readable JSON"):
        resolve_model(str(broken))
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({k: v for k, v in _qwen7b_config().items() if k != "hidden_size"}))
    with pytest.raises(SizingError, match="hidden_size"):
        resolve_model(str(missing))
    with pytest.raises(SizingError, match="no config.json"):
        resolve_model(str(tmp_path / "nope" / "config.json"))


def test_multimodal_config_with_text_config_is_read() -> None:
    arch = arch_from_config({"model_type": "llava", "text_config": _qwen7b_config()})
    assert arch.hidden_size == 3584 and arch.num_layers == 28

"""The sizing explorer's tables and charts plot what `sizing.api.plan` says, and draw readable PNGs."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib import image as mpimg

from bench.report import sizing_charts as sc
from bench.report.style import save

MODELS = ["qwen2.5-7b-instruct", "llama-3.1-70b-instruct"]
GPUS = ["l40s", "h100-sxm", "v100-32g"]


@pytest.fixture(scope="module")
def plans():
    return sc.plans_table(MODELS, GPUS, [None, "awq"], input_len=512, output_len=256)


@pytest.fixture(scope="module")
def estimates(plans):
    return sc.estimates_table(plans, (1, 8, 64))


def test_plans_are_sizing_plans_and_refusals_keep_their_reason(plans):
    from sizing.api import plan
    assert len(plans) == len(MODELS) * len(GPUS) * 2
    row = plans[(plans["model"] == "llama-3.1-70b-instruct") & (plans["gpu"] == "l40s")
                & (plans["quant_asked"] == "released")].iloc[0]
    p = plan("llama-3.1-70b-instruct", "l40s", input_len=512, output_len=256)
    assert (row["gpus"], row["tp"], row["fits"]) == (p.gpus, p.tp, p.fits)
    assert row["weights_gb"] == p.memory_per_gpu_bytes["weights"] / 1e9
    # AWQ kernels need compute capability 7.5; a V100 is 7.0: a row that says why, not an exception
    refused = plans[(plans["gpu"] == "v100-32g-sxm2") & (plans["quant_asked"] == "awq")]
    assert len(refused) == 2 and not refused["fits"].any()
    assert refused["reason"].str.contains("compute capability").all()


def test_estimates_and_cost_arithmetic(plans, estimates):
    from sizing.api import plan
    p = plan("qwen2.5-7b-instruct", "h100-sxm", input_len=512, output_len=256)
    row = estimates[(estimates["deployment"] == "qwen2.5-7b-instruct bf16 on 1x h100-sxm")
                    & (estimates["concurrency"] == 1)].iloc[0]
    assert row["per_request_output_tokens_per_s"] == pytest.approx(p.to_dict()["estimates"][0]
                                                                    ["per_request_output_tokens_per_s"], abs=1e-3)
    # cost per million = price per hour / (aggregate tokens/s x 3600) x 1e6
    price = p.evaluation.price_per_hour_usd
    assert row["cost_per_million_output_tokens_usd"] == pytest.approx(price / (row["output_tokens_per_s"] * 3600) * 1e6)
    # a card without a catalog price (V100 32G) has no cost, not a cost of 0
    assert estimates[estimates["gpu"] == "v100-32g-sxm2"]["cost_per_million_output_tokens_usd"].isna().all()


def test_charts_plot_the_tables_and_are_readable_pngs(plans, estimates, tmp_path):
    charts = [sc.gpus_needed_chart(plans), sc.memory_chart(plans, "llama-3.1-70b-instruct"),
              sc.sizing_throughput_chart(estimates, "llama-3.1-70b-instruct"), sc.cost_chart(estimates)]
    needed = charts[0].data
    cell = needed[(needed["model_quant"] == "llama-3.1-70b-instruct (released)") & (needed["gpu"] == "l40s")]
    expected = plans[(plans["model"] == "llama-3.1-70b-instruct") & (plans["gpu"] == "l40s")
                     & (plans["quant_asked"] == "released")]["gpus"].item()
    assert cell["gpus"].item() == expected
    assert np.isnan(needed[(needed["model_quant"] == "qwen2.5-7b-instruct awq")
                           & (needed["gpu"] == "v100-32g-sxm2")]["gpus"].item())
    memory = charts[1].data
    assert set(memory["deployment"]) == set(estimates[estimates["model"] == "llama-3.1-70b-instruct"]["deployment"])
    throughput = charts[2].data
    assert set(throughput["deployment"]) <= set(memory["deployment"])
    merged = throughput.merge(estimates, on=["deployment", "concurrency"], suffixes=("", "_table"))
    np.testing.assert_array_equal(merged["output_tokens_per_s"], merged["output_tokens_per_s_table"])
    for chart in charts:
        path = save(chart, tmp_path, ("png",))["png"]
        pixels = mpimg.imread(path)
        assert 350 <= pixels.shape[0] <= 2500 and 600 <= pixels.shape[1] <= 2500, (chart.name, pixels.shape)

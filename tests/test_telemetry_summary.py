"""summarize_samples: a pure function of a samples table and phases, checked with worked numbers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.telemetry import summarize_samples

S = 1_000_000_000
GIB = 2**30
NAN = math.nan


def table(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"t_ns": [i * S for i in range(n)], **columns})


def test_counter_increase_interpolates_and_survives_a_reset():
    # t:      0    1    2   3    4  (s)
    # value:  100  200  50  150  250   (the drop at 2 s is a server restart: 50 tokens since)
    # steps:       100  50  100  100   -> continuous: 0, 100, 150, 250, 350
    df = table(prompt_tokens_total=[100, 200, 50, 150, 250])
    s = summarize_samples(df, [("mid", S // 2, 3 * S + S // 2), ("one", 1 * S, 2 * S), ("tail", 3 * S, 10 * S),
                               ("after", 5 * S, 6 * S)])
    assert s["mid"]["prompt_tokens_delta"] == 250.0  # at 0.5 s: 50; at 3.5 s: 300
    assert s["one"]["prompt_tokens_delta"] == 50.0  # the reset step counts the new value, not -150
    assert s["tail"]["prompt_tokens_delta"] == 100.0  # clamped at the last sample: 350 - 250
    assert s["after"]["prompt_tokens_delta"] is None  # no samples around it: not measured, not 0


def test_missing_is_none_and_measured_zero_is_zero():
    df = table(preemptions_total=[0, 0, 0], kv_cache_usage_pct=[NAN, NAN, NAN], requests_waiting=[0, 0, 0])
    s = summarize_samples(df, [("all", 0, 2 * S)])["all"]
    assert s["preemptions_delta"] == 0.0
    assert s["requests_waiting_peak"] == 0.0 and s["requests_waiting_mean"] == 0.0
    assert s["kv_cache_usage_pct_peak"] is None and s["kv_cache_usage_pct_mean"] is None  # all empty cells
    assert s["server_res_bytes_peak"] is None and s["prompt_tokens_delta"] is None  # no column at all
    assert s["server_ttft_mean_s"] is None


def test_histogram_mean_over_a_phase_is_delta_sum_over_delta_count():
    # t:       0    1    2    3
    # count:   10   10   30   30
    # sum (s): 1.0  1.0  5.0  5.0   -> phase [0, 3]: (5.0 - 1.0) / (30 - 10) = 0.2 s; phase [2, 3]: no request ended
    df = table(server_ttft_count=[10, 10, 30, 30], server_ttft_sum_s=[1.0, 1.0, 5.0, 5.0])
    s = summarize_samples(df, [("all", 0, 3 * S), ("quiet", 2 * S, 3 * S)])
    assert s["all"]["server_ttft_mean_s"] == pytest.approx(0.2)
    assert s["quiet"]["server_ttft_mean_s"] is None


def test_gauges_per_gpu_and_across_gpus():
    df = table(
        gpu0_mem_used_bytes=[10 * GIB, 30 * GIB], gpu0_mem_total_bytes=[80 * GIB] * 2,
        gpu0_util_pct=[40.0, 100.0], gpu0_power_w=[200.0, 400.0],
        gpu1_mem_used_bytes=[20 * GIB, 20 * GIB], gpu1_mem_total_bytes=[80 * GIB] * 2,
        gpu1_util_pct=[60.0, NAN], gpu1_power_w=[100.0, 300.0],
        gpu_mem_used_bytes_total=[30 * GIB, 50 * GIB],
        server_res_bytes=[5 * GIB, 7 * GIB],
    )
    s = summarize_samples(df, [("all", 0, S)])["all"]
    assert s["gpus"] == [0, 1] and s["n_samples"] == 2
    assert s["gpu_mem_used_bytes_total_peak"] == 50 * GIB and isinstance(s["gpu_mem_used_bytes_total_peak"], int)
    assert s["gpu_mem_used_bytes_total_mean"] == 40 * GIB  # (30 + 50) / 2
    assert s["gpu0_mem_used_bytes_peak"] == 30 * GIB and s["gpu1_mem_used_bytes_mean"] == 20 * GIB
    assert s["gpu0_mem_total_bytes"] == 80 * GIB
    # power across GPUs per row: 200 + 100 = 300 W, 400 + 300 = 700 W
    assert (s["gpu_power_w_total_peak"], s["gpu_power_w_total_mean"]) == (700.0, 500.0)
    # utilisation across GPUs per row: (40 + 60) / 2 = 50 %; second row has no GPU 1 reading, so none
    assert (s["gpu_util_pct_peak"], s["gpu_util_pct_mean"]) == (50.0, 50.0)
    assert s["gpu1_util_pct_peak"] == 60.0
    assert (s["server_res_bytes_peak"], s["server_res_bytes_mean"]) == (7 * GIB, 6 * GIB)


def test_rows_outside_a_phase_do_not_count_and_every_phase_has_the_same_keys(tmp_path):
    df = table(host_ram_used_bytes=[1 * GIB, 9 * GIB, 2 * GIB, 3 * GIB], phase=["a", "a", "b", "b"])
    df.to_csv(tmp_path / "samples.csv", index=False)
    s = summarize_samples(tmp_path / "samples.csv", [("a", 0, 1 * S), ("b", 2 * S, 3 * S), ("none", 7 * S, 8 * S)])
    assert s["a"]["host_ram_used_bytes_peak"] == 9 * GIB
    assert s["b"]["host_ram_used_bytes_peak"] == 3 * GIB and s["b"]["host_ram_used_bytes_mean"] == 2.5 * GIB
    assert s["none"]["n_samples"] == 0 and s["none"]["host_ram_used_bytes_peak"] is None
    assert s["a"].keys() == s["b"].keys() == s["none"].keys()
    assert s == summarize_samples(df, [("a", 0, 1 * S), ("b", 2 * S, 3 * S), ("none", 7 * S, 8 * S)])


def test_an_empty_table_summarises_to_nothing_measured():
    s = summarize_samples(pd.DataFrame(), [("x", 0, S)])["x"]
    assert s["n_samples"] == 0
    assert all(v is None for k, v in s.items() if k not in ("n_samples", "duration_s", "gpus"))

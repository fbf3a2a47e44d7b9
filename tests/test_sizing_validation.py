"""Validation against published measurements, and the fit that produced the factors in efficiency.json."""

from __future__ import annotations

import numpy as np
import pytest

from sizing.cases import load_cases
from sizing.factors import load_factor_table
from sizing.fit import fit, nelder_mead
from sizing.validation import summarize, validate


@pytest.fixture(scope="module")
def rows():
    return {(r.id, r.check): r for r in validate(load_factor_table())}


def test_every_case_points_at_a_measurement_with_a_source() -> None:
    for case in load_cases():
        assert case.measurement.source_url and case.measurement.value > 0
        assert case.scored or case.interpretation, f"{case.id}: an unscored row must say why"


def test_summary_meets_the_targets(rows) -> None:
    summary = summarize(list(rows.values()))
    assert summary.speed_rows >= 30
    assert summary.median_abs_error_pct < 25
    assert summary.fit_correct == summary.fit_checks == 6
    assert summary.memory_ok == summary.memory_checks == 4


def test_field_numbers_from_the_issue(rows) -> None:
    # R1-Distill-Qwen-32B on 4 x V100-32G: about 13.8 / 14 / 13.4 tokens/s per request at concurrency 1 / 10 / 100
    for case_id in ("Q01", "Q02", "Q03"):
        assert abs(rows[(case_id, "speed")].error_pct) < 25
    assert rows[("Q03", "memory")].ok                          # about 96 GB in use
    # quantized 671B: about 10 tokens/s on 6 x A100-40G, about 5 on 8 x V100-32G
    assert abs(rows[("D26", "speed")].error_pct) < 35
    assert abs(rows[("D27", "speed")].error_pct) < 25


def test_memory_rows_match_reported_usage(rows) -> None:
    # HF transformers, Qwen2.5-72B bf16 on 2 x A100-80G: 72,706,203,648 params x 2 bytes = 145.4e9 bytes of weights
    # + KV for 2,049 tokens (2,049 x 327,680 bytes) = 146.1e9 bytes = 136.05 GiB; reported 136.20 GB (GiB)
    assert rows[("Q18", "memory")].predicted == pytest.approx(136.05, abs=0.05)
    for case_id in ("Q18", "Q19", "Q20"):
        assert abs(rows[(case_id, "memory")].error_pct) < 3


def test_documented_deployments_fit_at_their_minimum(rows) -> None:
    # e.g. DeepSeek-V3 in BF16 (1.34 TB) with SGLang, TP only: TP16 of A100-80G holds 84 GB of weights per GPU,
    # more than 0.88 x 85.9 GB; TP32 is the smallest count that fits and divides the 128 heads
    for case_id in ("D18", "D19", "D20", "D21", "D22", "L24"):
        assert rows[(case_id, "fit")].ok, rows[(case_id, "fit")].detail


def test_stored_factors_are_what_the_fit_produces() -> None:
    stored, refit = load_factor_table(), fit()
    for a, b in zip(stored.groups, refit.groups):
        assert a.fitted_on == b.fitted_on
        for name, value in a.values.items():
            assert b.values[name] == pytest.approx(value, rel=1e-3), (a.engine, a.family, name)


def test_the_fit_matters(rows) -> None:
    # halving every fitted bandwidth efficiency must make the speed rows clearly worse (the check can fail)
    table = load_factor_table()
    for group in table.groups:
        if "bw_efficiency" in group.values:
            table = table.with_group_values(group.engine, group.family,
                                            {"bw_efficiency": group.values["bw_efficiency"] / 2})
    worse = summarize(validate(table))
    assert worse.median_abs_error_pct > 2 * summarize(list(rows.values())).median_abs_error_pct


def test_nelder_mead_finds_a_minimum() -> None:
    best = nelder_mead(lambda x: float((x[0] - 1.5) ** 2 + 3 * (x[1] + 0.5) ** 2), np.array([0.0, 0.0]))
    assert best == pytest.approx([1.5, -0.5], abs=1e-3)

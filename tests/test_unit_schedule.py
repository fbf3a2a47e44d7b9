"""Arrival schedules: gamma/Poisson inter-arrival gaps as absolute send offsets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.schedule import arrival_offsets_s


def gaps(offsets):
    return np.diff(offsets)


def test_poisson_mean_gap_is_one_over_the_rate():
    off = arrival_offsets_s(np.random.default_rng(1), 20_001, 5.0)
    # 20,000 gaps with mean 1 / 5 = 0.2 s; standard error 0.2 / sqrt(20000) = 0.0014 s
    assert np.mean(gaps(off)) == pytest.approx(0.2, rel=0.03)
    assert off[-1] == pytest.approx(20_000 / 5.0, rel=0.03)  # the last send at about n / rate
    # exponential gaps: coefficient of variation 1
    assert np.std(gaps(off)) / np.mean(gaps(off)) == pytest.approx(1.0, abs=0.05)


def test_burstiness_keeps_the_mean_and_changes_the_spread():
    def cv_and_mean(burstiness):
        g = gaps(arrival_offsets_s(np.random.default_rng(2), 20_001, 10.0, burstiness))
        return np.std(g) / np.mean(g), np.mean(g)

    cv_bursty, mean_bursty = cv_and_mean(0.25)
    cv_poisson, _ = cv_and_mean(1.0)
    cv_regular, mean_regular = cv_and_mean(4.0)
    # gamma with shape k has CV 1 / sqrt(k): 2.0, 1.0, 0.5
    assert cv_bursty > cv_poisson > cv_regular
    assert cv_bursty == pytest.approx(2.0, rel=0.1)
    assert cv_regular == pytest.approx(0.5, rel=0.1)
    assert mean_bursty == pytest.approx(0.1, rel=0.05)  # 1 / 10 per second, whatever the burstiness
    assert mean_regular == pytest.approx(0.1, rel=0.05)


def test_offsets_start_at_zero_and_never_decrease():
    off = arrival_offsets_s(np.random.default_rng(3), 1000, 50.0, 0.1)
    assert off[0] == 0.0
    assert all(b >= a for a, b in zip(off, off[1:]))
    assert len(off) == 1000
    assert all(isinstance(x, float) for x in off)


def test_infinite_rate_sends_everything_at_once():
    assert arrival_offsets_s(np.random.default_rng(), 4, math.inf) == [0.0, 0.0, 0.0, 0.0]


def test_no_requests():
    assert arrival_offsets_s(np.random.default_rng(), 0, 5.0) == []


@pytest.mark.parametrize("rate, burstiness", [(0.0, 1.0), (-1.0, 1.0), (5.0, 0.0), (5.0, -2.0)])
def test_non_positive_rate_or_burstiness(rate, burstiness):
    with pytest.raises(ValueError):
        arrival_offsets_s(np.random.default_rng(), 10, rate, burstiness)


def test_seeded_schedules_are_reproducible():
    a = arrival_offsets_s(np.random.default_rng(7), 100, 3.0, 0.5)
    assert a == arrival_offsets_s(np.random.default_rng(7), 100, 3.0, 0.5)
    assert a != arrival_offsets_s(np.random.default_rng(8), 100, 3.0, 0.5)

"""describe, the SLO parser/goodput and summarize_level/flatten on hand-built records with worked numbers."""

from __future__ import annotations

import pytest

from bench.metrics import derive
from bench.records import RequestRecord
from bench.slo import is_good, parse_duration_ms, parse_slo
from bench.stats import describe
from bench.summary import fatal_error, flatten, summarize_level

MS = 1_000_000
S = 1_000_000_000
T0 = 100 * S  # level start on the perf_counter_ns clock


def ok_rec(send_s, text_ms, *, end_ms, prompt_tokens, output_tokens, warmup=False, input_len=None):
    """A successful streaming request: one token per text event at ``text_ms`` after send."""
    return RequestRecord(
        request_id=f"ok{send_s}", phase="c2", level_index=0, prompt_index=0, warmup=warmup, api="openai-chat",
        stream=True, input_len_requested=input_len, output_len_requested=None, scheduled_ns=None,
        send_ns=T0 + round(send_s * S), end_ns=T0 + round(send_s * S) + round(end_ms * MS), status=200,
        event_offsets_ns=[round(t * MS) for t in text_ms] + [round(end_ms * MS)], event_kinds="a" * len(text_ms) + "-",
        event_chars=[3] * len(text_ms) + [0], prompt_tokens=prompt_tokens, output_tokens=output_tokens,
        output_tokens_client=len(text_ms))


def failed_rec(send_s, end_s, error_class, *, retry_after_s=None, status=None):
    return RequestRecord(
        request_id=f"bad{send_s}", phase="c2", level_index=0, prompt_index=0, warmup=False, api="openai-chat",
        stream=True, input_len_requested=100, output_len_requested=None, scheduled_ns=None,
        send_ns=T0 + round(send_s * S), end_ns=T0 + round(end_s * S), status=status, error_class=error_class,
        error="x", retry_after_s=retry_after_s)


def level_records():
    return [
        # warm-up, long before and very slow: must change nothing below
        ok_rec(-5.0, [9000, 9500], end_ms=9600, prompt_tokens=999, output_tokens=2, warmup=True),
        # r1: send 0 s; tokens at 100, 200, 300 ms; ends 310 ms -> TTFT 100, ITL 100, 100, E2E 300, TPOT 100
        ok_rec(0.0, [100, 200, 300], end_ms=310, prompt_tokens=10, output_tokens=3),
        # r3: 429 at 0.2 s .. 0.25 s
        failed_rec(0.2, 0.25, "rate_limited", retry_after_s=2.0, status=429),
        # r4: 500 at 0.3 s .. 0.4 s
        failed_rec(0.3, 0.4, "server_error", status=500),
        # r2: send 0.5 s; tokens at 200, 250, 300, 350 ms; ends 360 ms -> TTFT 200, ITL 50 x3, E2E 350, TPOT 50
        ok_rec(0.5, [200, 250, 300, 350], end_ms=360, prompt_tokens=20, output_tokens=4),
        # r5: 429 at 0.9 s .. 1.0 s: the last end, so D = 1.0 - 0.0 = 1.0 s
        failed_rec(0.9, 1.0, "rate_limited", retry_after_s=0.5, status=429),
    ]


# ---------------------------------------------------------------- describe

def test_describe_worked_numbers():
    d = describe([4.0, 1.0, 3.0, 2.0])
    # mean = 10 / 4 = 2.5; linear percentiles on sorted 1,2,3,4: p = 1 + (p/100) * 3
    assert d == pytest.approx({"mean": 2.5, "p50": 2.5, "p90": 3.7, "p95": 3.85, "p99": 3.97, "min": 1.0,
                               "max": 4.0})


def test_describe_skips_none_and_empty_is_none():
    assert describe([]) is None
    assert describe([None, None]) is None
    assert describe([None, 5.0]) == {"mean": 5.0, "p50": 5.0, "p90": 5.0, "p95": 5.0, "p99": 5.0, "min": 5.0,
                                     "max": 5.0}


def test_describe_a_measured_zero_is_zero():
    assert describe([0.0])["mean"] == 0.0


# ---------------------------------------------------------------- SLO

@pytest.mark.parametrize("text, ms", [("50ms", 50.0), ("2s", 2000.0), ("0.5s", 500.0), ("50", 50.0),
                                      ("250us", 0.25), (" 1.5 s ", 1500.0), (".5s", 500.0)])
def test_parse_duration(text, ms):
    assert parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["fast", "5min", "-5ms", "", "ms", "1e3"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration_ms(text)


def test_parse_slo():
    assert parse_slo("ttft=500ms,tpot=50ms,e2e=10s") == {"ttft_ms": 500.0, "tpot_ms": 50.0, "e2e_ms": 10000.0}
    assert parse_slo(" TTFT = 1s , itl=20 ,") == {"ttft_ms": 1000.0, "itl_ms": 20.0}


@pytest.mark.parametrize("text", ["", ",", "ttft", "latency=5ms", "ttft=soon"])
def test_parse_slo_rejects(text):
    with pytest.raises(ValueError):
        parse_slo(text)


def test_is_good_thresholds_are_inclusive_and_unmeasured_is_not_good():
    r1 = derive(level_records()[1])  # TTFT 100, TPOT 100, ITL max 100, E2E 300
    assert is_good(r1, {"ttft_ms": 100.0})  # at the threshold is good
    assert not is_good(r1, {"ttft_ms": 99.9})
    assert is_good(r1, {"itl_ms": 100.0}) and not is_good(r1, {"itl_ms": 99.0})
    assert not is_good(r1, {"ttft_ms": 500.0, "e2e_ms": 299.0})  # every objective must hold
    assert not is_good(derive(level_records()[2]), {"e2e_ms": 1e9})  # failed: never good
    nonstream = ok_rec(0.0, [100], end_ms=100, prompt_tokens=1, output_tokens=1)
    nonstream.stream = False
    assert not is_good(derive(nonstream), {"ttft_ms": 1e9})  # no TTFT without streaming


# ---------------------------------------------------------------- summarize_level

def test_level_summary_worked_numbers():
    e = summarize_level("c2", level_records(), concurrency=2, request_rate=None, slo={"ttft_ms": 150.0})
    assert (e["phase"], e["concurrency"], e["request_rate"]) == ("c2", 2, None)
    assert e["requests"] == 5  # the warm-up is not counted
    assert e["ok"] == 2
    assert e["errors"] == {"rate_limited": 2, "server_error": 1}
    assert e["error_rate"] == pytest.approx(0.6)  # 3 / 5
    # latency statistics come from r1 and r2 only: failed requests stay out
    assert e["ttft_ms"] == pytest.approx({"mean": 150.0, "p50": 150.0, "p90": 190.0, "p95": 195.0, "p99": 199.0,
                                          "min": 100.0, "max": 200.0})  # 100 + q * (200 - 100)
    # ITL pools every gap: 100, 100, 50, 50, 50 -> mean 350 / 5 = 70; sorted 50,50,50,100,100: p50 = 50,
    # p90 at rank 0.9 * 4 = 3.6 -> 100
    assert e["itl_ms"]["mean"] == pytest.approx(70.0)
    assert e["itl_ms"]["p50"] == pytest.approx(50.0)
    assert e["itl_ms"]["p90"] == pytest.approx(100.0)
    assert (e["itl_ms"]["min"], e["itl_ms"]["max"]) == pytest.approx((50.0, 100.0))
    assert e["tpot_ms"]["mean"] == pytest.approx(75.0)  # (100 + 50) / 2
    assert e["e2e_ms"]["mean"] == pytest.approx(325.0)  # (300 + 350) / 2
    assert e["input_tokens"]["mean"] == pytest.approx(15.0)  # (10 + 20) / 2
    assert e["output_tokens"]["mean"] == pytest.approx(3.5)  # (3 + 4) / 2
    # per request: 3 / 0.300 s = 10 tok/s; 4 / 0.350 s = 11.43 tok/s
    assert e["per_request_output_tokens_per_s"]["min"] == pytest.approx(10.0)
    assert e["per_request_output_tokens_per_s"]["max"] == pytest.approx(4 / 0.35)
    # D = last end 1.0 s - first measured send 0.0 s = 1.0 s
    assert e["duration_s"] == pytest.approx(1.0)
    assert e["output_tokens_per_s"] == pytest.approx(7.0)  # (3 + 4) / 1.0
    assert e["total_tokens_per_s"] == pytest.approx(37.0)  # (10 + 20 + 3 + 4) / 1.0
    assert e["requests_per_s"] == pytest.approx(2.0)  # 2 ok / 1.0 s
    assert e["requests_per_min"] == pytest.approx(120.0)  # 60 x 2
    # Little's law: (0.31 + 0.05 + 0.10 + 0.36 + 0.10) s in flight / 1.0 s = 0.92
    assert e["achieved_concurrency"] == pytest.approx(0.92)
    # goodput: TTFT <= 150 ms holds for r1 (100) only -> 1 / 1.0 s, 1 of 5 measured requests
    assert e["goodput"] == {"slo": {"ttft_ms": 150.0}, "good_requests": 1, "requests_per_s": pytest.approx(1.0),
                            "fraction": pytest.approx(0.2)}
    assert e["retry_after_s_max"] == 2.0
    assert e["tokens_estimated"] is False and e["itl_estimated"] is False
    assert e["prompt_tokens_estimated"] is False


def test_goodput_with_tpot_and_itl_objectives():
    e = summarize_level("c2", level_records(), concurrency=2, request_rate=None, slo={"tpot_ms": 60.0})
    assert e["goodput"]["good_requests"] == 1  # r2: TPOT 50; r1: TPOT 100
    e = summarize_level("c2", level_records(), concurrency=2, request_rate=None, slo={"itl_ms": 100.0})
    assert e["goodput"]["good_requests"] == 2  # worst gaps 100 and 50
    e = summarize_level("c2", level_records(), concurrency=2, request_rate=None, slo=None)
    assert e["goodput"] is None


def test_missing_usage_is_flagged_and_prompt_tokens_fall_back_to_the_requested_length():
    r = ok_rec(0.0, [100, 200], end_ms=500, prompt_tokens=None, output_tokens=None, input_len=40)
    e = summarize_level("x", [r], concurrency=1, request_rate=None)
    assert e["tokens_estimated"] is True  # client count: 2 text events
    assert e["prompt_tokens_estimated"] is True
    assert e["input_tokens"] is None  # no measured prompt tokens
    assert e["output_tokens_per_s"] == pytest.approx(4.0)  # 2 / 0.5 s
    assert e["total_tokens_per_s"] == pytest.approx(84.0)  # (40 + 2) / 0.5 s


def test_nothing_succeeded_gives_absent_statistics_not_zero():
    recs = [failed_rec(0.0, 0.5, "auth", status=401), failed_rec(0.1, 1.0, "auth", status=401)]
    e = summarize_level("c1", recs, concurrency=1, request_rate=None, slo={"ttft_ms": 100.0})
    assert e["requests"] == 2 and e["ok"] == 0
    assert e["errors"] == {"auth": 2}
    assert e["error_rate"] == 1.0
    for key in ("ttft_ms", "ttfat_ms", "itl_ms", "tpot_ms", "e2e_ms", "per_request_output_tokens_per_s",
                "decode_tokens_per_s", "input_tokens", "output_tokens", "output_tokens_per_s",
                "total_tokens_per_s", "tokens_estimated", "itl_estimated", "prompt_tokens_estimated"):
        assert e[key] is None, key
    assert e["goodput"]["good_requests"] == 0
    assert e["achieved_concurrency"] == pytest.approx(1.4)  # (0.5 + 0.9) s / 1.0 s


def test_empty_level():
    e = summarize_level("c1", [], concurrency=1, request_rate=2.0)
    assert (e["requests"], e["ok"], e["errors"]) == (0, 0, {})
    assert e["error_rate"] is None and e["duration_s"] is None
    assert e["requests_per_s"] is None and e["requests_per_min"] is None
    assert e["achieved_concurrency"] is None and e["ttft_ms"] is None


def test_only_warmup_records_is_an_empty_level():
    recs = [ok_rec(0.0, [100], end_ms=200, prompt_tokens=1, output_tokens=1, warmup=True)]
    e = summarize_level("c1", recs, concurrency=1, request_rate=None)
    assert e["requests"] == 0 and e["ttft_ms"] is None and e["duration_s"] is None


STEADY_KEYS = ("steady_window_s", "steady_output_tokens_per_s", "steady_requests_per_s", "steady_in_flight_mean")


def test_steady_figures_of_one_worker_are_its_whole_level_figures():
    # one worker, never idle: r1 sends at 0 s, 10 tokens at 100 .. 1000 ms, ends 1050 ms; r2 sends at 1.05 s,
    # 6 tokens 100 .. 600 ms after, ends 650 ms after (1.7 s). One in flight from 0 to 1.7 s: W = D = 1.7 s
    recs = [ok_rec(0.0, range(100, 1001, 100), end_ms=1050, prompt_tokens=5, output_tokens=10),
            ok_rec(1.05, range(100, 601, 100), end_ms=650, prompt_tokens=5, output_tokens=6)]
    e = summarize_level("c1", iter(recs), concurrency=1, request_rate=None)  # a generator is read once
    assert e["steady_window_s"] == pytest.approx(1.7) == e["duration_s"]
    assert e["steady_output_tokens_per_s"] == pytest.approx(16 / 1.7) == e["output_tokens_per_s"]
    assert e["steady_requests_per_s"] == pytest.approx(2 / 1.7) == e["requests_per_s"]
    assert e["steady_in_flight_mean"] == pytest.approx(1.0)
    row = flatten(e)
    assert row["steady_output_tokens_per_s"] == pytest.approx(16 / 1.7)
    # at concurrency 2 the same records never have two in flight: no window, and None rather than 0
    e2 = summarize_level("c2", recs, concurrency=2, request_rate=None)
    assert all(e2[k] is None for k in STEADY_KEYS)
    assert e2["output_tokens_per_s"] == pytest.approx(16 / 1.7)  # the whole-level figure is still there


def test_steady_figures_are_none_for_a_short_level():
    # level_records spans 1 s and its warm-up ends at 4.6 s, after every measured request: no window
    e = summarize_level("c2", level_records(), concurrency=2, request_rate=None)
    assert all(e[k] is None for k in STEADY_KEYS)
    assert e["requests"] == 5 and e["output_tokens_per_s"] == pytest.approx(7.0)


# ---------------------------------------------------------------- fatal_error

def test_fatal_error_only_when_nothing_succeeded():
    auth = failed_rec(0, 1, "auth")
    model = failed_rec(0, 1, "unknown_model")
    server = failed_rec(0, 1, "server_error")
    ok = ok_rec(0.0, [100], end_ms=100, prompt_tokens=1, output_tokens=1)
    assert fatal_error([auth, failed_rec(0, 1, "auth")]) is auth
    assert fatal_error([server, model]) is model
    assert fatal_error([failed_rec(0, 1, "insufficient_balance")]).error_class == "insufficient_balance"
    assert fatal_error([auth, ok]) is None
    assert fatal_error([server, failed_rec(0, 1, "rate_limited")]) is None
    assert fatal_error([]) is None


# ---------------------------------------------------------------- flatten

def test_flatten_worked_columns():
    e = summarize_level("c2", level_records(), concurrency=2, request_rate=None, slo={"ttft_ms": 150.0})
    row = flatten(e)
    assert row["ttft_ms_p50"] == pytest.approx(150.0)
    assert row["itl_ms_mean"] == pytest.approx(70.0)
    assert row["errors_rate_limited"] == 2 and row["errors_server_error"] == 1
    assert row["goodput_requests_per_s"] == pytest.approx(1.0) and row["goodput_fraction"] == pytest.approx(0.2)
    assert row["concurrency"] == 2 and row["requests"] == 5
    assert "errors" not in row and "goodput" not in row and "ttft_ms" not in row
    assert all(not isinstance(v, dict) for v in row.values())


def test_flatten_gives_the_same_columns_with_and_without_successes():
    good = flatten(summarize_level("c1", level_records(), concurrency=1, request_rate=None, slo=None))
    bad = flatten(summarize_level("c2", [failed_rec(0, 1, "auth")], concurrency=2, request_rate=None, slo=None))
    # error columns are one per class seen (the CSV writer unions them); every other column must match
    strip = lambda row: [k for k in row if not k.startswith("errors_")]
    assert strip(good) == strip(bad)
    assert bad["ttft_ms_p99"] is None and bad["goodput_fraction"] is None
    assert all(k in bad and bad[k] is None for k in STEADY_KEYS)


def test_flatten_nested_dicts():
    assert flatten({"client": {"lag_ms": {"p99": 3}}, "ttft_ms": None}) == {
        "client_lag_ms_p99": 3, **{f"ttft_ms_{k}": None for k in ("mean", "p50", "p90", "p95", "p99", "min", "max")}}

"""The steady window and its rates (bench/steady.py) on hand-built records with the arithmetic written out, and once
against the simulated endpoint through ``bench run``."""
from __future__ import annotations

import csv
import json
import random

import pytest

from bench import steady
from bench.records import RequestRecord
from bench.steady import (
    Steady,
    in_flight_steps,
    steady_state,
    steady_window_ns,
    window_rates,
)
from bench.summary import summarize_level

S = 1_000_000_000
T0 = 50 * S  # the level's origin on the perf_counter_ns clock


def at(t_s: float) -> int:
    return T0 + round(t_s * S)


def ticks(first_s: float, last_s: float, step_s: float = 0.25) -> list[float]:
    """first, first + step, ... up to last (inclusive)."""
    n = round((last_s - first_s) / step_s)
    return [first_s + k * step_s for k in range(n + 1)]


def stream_rec(send_s, end_s, token_s, *, warmup=False, error_class=None, name="r"):
    """A streaming request: one token per text event at the absolute times ``token_s``, then a usage chunk at the end.
    A failed one keeps the text it received but has no usage."""
    send = at(send_s)
    ok = error_class is None
    return RequestRecord(
        request_id=name, phase="lv", level_index=0, prompt_index=0, warmup=warmup, api="openai-chat", stream=True,
        input_len_requested=16, output_len_requested=None, scheduled_ns=None, send_ns=send, written_ns=send,
        end_ns=at(end_s), status=200, error_class=error_class, error=None if ok else "cut",
        event_offsets_ns=[at(t) - send for t in token_s] + [at(end_s) - send],
        event_kinds="a" * len(token_s) + "-", event_chars=[4] * len(token_s) + [0], prompt_tokens=16 if ok else None,
        output_tokens=len(token_s) if ok else None, output_tokens_client=len(token_s))


def body_rec(send_s, end_s, output_tokens, name="r"):
    """A non-streaming request: the whole answer in one body at its end."""
    send = at(send_s)
    return RequestRecord(
        request_id=name, phase="lv", level_index=0, prompt_index=0, warmup=False, api="openai-chat", stream=False,
        input_len_requested=16, output_len_requested=None, scheduled_ns=None, send_ns=send, written_ns=send,
        end_ns=at(end_s), status=200, event_offsets_ns=[at(end_s) - send], event_kinds="a", event_chars=[40],
        prompt_tokens=16, output_tokens=output_tokens, output_tokens_client=10)


# A closed loop of 3 workers, 6 requests (seconds after T0):
#   worker 1: A 0.0 .. 2.0, then E 2.0 .. 4.0
#   worker 2: B 0.1 .. 1.5, then D 1.5 .. 3.2
#   worker 3: C 0.2 .. 3.0, then F 3.0 .. 3.6
# in flight: 1 from 0.0, 2 from 0.1, 3 from 0.2; at 1.5, 2.0 and 3.0 an end and a send together keep 3;
# D's end at 3.2 drops it to 2 for good (F ends 3.6, E 4.0). Window [0.2, 3.2): W = 3.0 s.
# One token every 0.25 s from 0.25 s after the send until before the end; tokens inside [0.2, 3.2):
#   A 0.25 .. 1.75: 7 of 7      B 0.35 .. 1.35: 5 of 5     C 0.45 .. 2.95: 11 of 11
#   D 1.75 .. 3.00: 6 of 6      E 2.25 .. 3.75: 4 of 7 (2.25, 2.5, 2.75, 3.0)      F 3.25, 3.5: 0 of 2
# = 33 of 38 tokens.
WORKED = [("A", 0.0, 2.0), ("B", 0.1, 1.5), ("C", 0.2, 3.0), ("D", 1.5, 3.2), ("E", 2.0, 4.0), ("F", 3.0, 3.6)]
TOKENS = {"A": ticks(0.25, 1.75), "B": ticks(0.35, 1.35), "C": ticks(0.45, 2.95), "D": ticks(1.75, 3.0),
          "E": ticks(2.25, 3.75), "F": ticks(3.25, 3.5)}
# share of each request's [send, end] inside the window:
#   A 1.8 / 2.0 = 0.9, B 1.3 / 1.4 (sent at 0.1 s), C 1, D 1, E 1.2 / 2.0 = 0.6, F 0.2 / 0.6 = 1/3 -> 4.7619
SHARES = {"A": 0.9, "B": 1.3 / 1.4, "C": 1.0, "D": 1.0, "E": 0.6, "F": 1 / 3}


def closed_loop(failed: str | None = None) -> list[RequestRecord]:
    return [stream_rec(s, e, TOKENS[n], name=n, error_class="stream_cut" if n == failed else None)
            for n, s, e in WORKED]


def test_worked_closed_loop():
    assert [len(TOKENS[n]) for n, *_ in WORKED] == [7, 5, 11, 6, 7, 2]
    recs = closed_loop()
    assert steady_window_ns(recs, concurrency=3, request_rate=None) == (at(0.2), at(3.2))
    st = steady_state(recs, concurrency=3, request_rate=None)
    assert st.window_s == pytest.approx(3.0)
    assert st.output_tokens_per_s == pytest.approx(11.0)  # 33 tokens / 3.0 s
    assert st.requests_per_s == pytest.approx(sum(SHARES.values()) / 3.0)  # 4.7619 / 3.0 = 1.587
    assert sum(SHARES.values()) == pytest.approx(4.7619, abs=1e-4)
    # in flight: A 1.8 + B 1.3 + C 2.8 + D 1.7 + E 1.2 + F 0.2 = 9.0 request-seconds / 3.0 s = 3 (all the time)
    assert st.in_flight_mean == pytest.approx(3.0)
    # the whole level: 38 tokens over D = 4.0 - 0.0 s = 9.5 tok/s, the ramp-down (3.2 .. 4.0 s) included
    whole = summarize_level("c=3", recs, concurrency=3, request_rate=None)
    assert whole["output_tokens_per_s"] == pytest.approx(9.5)
    assert whole["steady_output_tokens_per_s"] == pytest.approx(11.0)


def test_record_order_does_not_matter():
    recs = closed_loop()
    random.Random(1).shuffle(recs)
    assert steady_state(recs, concurrency=3, request_rate=None) == steady_state(closed_loop(), concurrency=3,
                                                                                request_rate=None)


def test_in_flight_steps_merge_an_end_and_a_send_at_one_instant():
    steps = in_flight_steps(closed_loop())
    assert steps == [(at(0.0), 1), (at(0.1), 2), (at(0.2), 3), (at(1.5), 3), (at(2.0), 3), (at(3.0), 3),
                     (at(3.2), 2), (at(3.6), 1), (at(4.0), 0)]


def test_fewer_requests_than_the_concurrency_have_no_window():
    # two long requests, a token every 0.125 s
    recs = [stream_rec(0.0, 5.0, ticks(0.1, 4.9, 0.125), name="a"), stream_rec(0.1, 5.0, ticks(0.2, 4.95, 0.125),
                                                                                  name="b")]
    assert steady_window_ns(recs, concurrency=3, request_rate=None) is None
    assert steady_state(recs, concurrency=3, request_rate=None) == Steady()
    # the same records as a level of 2 do have one: both in flight from 0.1 s until the first end at 5.0 s
    assert steady_window_ns(recs, concurrency=2, request_rate=None) == (at(0.1), at(5.0))
    assert steady_state(recs, concurrency=2, request_rate=None).in_flight_mean == pytest.approx(2.0)


def test_a_failed_request_occupies_its_slot_but_adds_no_tokens_or_requests():
    recs = closed_loop(failed="B")  # B's 5 tokens arrived, then the stream was cut
    assert steady_window_ns(recs, concurrency=3, request_rate=None) == (at(0.2), at(3.2))  # unchanged
    st = steady_state(recs, concurrency=3, request_rate=None)
    assert st.output_tokens_per_s == pytest.approx(28 / 3.0)  # 33 - B's 5
    assert st.requests_per_s == pytest.approx((sum(SHARES.values()) - 1.3 / 1.4) / 3.0)  # B's share gone
    assert st.in_flight_mean == pytest.approx(3.0)  # B was in flight all the same


def test_non_streaming_tokens_spread_over_the_request(monkeypatch):
    # the worked closed loop again, each request answering 10 tokens in one body at its end
    recs = [body_rec(s, e, 10, name=n) for n, s, e in WORKED]
    window = steady_window_ns(recs, concurrency=3, request_rate=None)
    assert window == (at(0.2), at(3.2))
    rates, observations = window_rates(recs, *window)
    # 10 tokens x 4.7619 requests' shares = 47.619 tokens / 3.0 s = 15.87 tok/s (at their ends it would be
    # A, B, C only: 30 / 3.0 = 10; D ends exactly at the window's open end)
    assert rates.output_tokens_per_s == pytest.approx(10 * sum(SHARES.values()) / 3.0)
    assert rates.requests_per_s == pytest.approx(sum(SHARES.values()) / 3.0)
    assert rates.in_flight_mean == pytest.approx(3.0)
    assert observations == 6  # each non-streaming request overlapping the window is one observation
    # under MIN_WINDOW_EVENTS observations the window is not used
    assert steady.MIN_WINDOW_EVENTS == 10
    assert steady_state(recs, concurrency=3, request_rate=None) == Steady()
    monkeypatch.setattr(steady, "MIN_WINDOW_EVENTS", 6)
    assert steady_state(recs, concurrency=3, request_rate=None) == rates
    monkeypatch.setattr(steady, "MIN_WINDOW_EVENTS", 7)
    assert steady_state(recs, concurrency=3, request_rate=None) == Steady()


def test_the_window_starts_after_the_last_warmup_request():
    # 2 workers; X is a warm-up request (0.0 .. 1.0); its worker then sends Q (1.0 .. 2.5); P (0.05 .. 1.6),
    # then R (1.6 .. 3.0). Two in flight from 0.05 s, but X was there: the window starts at X's end, 1.0 s, where
    # Q's send keeps two in flight, and ends at Q's end, 2.5 s: W = 1.5 s.
    x = stream_rec(0.0, 1.0, [0.25, 0.5, 0.75], warmup=True, name="X")
    p = stream_rec(0.05, 1.6, ticks(0.3, 1.55), name="P")  # 0.3 .. 1.55: 6 tokens, 1.05, 1.3, 1.55 inside
    q = stream_rec(1.0, 2.5, ticks(1.25, 2.25), name="Q")  # 1.25 .. 2.25: 5 tokens, all inside
    r = stream_rec(1.6, 3.0, ticks(1.85, 2.85), name="R")  # 1.85 .. 2.85: 5 tokens, 1.85, 2.1, 2.35 inside
    recs = [x, p, q, r]
    assert steady_window_ns(recs, concurrency=2, request_rate=None) == (at(1.0), at(2.5))
    st = steady_state(recs, concurrency=2, request_rate=None)
    assert st.window_s == pytest.approx(1.5)
    assert st.output_tokens_per_s == pytest.approx(11 / 1.5)  # 3 + 5 + 3 tokens; X's come before the window
    # shares: P 0.6 / 1.55, Q 1.5 / 1.5, R 0.9 / 1.4
    assert st.requests_per_s == pytest.approx((0.6 / 1.55 + 1.0 + 0.9 / 1.4) / 1.5)
    assert st.in_flight_mean == pytest.approx(2.0)  # (0.6 + 1.5 + 0.9) / 1.5
    # were X measured, the window would open at the second send
    x.warmup = False
    assert steady_window_ns(recs, concurrency=2, request_rate=None) == (at(0.05), at(2.5))


def test_a_warmup_request_outlasting_the_level_leaves_no_window():
    recs = closed_loop() + [stream_rec(-0.5, 5.0, [1.0, 2.0], warmup=True, name="W")]
    assert steady_window_ns(recs, concurrency=3, request_rate=None) is None


def test_open_loop_uses_the_arrival_window():
    # 2 requests/s: sends at 0, 0.5, 1.0, 1.5, 2.0 s; each 1.2 s long with tokens 0.2, 0.4, ..., 1.0 s after its send.
    # Window [0.0, 2.0): W = 2.0 s. Tokens inside: 5 + 5 + 4 (1.2 .. 1.8; 2.0 is the window's open end) + 2 (1.7,
    # 1.9) + 0 = 16 -> 8.0 tok/s
    sends = [0.0, 0.5, 1.0, 1.5, 2.0]
    recs = [stream_rec(s, s + 1.2, [s + 0.2 * k for k in range(1, 6)], name=f"o{s}") for s in sends]
    for cap in (None, 3):  # an in-flight cap changes nothing here
        assert steady_window_ns(recs, concurrency=cap, request_rate=2.0) == (at(0.0), at(2.0))
        st = steady_state(recs, concurrency=cap, request_rate=2.0)
        assert st.window_s == pytest.approx(2.0)
        assert st.output_tokens_per_s == pytest.approx(8.0)
        # shares: 1 + 1 + 1.0 / 1.2 + 0.5 / 1.2 + 0 = 3.25 -> / 2.0
        assert st.requests_per_s == pytest.approx(1.625)
        assert st.in_flight_mean == pytest.approx((1.2 + 1.2 + 1.0 + 0.5 + 0.0) / 2.0)  # 1.95 (Little's L)
    # the whole level: 25 tokens / (3.2 - 0.0) s = 7.8125 tok/s, the drain after 2.0 s included
    whole = summarize_level("rate=2/s", recs, concurrency=None, request_rate=2.0)
    assert whole["output_tokens_per_s"] == pytest.approx(7.8125)
    assert whole["steady_output_tokens_per_s"] == pytest.approx(8.0)
    # as a closed loop of 2 (which it was not) the same records would give another window: in flight reach 2 at
    # 0.5 s and fall below it for good at 2.7 s
    assert steady_window_ns(recs, concurrency=2, request_rate=None) == (at(0.5), at(2.7))


def test_open_loop_with_warmup_starts_after_it():
    sends = [0.0, 0.5, 1.0, 1.5, 2.0]
    recs = [stream_rec(s, s + 1.2, [s + 0.2 * k for k in range(1, 6)], name=f"o{s}") for s in sends]
    recs.append(stream_rec(-0.5, 0.7, [0.0, 0.5], warmup=True, name="w"))
    assert steady_window_ns(recs, concurrency=None, request_rate=2.0) == (at(0.7), at(2.0))


def test_all_at_once_and_unknown_levels_have_no_window():
    recs = [stream_rec(0.0, 3.0, ticks(0.25, 2.75), name=f"i{k}") for k in range(5)]
    assert steady_window_ns(recs, concurrency=None, request_rate=float("inf")) is None  # one instant
    assert steady_window_ns(recs, concurrency=None, request_rate=None) is None
    assert steady_state([], concurrency=3, request_rate=None) == Steady()
    assert steady_state([stream_rec(0.0, 3.0, [1.0], warmup=True)], concurrency=1, request_rate=None) == Steady()


def test_a_window_under_a_second_is_not_used():
    assert steady.MIN_WINDOW_S == 1.0
    # one worker, one request: the window is the request. 0.9 s with 17 tokens: too short; 1.1 s with 21: used
    short = [stream_rec(0.0, 0.9, ticks(0.05, 0.85, 0.05))]
    long = [stream_rec(0.0, 1.1, ticks(0.05, 1.05, 0.05))]
    assert steady_state(short, concurrency=1, request_rate=None) == Steady()
    st = steady_state(long, concurrency=1, request_rate=None)
    assert st.window_s == pytest.approx(1.1)
    assert st.output_tokens_per_s == pytest.approx(21 / 1.1)


def test_too_few_tokens_in_the_window_is_not_used():
    # 2 s, but 9 tokens then 10 tokens
    assert steady_state([stream_rec(0.0, 2.0, ticks(0.2, 1.8, 0.2))], concurrency=1, request_rate=None) == Steady()
    st = steady_state([stream_rec(0.0, 2.0, ticks(0.1, 1.9, 0.2))], concurrency=1, request_rate=None)
    assert st.output_tokens_per_s == pytest.approx(10 / 2.0)


def test_nothing_succeeded_is_none_not_zero():
    recs = [stream_rec(s, e, TOKENS[n], name=n, error_class="stream_cut") for n, s, e in WORKED]
    assert steady_window_ns(recs, concurrency=3, request_rate=None) == (at(0.2), at(3.2))
    assert steady_state(recs, concurrency=3, request_rate=None) == Steady()
    assert window_rates(recs, at(0.2), at(3.2))[0] == Steady()


def test_a_window_over_the_whole_level_gives_the_whole_level_rates():
    # invariant: over [first send, last end] every token and request is inside, so the window's rates are the
    # whole-level ones of summarize_level (a different code path), and the in-flight mean is Little's law's
    recs = closed_loop(failed="E")
    rates, _ = window_rates(recs, at(0.0), at(4.0))
    whole = summarize_level("c=3", recs, concurrency=3, request_rate=None)
    assert rates.output_tokens_per_s == pytest.approx(whole["output_tokens_per_s"])
    assert rates.requests_per_s == pytest.approx(whole["requests_per_s"])
    assert rates.in_flight_mean == pytest.approx(whole["achieved_concurrency"])


# ---------------------------------------------------------------- against the simulated endpoint

def test_bench_run_steady_rate_matches_the_simulated_server(cli, tmp_path):
    # TTFT = ITL = 20 ms: a request of N tokens lasts N x 20 ms whatever N, so each of the 4 workers, while busy,
    # receives one token per 20 ms: 4 / 0.020 s = 200 tok/s inside the window (no batch limit reached: 4 < 64).
    # Output lengths vary (20 .. 60), so the level ends with requests finishing alone: its whole-level rate is lower.
    itl_s = 0.020
    out = tmp_path / "run"
    res = cli("run", "--concurrency", "4", "--num-requests", "12", "--sim-ttft-ms", "20", "--sim-itl-ms", "20",
              "--input-len", "16", "--output-len", "uniform:20,60", "--no-progress", "--no-telemetry",
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    level = json.loads((out / "summary.json").read_text())["levels"][0]
    assert level["ok"] == 12
    expected = 4 / itl_s
    assert level["steady_window_s"] > 1.0
    assert level["steady_output_tokens_per_s"] == pytest.approx(expected, rel=0.10)
    assert level["steady_output_tokens_per_s"] >= level["output_tokens_per_s"]
    assert level["steady_in_flight_mean"] == pytest.approx(4.0, abs=0.1)
    assert level["steady_requests_per_s"] >= level["requests_per_s"] * 0.95
    with open(out / "summary.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["steady_output_tokens_per_s"]) == pytest.approx(level["steady_output_tokens_per_s"])
    assert "steady_window_s" in row and "steady_requests_per_s" in row and "steady_in_flight_mean" in row

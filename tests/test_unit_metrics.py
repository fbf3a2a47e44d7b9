"""derive(): per-request metrics from hand-built raw records, with the arithmetic written out."""

from __future__ import annotations

import random

import pytest

from bench.metrics import derive, event_token_counts
from bench.records import RequestRecord

MS = 1_000_000  # ns per ms
SEND = 5_000 * MS  # an arbitrary perf_counter_ns origin


def rec(offsets_ms, kinds, *, tokens=None, chars=None, output_tokens=None, client=None, prompt_tokens=None,
        written_ms=None, stream=True, end_ms=None, error_class=None) -> RequestRecord:
    return RequestRecord(
        request_id="r", phase="c1", level_index=0, prompt_index=0, warmup=False, api="openai-chat",
        stream=stream, input_len_requested=None, output_len_requested=None, scheduled_ns=None, send_ns=SEND,
        written_ns=SEND + round(written_ms * MS) if written_ms is not None else None,
        end_ns=SEND + round(end_ms * MS) if end_ms is not None else None,
        error_class=error_class, event_offsets_ns=[round(o * MS) for o in offsets_ms], event_kinds=kinds,
        event_tokens=tokens, event_chars=chars if chars is not None else [1] * len(kinds),
        output_tokens=output_tokens, output_tokens_client=client, prompt_tokens=prompt_tokens)


def test_one_token_per_event_worked_example():
    # role chunk at 50 ms, four one-token chunks at 120, 180, 240, 300 ms, usage chunk at 310, [DONE] at 311
    m = derive(rec([50, 120, 180, 240, 300, 310, 311], "-aaaa--", output_tokens=4, prompt_tokens=9, end_ms=312))
    assert m.ok is True and m.error_class is None
    assert m.ttft_ms == pytest.approx(120.0)  # TTFT = 120 - 0 = 120 ms (the role chunk carries no text)
    assert m.ttfat_ms == pytest.approx(120.0)  # no reasoning: TTFAT = TTFT
    assert m.e2e_ms == pytest.approx(300.0)  # E2E = last text event = 300 ms (usage and [DONE] left out)
    assert m.itl_ms == pytest.approx((60.0, 60.0, 60.0))  # 180-120, 240-180, 300-240
    assert m.tpot_ms == pytest.approx(60.0)  # TPOT = (300 - 120) / (4 - 1) = 60 ms
    assert m.per_request_output_tokens_per_s == pytest.approx(4 / 0.3)  # 4 tokens / 0.300 s = 13.33 tok/s
    assert m.decode_tokens_per_s == pytest.approx(1000 / 60)  # 1000 / TPOT = 16.67 tok/s
    assert m.output_tokens == 4 and m.prompt_tokens == 9
    assert m.tokens_estimated is False and m.itl_estimated is False
    assert (m.send_ns, m.end_ns) == (SEND, SEND + 312 * MS)


def test_chunk_carrying_k_tokens_contributes_k_equal_gaps():
    # events at 100 ms (2 tokens), 190 ms (3 tokens), 250 ms (1 token); per-event counts from continuous usage
    m = derive(rec([0, 100, 190, 250, 260], "-aaa-", tokens=[0, 2, 3, 1, 0], output_tokens=6))
    assert m.ttft_ms == pytest.approx(100.0)
    # (190 - 100) / 3 = 30 ms, three times; (250 - 190) / 1 = 60 ms once; the first event's 2 tokens are in TTFT
    assert m.itl_ms == pytest.approx((30.0, 30.0, 30.0, 60.0))
    assert m.e2e_ms == pytest.approx(250.0)
    assert m.tpot_ms == pytest.approx(30.0)  # TPOT = (250 - 100) / (6 - 1) = 30 ms
    assert m.itl_estimated is False


def test_text_event_without_a_new_token_joins_its_gap_to_the_next():
    # 100 ms (1 token), 150 ms (0 tokens: detokenizer catching up), 200 ms (2 tokens)
    m = derive(rec([100, 150, 200], "aaa", tokens=[1, 0, 2], output_tokens=3))
    assert m.itl_ms == pytest.approx((50.0, 50.0))  # (200 - 100) / 2 = 50 ms, twice
    assert m.e2e_ms == pytest.approx(200.0)


def test_trailing_text_event_without_token_does_not_extend_e2e():
    # 100 ms (1), 200 ms (1), 250 ms (0 tokens)
    m = derive(rec([100, 200, 250], "aaa", tokens=[1, 1, 0], output_tokens=2))
    assert m.itl_ms == pytest.approx((100.0,))
    assert m.e2e_ms == pytest.approx(200.0)  # ends at the last counted event, so E2E - TTFT = 100 = sum(ITL)
    assert m.tpot_ms == pytest.approx(100.0)  # (200 - 100) / (2 - 1)


def test_event_tokens_of_the_wrong_length_are_ignored():
    # 3 kinds but 2 counts: fall back to one token per event
    m = derive(rec([100, 200, 300], "aaa", tokens=[1, 5], output_tokens=3))
    assert m.itl_ms == pytest.approx((100.0, 100.0))
    assert m.itl_estimated is False


def test_extra_usage_tokens_are_spread_by_text_length():
    # 3 text events at 100, 160, 400 ms with 5, 10, 30 chars; usage says 7 tokens, no per-event counts.
    # 7 - 3 = 4 extra tokens over the events after the first, by chars 10 : 30 -> 1 and 3 -> counts 1, 2, 4
    r = rec([100, 160, 400], "aaa", chars=[5, 10, 30], output_tokens=7)
    assert event_token_counts(r, 7) == ([1, 2, 4], True)
    m = derive(r)
    # (160 - 100) / 2 = 30 ms twice; (400 - 160) / 4 = 60 ms four times
    assert m.itl_ms == pytest.approx((30.0, 30.0, 60.0, 60.0, 60.0, 60.0))
    assert m.itl_estimated is True
    assert m.tokens_estimated is False  # N itself is the server's usage
    assert m.tpot_ms == pytest.approx(50.0)  # (400 - 100) / (7 - 1) = 50 ms


def test_spread_uses_largest_remainder_with_ties_to_the_left():
    # 9 tokens over 4 events: 5 extra over 3 equal-length events: 5/3 = 1.67 each -> 1, 1, 1 + 2 left -> 2, 2, 1
    r = rec([1, 2, 3, 4], "aaaa", chars=[9, 4, 4, 4])
    assert event_token_counts(r, 9) == ([1, 3, 3, 2], True)


def test_spread_with_zero_length_text_is_even():
    # 2 extra tokens over two events with 0 chars each: 1 and 1
    r = rec([1, 2, 3], "aaa", chars=[0, 0, 0])
    assert event_token_counts(r, 5) == ([1, 2, 2], True)


def test_fewer_usage_tokens_than_events_keeps_one_per_event_and_flags_it():
    r = rec([1, 2, 3], "aaa")
    assert event_token_counts(r, 2) == ([1, 1, 1], True)
    assert event_token_counts(r, 3) == ([1, 1, 1], False)
    assert event_token_counts(r, None) == ([1, 1, 1], False)


def test_no_usage_uses_the_client_count_and_says_so():
    m = derive(rec([100, 200, 300, 400], "aaaa", output_tokens=None, client=4))
    assert m.output_tokens == 4
    assert m.tokens_estimated is True
    assert m.tpot_ms == pytest.approx(100.0)  # (400 - 100) / (4 - 1)
    assert m.itl_estimated is False


def test_tpot_is_none_with_a_single_token():
    m = derive(rec([100], "a", output_tokens=1))
    assert m.ttft_ms == pytest.approx(100.0)
    assert m.e2e_ms == pytest.approx(100.0)
    assert m.itl_ms == ()
    assert m.tpot_ms is None and m.decode_tokens_per_s is None
    assert m.per_request_output_tokens_per_s == pytest.approx(10.0)  # 1 token / 0.1 s


def test_tpot_is_none_without_a_token_count():
    m = derive(rec([100, 200], "aa", output_tokens=None, client=None))
    assert m.tpot_ms is None
    assert m.per_request_output_tokens_per_s is None


def test_reasoning_counts_for_ttft_and_the_answer_for_ttfat():
    # reasoning at 100 and 150 ms, answer at 400 and 450 ms
    m = derive(rec([100, 150, 400, 450], "rraa", output_tokens=4))
    assert m.ttft_ms == pytest.approx(100.0)
    assert m.ttfat_ms == pytest.approx(400.0)
    assert m.itl_ms == pytest.approx((50.0, 250.0, 50.0))
    assert m.e2e_ms == pytest.approx(450.0)


def test_reasoning_only_has_no_ttfat():
    m = derive(rec([100, 200], "rr", output_tokens=2))
    assert m.ttft_ms == pytest.approx(100.0)
    assert m.ttfat_ms is None


def test_latencies_count_from_written_ns_when_known():
    # bytes handed to the socket 5 ms after send_ns; offsets are stored relative to send_ns
    m = derive(rec([125, 225, 305], "aaa", output_tokens=3, written_ms=5, end_ms=310))
    assert m.ttft_ms == pytest.approx(120.0)  # 125 - 5
    assert m.e2e_ms == pytest.approx(300.0)  # 305 - 5
    assert m.itl_ms == pytest.approx((100.0, 80.0))  # gaps do not depend on the origin
    assert m.send_ns == SEND  # the record's own send time is kept


def test_non_streaming_has_e2e_but_no_ttft_or_itl():
    # one JSON body that ended 500 ms after the bytes were written at 2 ms
    m = derive(rec([502, 502], "ra", stream=False, output_tokens=10, written_ms=2, end_ms=502))
    assert m.ttft_ms is None and m.ttfat_ms is None
    assert m.itl_ms == ()
    assert m.tpot_ms is None
    assert m.e2e_ms == pytest.approx(500.0)  # 502 - 2
    assert m.per_request_output_tokens_per_s == pytest.approx(20.0)  # 10 tokens / 0.5 s


def test_stream_without_text_events_uses_the_end_time():
    m = derive(rec([80, 90], "--", output_tokens=0, end_ms=95))
    assert m.ttft_ms is None
    assert m.e2e_ms == pytest.approx(95.0)
    assert m.per_request_output_tokens_per_s == pytest.approx(0.0)  # measured: 0 tokens


def test_failed_request_has_no_latencies():
    m = derive(rec([100, 200], "ax", output_tokens=None, client=1, end_ms=200, error_class="stream_error"))
    assert m.ok is False and m.error_class == "stream_error"
    assert m.ttft_ms is None and m.e2e_ms is None and m.tpot_ms is None
    assert m.itl_ms == ()
    assert m.per_request_output_tokens_per_s is None and m.decode_tokens_per_s is None


# ---------------------------------------------------------------- invariant: E2E - TTFT == sum(ITL)

# hypothesis is not among the project's test dependencies, so the property runs over a seeded random sample:
# 3,000 records with random kinds, gaps (including 0), per-event counts (including 0), usage and origin.

def random_record(rnd: random.Random) -> RequestRecord:
    n = rnd.randint(1, 40)
    kinds = "".join(rnd.choice("aar-") for _ in range(n))
    t = rnd.randint(0, 500 * MS)
    offsets = []
    for _ in range(n):
        t += rnd.choice((0, rnd.randint(1, 50 * MS)))
        offsets.append(t)
    tokens = None if rnd.random() < 0.5 else [rnd.randint(0, 6) for _ in range(n)]
    usage = None if rnd.random() < 0.3 else rnd.randint(0, 3 * n + 5)
    written = None if rnd.random() < 0.5 else rnd.randint(0, 10 * MS)
    return RequestRecord(
        request_id="p", phase="p", level_index=0, prompt_index=0, warmup=False, api="openai-chat", stream=True,
        input_len_requested=None, output_len_requested=None, scheduled_ns=None, send_ns=SEND,
        written_ns=SEND + written if written is not None else None, end_ns=SEND + t + MS,
        event_offsets_ns=offsets, event_kinds=kinds, event_tokens=tokens,
        event_chars=[rnd.randint(0, 30) for _ in range(n)],
        output_tokens=usage, output_tokens_client=sum(1 for k in kinds if k in "ar"))


def test_e2e_minus_ttft_equals_sum_of_itl_over_random_records():
    rnd = random.Random(20240601)
    checked = 0
    for _ in range(3000):
        r = random_record(rnd)
        m = derive(r)
        if "a" not in r.event_kinds and "r" not in r.event_kinds:
            assert m.ttft_ms is None and m.itl_ms == ()
            continue
        assert m.e2e_ms - m.ttft_ms == pytest.approx(sum(m.itl_ms), abs=1e-6), r
        assert all(g >= 0 for g in m.itl_ms), r
        assert m.ttft_ms <= m.e2e_ms
        if m.ttfat_ms is not None:
            assert m.ttft_ms <= m.ttfat_ms
        checked += 1
    assert checked > 2500  # the sample really exercised text-bearing streams

"""Load levels against a real simulated endpoint: closed loop, request rate, caps, warm-up, duration, abort, stop."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench import errors
from bench.apis import APIS
from bench.client import Target
from bench.records import RecordWriter, read_records
from bench.runner import LoadLevel, LoadPlan, RunAborted, Runner, make_session
from bench.summary import summarize_level
from bench.workload import LengthSpec, synthetic_prompts
from conftest import run


def plan_for(levels, n_prompts=64, out=10, **kw) -> LoadPlan:
    prompts = synthetic_prompts(np.random.default_rng(0), n_prompts, LengthSpec("fixed", 16), LengthSpec("fixed", out))
    return LoadPlan(levels=tuple(levels), prompts=tuple(prompts), **kw)


async def drive(url: str, plan: LoadPlan, writer=None, runner_hook=None):
    runner = Runner(Target(url, APIS["openai-chat"], "gpucap-sim"), plan, writer)
    async with make_session(64, 30) as session:
        if runner_hook is not None:
            asyncio.get_running_loop().call_later(runner_hook[0], runner_hook[1], runner)
        return runner, await runner.run(session)


def max_overlap(records) -> int:
    """The most requests ever in flight at once, from their [send, end] intervals."""
    edges = sorted([(r.send_ns, 1) for r in records] + [(r.end_ns, -1) for r in records])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_closed_loop_keeps_the_concurrency_and_writes_every_record(make_sim, tmp_path):
    sim = make_sim(ttft_ms=10, itl_ms=3)
    writer = RecordWriter(tmp_path / "requests.jsonl")
    _, results = run(drive(sim.url, plan_for([LoadLevel("c=8", 8, num_requests=32)], warmup=4), writer))
    writer.close()
    recs = results[0].records
    assert len(recs) == 36
    assert sum(r.warmup for r in recs) == 4
    assert max_overlap(recs) == 8
    summary = summarize_level("c=8", recs, concurrency=8, request_rate=None)
    assert summary["requests"] == 32  # warm-up not counted
    # 4 rounds of 8, the last one draining without replacements: Little's law gives clearly more than 4, at most 8
    assert 5.0 < summary["achieved_concurrency"] <= 8.0
    on_disk = list(read_records(tmp_path / "requests.jsonl"))
    assert sorted(r.request_id for r in on_disk) == sorted(r.request_id for r in recs)


def test_ramp_up_spreads_the_first_requests_and_keeps_them_spread(make_sim):
    sim = make_sim(ttft_ms=200, itl_ms=20)  # a request takes ~400 ms: every first request comes before any second
    ramp_s, c = 0.3, 4
    _, results = run(drive(sim.url, plan_for([LoadLevel("c=4", c, num_requests=12, ramp_up_s=ramp_s)])))
    recs = sorted(results[0].records, key=lambda r: r.send_ns)
    start = results[0].start_ns
    firsts = recs[:c]
    for i, r in enumerate(firsts):  # worker i's first request at i/c of the ramp: 0, 75, 150, 225 ms
        assert abs((r.send_ns - start) / 1e6 - 1000 * ramp_s * i / c) < 15, [(x.send_ns - start) / 1e6 for x in firsts]
        if i:  # it had a place in the ramp: its send delay is measured against it
            assert r.scheduled_ns is not None and abs(r.written_ns - r.scheduled_ns) < 15e6
    assert max_overlap(results[0].records) == c
    second_wave = recs[c:2 * c]  # each worker's next request follows its own first: the spread stays
    assert (second_wave[-1].send_ns - second_wave[0].send_ns) / 1e6 > 1000 * ramp_s * (c - 1) / c * 0.7
    unramped = run(drive(sim.url, plan_for([LoadLevel("c=4", c, num_requests=12)])))[1][0]
    spread_ms = lambda rs: (rs[c - 1].send_ns - rs[0].send_ns) / 1e6
    assert spread_ms(sorted(unramped.records, key=lambda r: r.send_ns)) < 15  # all at once without a ramp


def test_each_level_is_its_own_phase_on_the_same_prompts(make_sim):
    sim = make_sim(ttft_ms=5, itl_ms=1, keep_truth=True)
    levels = [LoadLevel("c=1", 1, num_requests=4), LoadLevel("c=4", 4, num_requests=4)]
    _, results = run(drive(sim.url, plan_for(levels, n_prompts=4)))
    first, second = results
    assert {r.phase for r in first.records} == {"c=1"} and {r.phase for r in second.records} == {"c=4"}
    assert first.end_ns <= min(r.send_ns for r in second.records)  # phases do not overlap
    assert sorted(r.prompt_index for r in first.records) == sorted(r.prompt_index for r in second.records)
    # same lengths, but the level-specific first word keeps a prefix cache from favouring the second level
    assert {r.input_len_requested for r in first.records} == {r.input_len_requested for r in second.records}


def test_request_rate_follows_the_schedule(make_sim):
    sim = make_sim(ttft_ms=5, itl_ms=1)
    plan = plan_for([LoadLevel("rate=40/s", None, 40.0, num_requests=40)], out=3, seed=3)
    _, results = run(drive(sim.url, plan))
    recs = sorted(results[0].records, key=lambda r: r.scheduled_ns)
    late_ms = [((r.written_ns or r.send_ns) - r.scheduled_ns) / 1e6 for r in recs]
    assert max(late_ms) < 25  # every request left within 25 ms of its scheduled time
    span_s = (recs[-1].scheduled_ns - recs[0].scheduled_ns) / 1e9
    # 39 exponential gaps with mean 1/40 s: the span is 0.975 s on average; a seeded draw stays within 2x
    assert 0.4 < span_s < 2.0
    assert results[0].client["send_delay_ms"]["max"] == pytest.approx(max(late_ms), abs=1e-6)


def test_request_rate_with_a_concurrency_cap(make_sim):
    sim = make_sim(ttft_ms=30, itl_ms=5)
    plan = plan_for([LoadLevel("rate=inf/s", 3, float("inf"), num_requests=12)], out=5)
    _, results = run(drive(sim.url, plan))
    recs = results[0].records
    assert len(recs) == 12 and all(r.error_class is None for r in recs)
    assert max_overlap(recs) == 3


def test_duration_stops_sending_at_the_deadline(make_sim):
    sim = make_sim(ttft_ms=20, itl_ms=10)
    plan = plan_for([LoadLevel("c=2", 2)], duration_s=0.6, out=5)
    _, results = run(drive(sim.url, plan))
    res = results[0]
    assert res.records, "nothing was sent"
    deadline = res.start_ns + int(0.6e9)
    assert all(r.send_ns < deadline for r in res.records)
    assert all(r.error_class is None for r in res.records)  # in-flight requests were allowed to finish


def test_bad_key_stops_the_run_at_once(make_sim):
    sim = make_sim(api_key="sk-right", ttft_ms=50, itl_ms=10)
    plan = plan_for([LoadLevel("c=4", 4, num_requests=100), LoadLevel("c=8", 8, num_requests=100)])
    with pytest.raises(RunAborted) as info:
        run(drive(sim.url, plan))
    assert info.value.record.error_class == errors.AUTH
    assert sim.server.requests_total < 20  # not 200: a bad key does not hammer the provider


def test_first_ctrl_c_finishes_in_flight_requests_and_sends_nothing_new(make_sim):
    sim = make_sim(ttft_ms=20, itl_ms=10)
    plan = plan_for([LoadLevel("c=4", 4, num_requests=200), LoadLevel("c=8", 8, num_requests=8)], out=20)
    runner, results = run(drive(sim.url, plan, runner_hook=(0.5, lambda r: r.request_stop())))
    assert len(results) == 1  # the second level never started
    recs = results[0].records
    assert 4 <= len(recs) < 200
    assert all(r.error_class is None for r in recs)  # nothing was cut off


def test_second_ctrl_c_cancels_in_flight_requests_and_keeps_them(make_sim):
    sim = make_sim(ttft_ms=20, itl_ms=50)
    plan = plan_for([LoadLevel("c=4", 4, num_requests=8)], out=100)
    runner, results = run(drive(sim.url, plan, runner_hook=(0.4, lambda r: r.cancel_in_flight())))
    recs = results[0].records
    cancelled = [r for r in recs if r.error_class == errors.CANCELLED]
    assert len(cancelled) == 4
    assert all(r.event_kinds.count("a") >= 1 for r in cancelled)  # tokens received before the cancel are kept

"""``bench capacity``: the search on its own (against an oracle), the verdict on a level, and the command against a
simulated endpoint whose capacity follows from its configuration."""
from __future__ import annotations

import json
import math

import pytest

from bench.capacity import Criteria, Search, judge, parse_label
from bench.metrics import RequestMetrics
from bench.records import read_records


def _search_with_oracle(search: Search, passes) -> list[float]:
    tried = []
    load = search.first()
    while load is not None:
        tried.append(load)
        load = search.next(load, passes(load))
    return tried


@pytest.mark.parametrize("threshold", [1, 2, 3, 5, 7, 8, 13, 24, 63, 64, 100, 255])
def test_concurrency_search_brackets_the_edge_within_the_precision(threshold):
    search = Search("concurrency", start=1, limit=256, precision=0.1)
    tried = _search_with_oracle(search, lambda c: c <= threshold)
    assert search.best <= threshold < search.lowest_failure
    assert search.lowest_failure - search.best <= max(1, search.best // 10)
    exact = Search("concurrency", start=1, limit=256, precision=0)
    _search_with_oracle(exact, lambda c: c <= threshold)
    assert (exact.best, exact.lowest_failure) == (threshold, threshold + 1)
    assert len(tried) == len(set(tried)), "no load is measured twice"
    assert len(tried) <= 2 * math.ceil(math.log2(256)) + 2


def test_concurrency_search_stops_at_the_precision_for_large_loads():
    search = Search("concurrency", start=1, limit=4096, precision=0.1)
    _search_with_oracle(search, lambda c: c <= 1000)
    assert search.best <= 1000 < search.lowest_failure
    assert search.lowest_failure - search.best <= 0.1 * search.best


@pytest.mark.parametrize("threshold", [0.3, 1.0, 2.7, 9.9, 40.0])
def test_rate_search_brackets_the_edge_within_the_precision(threshold):
    search = Search("rate", start=0.25, limit=256, precision=0.05)
    _search_with_oracle(search, lambda r: r <= threshold)
    assert search.best <= threshold < search.lowest_failure
    assert search.lowest_failure - search.best <= 0.05 * search.best * 1.01  # labels are rounded to 3 digits


@pytest.mark.parametrize("start, limit", [(1, 1024), (1, 1001), (1, 1.234), (0.01, 0.1234), (3.33, 4.995),
                                          (7, 7), (0.5, 999.9)])
def test_rate_doubling_ends_at_the_limit_without_repeating_or_passing_it(start, limit):
    every = Search("rate", start=start, limit=limit)
    tried = _search_with_oracle(every, lambda r: True)
    assert len(tried) == len(set(tried)) and tried == sorted(tried)
    assert tried[-1] == limit and max(tried) <= limit and every.limited
    half = Search("rate", start=start, limit=limit, precision=0.05)
    tried = _search_with_oracle(half, lambda r: r <= (start + limit) / 2)
    assert len(tried) == len(set(tried)) and max(tried) <= limit


def test_nothing_passes_and_everything_passes():
    none = Search("concurrency", start=4, limit=64)
    assert _search_with_oracle(none, lambda c: False) == [4]
    assert none.best is None and not none.limited
    every = Search("concurrency", start=1, limit=48)
    tried = _search_with_oracle(every, lambda c: True)
    assert tried[-1] == 48 and every.best == 48 and every.limited
    assert tried == sorted(tried)


def test_a_pass_above_a_failure_is_not_the_answer():
    search = Search("concurrency", start=1, limit=64, precision=0)
    for load, passed in [(1, True), (2, True), (4, True), (8, True), (16, False), (12, True)]:
        search.next(load, passed)
    search.next(20, True)  # a noisy level above a failure (as a replay of other verdicts could give)
    assert search.best == 12 and search.lowest_failure == 16
    assert search.next(14, False) == 13


def test_bad_search_bounds_are_refused():
    with pytest.raises(ValueError):
        Search("concurrency", start=8, limit=4)
    with pytest.raises(ValueError):
        Search("tokens")


def _m(ttft_ms=None, tpot_ms=None, ok=True, itl=()):
    return RequestMetrics(ok=ok, error_class=None if ok else "server_error", ttft_ms=ttft_ms, ttfat_ms=ttft_ms,
                          itl_ms=tuple(itl), tpot_ms=tpot_ms, e2e_ms=None, output_tokens=10, prompt_tokens=10,
                          per_request_output_tokens_per_s=None, decode_tokens_per_s=None, send_ns=0, end_ns=1,
                          tokens_estimated=False, itl_estimated=False)


def test_judge_says_which_objective_was_missed_and_how_often():
    slo = {"ttft_ms": 100.0, "tpot_ms": 20.0}
    crit = Criteria(slo, goodput_min=0.9, error_rate_max=0.05)
    metrics = [_m(50, 10)] * 8 + [_m(150, 10), _m(50, 30)]
    v = judge(metrics, crit)
    assert not v.passed and v.good_fraction == pytest.approx(0.8)
    assert v.missed == {"ttft": pytest.approx(0.1), "tpot": pytest.approx(0.1)}
    assert "80%" in v.reason and "ttft" in v.reason and "tpot" in v.reason
    fine = [_m(50, 10)] * 19 + [_m(150, 10)]
    assert judge(fine, crit).passed
    failing = [_m(50, 10)] * 18 + [_m(ok=False)] * 2  # 10 % errors > 5 %
    v = judge(failing, crit)
    assert not v.passed and "errors" in v.reason
    assert not judge([_m(ok=False)] * 3, crit).passed
    assert not judge([], crit).passed


def test_a_share_just_under_the_threshold_is_never_printed_as_the_threshold():
    crit = Criteria({"ttft_ms": 100.0}, goodput_min=0.95)
    metrics = [_m(50)] * 18 + [_m(150)]  # 18/19 = 94.7 %
    v = judge(metrics, crit)
    assert not v.passed and "94.7% met the SLO (< 95%)" in v.reason


def test_open_loop_latency_counts_from_the_scheduled_arrival():
    from bench.capacity import level_metrics
    from bench.records import RequestRecord

    def rec(scheduled_ms, send_ms):  # tokens 20 and 30 ms after the send, the end at 31 ms
        send = int(send_ms * 1e6)
        return RequestRecord(request_id="x", phase="rate=1/s", level_index=0, prompt_index=0, warmup=False,
                             api="openai-chat", stream=True, input_len_requested=8, output_len_requested=2,
                             scheduled_ns=int(scheduled_ms * 1e6), send_ns=send, written_ns=send,
                             headers_ns=send + 5_000_000, end_ns=send + 31_000_000, status=200,
                             event_offsets_ns=[20_000_000, 30_000_000, 31_000_000], event_kinds="aa-",
                             event_chars=[4, 4, 0], prompt_tokens=8, output_tokens=2, output_tokens_client=2,
                             stream_complete=True)

    held = rec(1000, 1500)  # held back 500 ms by the in-flight cap
    on_time = rec(1000, 1000)
    closed, opened = level_metrics([held, on_time], open_loop=False), level_metrics([held, on_time], open_loop=True)
    assert closed[0].ttft_ms == pytest.approx(opened[1].ttft_ms)  # measured from the send, both 20 ms
    assert opened[0].ttft_ms == pytest.approx(closed[0].ttft_ms + 500)
    assert opened[0].e2e_ms == pytest.approx(closed[0].e2e_ms + 500)
    assert opened[0].tpot_ms == pytest.approx(closed[0].tpot_ms)  # decode pace is not affected


def test_labels_parse_back_to_their_load():
    assert parse_label("c=12") == (12, None)
    assert parse_label("rate=2.5/s") == (None, 2.5)
    assert parse_label("warmup") == (None, None)


# ---- the command, against a simulated endpoint whose capacity is known -----------------------------------------
# The simulator runs at most MAX_BATCH requests at once; the rest queue. A request takes TTFT + OUT x ITL (~130 ms)
# when admitted at once. bench capacity spreads each level's users over one request's time (the ramp-up), so at
# concurrency MAX_BATCH + 1 the extra user arrives 3/4 into the others' requests and waits the last quarter (~33 ms)
# for a slot: TTFT ~73 ms, over the 55 ms objective (admitted at once: ~40 ms). The capacity is MAX_BATCH.
MAX_BATCH, TTFT_MS, ITL_MS, OUT = 3, 40, 10, 10


def test_capacity_command_finds_the_servers_batch_limit(make_sim, cli, tmp_path):
    sim = make_sim(ttft_ms=TTFT_MS, itl_ms=ITL_MS, max_batch=MAX_BATCH)
    out = tmp_path / "cap"
    res = cli("capacity", "--base-url", sim.url, "--slo", "ttft=55ms", "--limit", "16", "--output-len", str(OUT),
              "--input-len", "16", "--ignore-eos", "--num-requests", "20", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((out / "summary.json").read_text())
    found = summary["run"]["capacity"]
    assert found["max_load"] == MAX_BATCH, found["sentence"]
    assert found["complete"] is True and "provisional" not in found["sentence"]
    assert found["lowest_failing_load"] == MAX_BATCH + 1
    assert f"Capacity: {MAX_BATCH} concurrent requests" in res.stdout
    # every level it tried is a full level of the run: records, summary entry, verdict
    phases = [p["phase"] for p in found["probes"]]
    assert phases == [lv["phase"] for lv in summary["levels"]]
    assert phases[:3] == ["c=1", "c=2", "c=4"]
    by_phase = {p["phase"]: p for p in found["probes"]}
    assert by_phase["c=4"]["passed"] is False and by_phase["c=4"]["missed"]["ttft"] > 0.05
    records = list(read_records(out / "requests.jsonl"))
    assert {r.phase for r in records} == set(phases)
    # the answer is re-derived from the records alone
    before = found
    res = cli("summarize", str(out))
    assert res.returncode == 0, res.stderr
    again = json.loads((out / "summary.json").read_text())["run"]["capacity"]
    assert again["max_load"] == before["max_load"] and again["probes"] == before["probes"]
    _check_report(out, again, tmp_path)


def _check_report(run_dir, found, tmp_path):
    """The report of a capacity run has the capacity figure: its points are the verdicts, the answer is marked."""
    from bench.report import make_report
    from bench.report.build import build_report
    from bench.report.load import load_runs

    report = build_report(load_runs([run_dir]), overlay_sizing=False)
    chart = report.chart("capacity")
    assert chart is not None
    data = chart.data[chart.data["source"] == "measured"].sort_values("load")
    probes = sorted(found["probes"], key=lambda p: p["load"])
    assert list(data["level"]) == [p["phase"] for p in probes]
    assert list(data["passed"]) == [p["passed"] for p in probes]
    assert list(data["good_fraction"]) == pytest.approx([p["good_fraction"] for p in probes])
    left = chart.figure.axes[0]
    verticals = [line.get_xdata()[0] for line in left.get_lines() if len(set(line.get_xdata())) == 1
                 and len(line.get_xdata()) == 2]
    assert found["max_load"] in verticals
    html = make_report([run_dir], tmp_path / "rep", formats=("png",)).read_text()
    assert found["sentence"].split(";")[0].replace("<", "&lt;") in html and 'id="capacity"' in html


def test_capacity_by_rate_reports_a_rate(make_sim, cli, tmp_path):
    # 1 request at a time, ~70 ms each: about 14 requests/s saturate it; at 2/s TTFT stays near 20 ms
    sim = make_sim(ttft_ms=TTFT_MS, itl_ms=ITL_MS, max_batch=1)
    out = tmp_path / "rate"
    res = cli("capacity", "--base-url", sim.url, "--by", "rate", "--start", "2", "--limit", "64", "--slo",
              "ttft=200ms", "--output-len", str(OUT), "--ignore-eos", "--num-requests", "30", "--goodput-min", "0.9",
              "--precision", "0.25", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    found = json.loads((out / "summary.json").read_text())["run"]["capacity"]
    assert found["by"] == "rate" and found["unit"] == "requests/s"
    assert found["max_load"] is not None and 2 <= found["max_load"] < 1000 / (TTFT_MS + OUT * ITL_MS) * 1.5
    assert all(p["phase"].startswith("rate=") for p in found["probes"])


@pytest.mark.parametrize("argv, flag", [
    (["capacity"], "--slo"),
    (["capacity", "--slo", "ttft=1s", "--concurrency", "4"], "--concurrency"),
    (["capacity", "--slo", "ttft=1s", "--start", "8", "--limit", "4"], "--limit"),
    (["capacity", "--slo", "ttft=1s", "--start", "1.5"], "--start"),
    (["capacity", "--slo", "ttft=1s", "--max-concurrency", "4"], "--max-concurrency"),
    (["capacity", "--slo", "ttft=1s", "--goodput-min", "2"], "--goodput-min"),
    (["capacity", "--slo", "ttft=1s", "--limit", "inf"], "--limit"),
    (["capacity", "--slo", "ttft=1s", "--by", "rate", "--start", "inf"], "--start"),
    (["capacity", "--slo", "ttft=1s", "--no-stream"], "--no-stream"),
    (["capacity", "--slo", "e2e=1s", "--fail-on-error-rate", "0.1"], "--fail-on-error-rate"),
])
def test_bad_capacity_flags_get_one_sentence(cli, argv, flag):
    res = cli(*argv)
    assert res.returncode == 2
    assert flag in res.stderr and "Traceback" not in res.stderr


def test_a_bad_key_stops_the_search_at_once_with_one_sentence(make_sim, cli, tmp_path):
    sim = make_sim(ttft_ms=5, itl_ms=1, api_key="right-key")
    out = tmp_path / "bad"
    res = cli("capacity", "--base-url", sim.url, "--slo", "ttft=1s", "--api-key", "wrong-key", "--output-len", "4",
              "--out", str(out), "--no-progress")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "wrong-key" not in res.stdout + res.stderr


def test_ctrl_c_ends_the_search_and_keeps_what_was_measured(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    out = tmp_path / "int"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "capacity", "--slo", "ttft=10s", "--limit", "64",
                             "--sim-ttft-ms", "5", "--sim-itl-ms", "20", "--output-len", "10", "--no-progress",
                             "--no-telemetry", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, COLUMNS="200"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until a few levels have run
        if (out / "requests.jsonl").exists() and len((out / "requests.jsonl").read_bytes().splitlines()) >= 25:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    found = summary["run"]["capacity"]
    assert [p["phase"] for p in found["probes"]] == [lv["phase"] for lv in summary["levels"]]
    assert len(found["probes"]) >= 2 and found["max_load"] is not None
    assert found["max_load"] < 64  # interrupted: it never got to the limit
    assert found["complete"] is False and "did not finish" in found["sentence"]
    assert "provisional" in stdout



def test_rate_levels_held_back_by_the_in_flight_cap_fail_on_the_wait(make_sim, cli, tmp_path):
    # 2 at a time, ~70 ms each: the server delivers ~28 requests/s. With --max-concurrency 2 the client holds the
    # rest back; counted from their scheduled arrival that wait breaks the TTFT objective long before 256/s.
    sim = make_sim(ttft_ms=20, itl_ms=5, max_batch=2)
    out = tmp_path / "capped"
    res = cli("capacity", "--base-url", sim.url, "--by", "rate", "--start", "4", "--limit", "256",
              "--max-concurrency", "2", "--slo", "ttft=200ms", "--output-len", "10", "--ignore-eos",
              "--num-requests", "30", "--precision", "0.5", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    found = json.loads((out / "summary.json").read_text())["run"]["capacity"]
    assert found["max_load"] is not None and found["max_load"] < 60, found["sentence"]
    assert not found["limited_by_search_limit"]


def test_every_level_sends_at_least_twice_its_concurrency_and_a_burst_start_is_named(make_sim, cli, tmp_path):
    sim = make_sim(ttft_ms=5, itl_ms=2, max_batch=4)
    out = tmp_path / "few"
    res = cli("capacity", "--base-url", sim.url, "--slo", "ttft=50ms", "--start", "2", "--limit", "8",
              "--num-requests", "3", "--output-len", "8", "--out", str(out), "--no-progress", "--no-telemetry")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "starts its users all at once" in res.stdout
    for lv in json.loads((out / "summary.json").read_text())["levels"]:
        assert lv["requests"] >= 2 * lv["concurrency"], lv["phase"]


def test_a_level_that_measured_nothing_stops_the_search_without_a_verdict(cli, tmp_path):
    out = tmp_path / "warm"
    res = cli("capacity", "--slo", "ttft=1s", "--duration", "0.5", "--warmup", "50", "--sim-ttft-ms", "50",
              "--sim-itl-ms", "20", "--output-len", "20", "--out", str(out), "--no-progress", "--no-telemetry")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no request was measured; the search stops" in res.stdout
    found = json.loads((out / "summary.json").read_text())["run"]["capacity"]
    assert found["max_load"] is None and found["complete"] is False
    assert found["probes"][0]["passed"] is None and "No answer" in found["sentence"]


def test_the_report_draws_sizings_predicted_capacity_for_an_emulated_deployment(tmp_path):
    """A capacity run has a model and a card: its report's prediction is `sizing recommend --slo`'s answer for the
    same tokens, drawn beside the measured answer."""
    import subprocess
    import sys
    from pathlib import Path

    from bench.report.build import build_report
    from bench.report.load import RunData

    from conftest import ROOT

    def stats(v):
        return dict.fromkeys(("mean", "p50", "p90", "p95", "p99", "min", "max"), v)

    # a real level of the committed example run, with the token counts of the deployment asked about
    level = json.loads((ROOT / "results" / "example-sim" / "summary.json").read_text())["levels"][0]
    levels = [{**level, "input_tokens": stats(512.0), "output_tokens": stats(128.0)}]
    capacity = {"by": "concurrency", "max_load": 20, "probes": [], "sentence": "Capacity: 20 concurrent requests.",
                "criteria": {"slo": {"ttft_ms": 2000.0, "tpot_ms": 60.0}, "goodput_min": 0.95},
                "search": {"limit": 256}, "complete": True, "unit": "concurrent requests"}
    run = RunData(run_dir=Path(tmp_path), run={"target": {"simulated": True, "model": "qwen2.5-7b"},
                                               "sim": {"model": "qwen2.5-7b", "gpu": "a10"}, "load": {"levels": []}},
                  levels=levels, name="emulated", capacity=capacity)
    report = build_report([run])
    predicted = report.predictions[0].capacity
    cli = subprocess.run([sys.executable, "-c", "import sys; from sizing.cli import main; sys.exit(main())",
                          "recommend", "--model", "qwen2.5-7b", "--gpu", "a10", "--input-len", "512",
                          "--output-len", "128", "--slo", "ttft=2s,tpot=60ms", "--json"],
                         capture_output=True, text=True, check=True)
    assert predicted == json.loads(cli.stdout)["slo"]["max_concurrency"]
    chart = report.chart("capacity")
    assert predicted in [line.get_xdata()[0] for line in chart.figure.axes[0].get_lines()
                         if line.get_linestyle() == ":"]
    assert "sizing predicts" in chart.caption.lower() or "sizing predicts" in " ".join(
        t.get_text() for t in chart.figure.axes[0].texts)

"""``bench compare``: the comparison as pure functions on hand-built summaries (each right answer worked out here),
then the CLI on two real runs of the simulated endpoint, one with twice the inter-token latency of the other."""
from __future__ import annotations

import copy
import io
import json
import math
import shutil

import pytest
from conftest import bench_cli
from rich.console import Console

from bench.compare import (
    METRIC_NAMES,
    METRICS,
    check_gate,
    compare_level,
    compare_runs,
    parse_fraction,
    parse_gate,
    relative_change,
    to_json,
    verdict,
)
from bench.compare_render import render

STAT_KEYS = ("mean", "p50", "p90", "p95", "p99", "min", "max")

# the direction each metric is better in, written out from what it measures (not read from bench.compare)
LOWER_IS_BETTER = {"ttft_p50", "ttft_p99", "tpot_mean", "tpot_p99", "itl_p99", "e2e_p50", "e2e_p99", "error_rate",
                   "gpu_mem_peak_bytes", "server_res_peak_bytes"}
HIGHER_IS_BETTER = {"per_request_output_tokens_per_s", "output_tokens_per_s", "steady_output_tokens_per_s",
                    "requests_per_s", "goodput_fraction"}


def stats(**values) -> dict:
    return {k: values.get(k) for k in STAT_KEYS}


def level(phase: str = "c=10", *, ttft=(100.0, 200.0), tpot=(20.0, 30.0), itl_p99=40.0, e2e=(1000.0, 2000.0),
          per_request=50.0, out_tps=500.0, steady=480.0, rps=5.0, error_rate=0.01, goodput=None, gpu_mem=None,
          res=None) -> dict:
    """One summary.json level with the fields bench compare reads (and a few it does not)."""
    return {
        "phase": phase, "requests": 100, "ok": 99, "errors": {},
        "ttft_ms": stats(p50=ttft[0], p99=ttft[1]), "tpot_ms": stats(mean=tpot[0], p99=tpot[1]),
        "itl_ms": stats(p99=itl_p99), "e2e_ms": stats(p50=e2e[0], p99=e2e[1]),
        "per_request_output_tokens_per_s": stats(mean=per_request),
        "output_tokens_per_s": out_tps, "steady_output_tokens_per_s": steady, "requests_per_s": rps,
        "error_rate": error_rate,
        "goodput": None if goodput is None else {"slo": {"ttft_ms": 500.0}, "good_requests": 90,
                                                 "requests_per_s": 4.5, "fraction": goodput},
        "telemetry": {"gpu_mem_used_bytes_total_peak": gpu_mem, "server_res_bytes_peak": res},
    }


def run_json(**workload) -> dict:
    return {"started_at": "2026-01-01T00:00:00+00:00", "status": "completed", "label": None, "hardware": "1x H100",
            "tool": {"version": "0.1.0"},
            "target": {"url": "http://gpu1:8000/v1/chat/completions", "api": "openai-chat", "model": "m",
                       "stream": True, "simulated": False},
            "server": {"version": "vllm 0.6.0"},
            "load": {"num_requests": 100, "duration_s": None, "warmup": 0},
            "workload": {"input_len": "256", "output_len": "128", "dataset": None, "prefix_len": 0,
                         "ignore_eos": False, "min_tokens": None, **workload},
            "slo": None}


def summary(*levels: dict) -> dict:
    return {"run": {}, "levels": list(levels)}


def set_at(entry: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        entry = entry[key]
    entry[path[-1]] = value


def rendered(cmp, gate) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    render(cmp, gate, console)
    return console.export_text()


def rows_by_name(rows) -> dict:
    return {c.metric.name: c for c in rows}


# ---- direction, threshold, missing values ----------------------------------------------------------------------

def test_the_vocabulary_is_every_metric_once_and_each_has_its_direction():
    assert set(METRIC_NAMES) == LOWER_IS_BETTER | HIGHER_IS_BETTER
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    for m in METRICS:
        assert m.higher_is_better == (m.name in HIGHER_IS_BETTER), m.name


@pytest.mark.parametrize("factor", [1.5, 0.5])
def test_every_metric_knows_which_way_is_better(factor):
    # every metric moved by the same factor: +50 % or -50 %, far outside the 5 % threshold
    base = level(goodput=0.8, gpu_mem=40e9, res=2e9)
    cand = copy.deepcopy(base)
    for m in METRICS:
        value = base
        for key in m.path:
            value = value[key]
        set_at(cand, m.path, value * factor)
    rows = rows_by_name(compare_level("c=10", base, cand))
    assert set(rows) == set(METRIC_NAMES)  # the optional rows are there: both levels have goodput and memory
    went_up = factor > 1
    for name, row in rows.items():
        good_way = (name in HIGHER_IS_BETTER) == went_up
        assert row.verdict == ("better" if good_way else "worse"), name
        assert row.relative_change == pytest.approx(factor - 1), name
        assert row.absolute_change == pytest.approx(row.baseline * (factor - 1)), name


def test_a_change_within_the_threshold_is_the_same():
    # TTFT p99 200 -> 210 ms: (210 - 200) / 200 = +5 % = the default threshold: "same"
    assert relative_change(200.0, 210.0) == pytest.approx(0.05)
    assert verdict(200.0, 210.0, higher_is_better=False) == "same"
    # 200 -> 212: +6 % > 5 %: worse; with a 10 % threshold: same
    assert verdict(200.0, 212.0, higher_is_better=False) == "worse"
    assert verdict(200.0, 212.0, higher_is_better=False, threshold=0.10) == "same"
    # tokens/s 500 -> 470: -6 %: worse (higher is better); 500 -> 490: -2 %: same
    assert verdict(500.0, 470.0, higher_is_better=True) == "worse"
    assert verdict(500.0, 490.0, higher_is_better=True) == "same"
    rows = rows_by_name(compare_level("c=1", level(ttft=(100.0, 200.0)), level(ttft=(100.0, 212.0)), threshold=0.10))
    assert rows["ttft_p99"].verdict == "same"
    assert rows["ttft_p99"].relative_change == pytest.approx(12 / 200)


def test_missing_values_print_nothing_and_never_count_as_a_change():
    base = level(steady=None)                       # too short for a steady window
    cand = level(steady=520.0, tpot=(None, None))   # e.g. every request produced a single token
    rows = rows_by_name(compare_level("c=10", base, cand))
    for name in ("steady_output_tokens_per_s", "tpot_mean", "tpot_p99"):
        row = rows[name]
        assert row.verdict is None and row.absolute_change is None and row.relative_change is None, name
    assert rows["steady_output_tokens_per_s"].candidate == 520.0
    # a gate on a metric that is missing is not broken by it, and says it could not check it
    cmp = compare_runs(run_json(), summary(base), run_json(), summary(cand))
    gate = check_gate(cmp, {"tpot_mean": 0.05, "ttft_p99": 0.05})
    assert gate.breaches == [] and gate.unchecked == ["tpot_mean"] and gate.passed
    text = rendered(cmp, gate)
    tpot_line = next(line for line in text.splitlines() if "TPOT mean" in line)
    assert tpot_line.split("│")[-2].strip() == "-" and "20.0" in tpot_line


def test_goodput_and_memory_rows_only_when_both_runs_have_them():
    names = set(rows_by_name(compare_level("c=1", level(goodput=0.9, gpu_mem=40e9), level(res=1e9))))
    assert not names & {"goodput_fraction", "gpu_mem_peak_bytes", "server_res_peak_bytes"}
    names = set(rows_by_name(compare_level("c=1", level(goodput=0.9, res=1e9), level(goodput=0.7, res=1e9))))
    assert {"goodput_fraction", "server_res_peak_bytes"} <= names and "gpu_mem_peak_bytes" not in names


def test_errors_where_there_were_none_are_worse_and_break_any_error_gate():
    rows = rows_by_name(compare_level("c=1", level(error_rate=0.0), level(error_rate=0.02)))
    row = rows["error_rate"]
    assert row.verdict == "worse" and row.relative_change == math.inf and row.absolute_change == pytest.approx(0.02)
    assert rows_by_name(compare_level("c=1", level(error_rate=0.0), level(error_rate=0.0)))["error_rate"].verdict \
        == "same"
    cmp = compare_runs(run_json(), summary(level("c=1", error_rate=0.0)),
                       run_json(), summary(level("c=1", error_rate=0.02)))
    gate = check_gate(cmp, {"error_rate": 10.0})  # even a limit of 1000 %: from 0 is infinitely more
    assert not gate.passed and gate.breaches[0].change.metric.name == "error_rate"
    out = to_json(cmp, gate)
    text = json.dumps(out, allow_nan=False)  # valid JSON: no Infinity
    err = next(m for m in json.loads(text)["levels"][0]["metrics"] if m["metric"] == "error_rate")
    assert err["relative_change"] is None and err["from_zero"] is True and err["verdict"] == "worse"


# ---- levels, configuration ------------------------------------------------------------------------------------

def test_levels_match_by_label_and_the_others_are_listed():
    base = summary(level("c=1"), level("c=10"), level("c=100"))
    cand = summary(level("c=10", ttft=(100.0, 300.0)), level("c=100"), level("c=200"))
    cmp = compare_runs(run_json(), base, run_json(), cand)
    assert list(cmp.levels) == ["c=10", "c=100"]
    assert cmp.only_in_baseline == ["c=1"] and cmp.only_in_candidate == ["c=200"]
    assert rows_by_name(cmp.levels["c=10"])["ttft_p99"].verdict == "worse"   # 200 -> 300 ms: +50 %
    assert rows_by_name(cmp.levels["c=100"])["ttft_p99"].verdict == "same"
    out = to_json(cmp)
    assert [lv["phase"] for lv in out["levels"]] == ["c=10", "c=100"]
    assert out["only_in_baseline"] == ["c=1"] and out["only_in_candidate"] == ["c=200"] and out["gate"] is None
    text = rendered(cmp, None)
    assert "Only in baseline (not compared): c=1" in text and "Only in candidate (not compared): c=200" in text


def test_no_common_level_is_said_and_a_gate_that_checked_nothing_fails():
    cmp = compare_runs(run_json(), summary(level("c=1")), run_json(), summary(level("rate=2/s")))
    assert cmp.levels == {} and any("No level ran in both runs" in w for w in cmp.warnings)
    gate = check_gate(cmp, {"ttft_p99": 0.1})
    assert gate.breaches == [] and gate.checked_nothing and not gate.passed


def test_the_configuration_diff_and_the_unfair_workload_warning():
    base = run_json()
    cand = run_json(output_len="512")
    cand["server"]["version"] = "vllm 0.7.0"
    cmp = compare_runs(base, summary(level()), cand, summary(level()))
    differs = {f.name: (f.baseline, f.candidate) for f in cmp.config if f.differs}
    assert differs == {"server": ("vllm 0.6.0", "vllm 0.7.0"), "output_len": ("128", "512")}
    assert len(cmp.warnings) == 1 and "workloads differ" in cmp.warnings[0] and "output_len 128 vs 512" in \
        cmp.warnings[0]
    # only the server differs: what the comparison is for, no warning
    cand = run_json()
    cand["server"]["version"] = "vllm 0.7.0"
    assert compare_runs(base, summary(level()), cand, summary(level())).warnings == []


def test_simulated_runs_do_not_differ_by_their_port_and_a_lagging_client_is_said():
    def sim_run(port: int, itl_ms: float) -> dict:
        r = run_json()
        r["target"].update(url=f"http://127.0.0.1:{port}/v1/chat/completions", simulated=True)
        r["sim"] = {"ttft_ms": 10.0, "itl_ms": itl_ms}
        return r
    lagged = level("c=4")
    lagged["client"] = {"lagged": True, "lag_reason": "loop lag p99 12 ms"}
    cmp = compare_runs(sim_run(4001, 2.0), summary(level("c=4")), sim_run(4002, 4.0), summary(lagged))
    assert [f.name for f in cmp.config if f.differs] == ["sim"]
    assert cmp.warnings == ["c=4 of the candidate: the client itself lagged, so its latencies include client delay."]


# ---- the gate -------------------------------------------------------------------------------------------------

def test_parse_gate_and_threshold():
    assert parse_gate("ttft_p99=10%, TPOT_mean=0.05") == {"ttft_p99": pytest.approx(0.10),
                                                         "tpot_mean": pytest.approx(0.05)}
    assert parse_fraction("5%") == pytest.approx(0.05) and parse_fraction("0.05") == pytest.approx(0.05)
    assert parse_fraction("150%") == pytest.approx(1.5)
    for bad in ("10", "abc", "-5%", ""):
        with pytest.raises(ValueError):
            parse_fraction(bad)
    for bad in ("ttft=10%", "ttft_p99", "ttft_p99=ten", "", "ttft_p99=1%,ttft_p99=2%"):
        with pytest.raises(ValueError) as e:
            parse_gate(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="tpot_mean"):  # the message lists the valid names
        parse_gate("latency=5%")


def test_the_gate_breaks_only_in_the_bad_direction_beyond_its_limit():
    base = summary(level("c=1", out_tps=500.0, tpot=(20.0, 30.0)), level("c=8", out_tps=1000.0, tpot=(25.0, 40.0)))
    cand = summary(level("c=1", out_tps=400.0, tpot=(10.0, 30.0)), level("c=8", out_tps=960.0, tpot=(27.0, 40.0)))
    cmp = compare_runs(run_json(), base, run_json(), cand)
    # c=1: tokens/s 500 -> 400 = -20 % (bad way, > 10 %): breach; TPOT 20 -> 10 = -50 % (good way): none
    # c=8: tokens/s 1000 -> 960 = -4 % (< 10 %): none; TPOT 25 -> 27 = +8 % (> 5 %): breach
    gate = check_gate(cmp, {"output_tokens_per_s": 0.10, "tpot_mean": 0.05})
    assert sorted((b.change.phase, b.change.metric.name) for b in gate.breaches) == \
        [("c=1", "output_tokens_per_s"), ("c=8", "tpot_mean")]
    assert not gate.passed and gate.levels_checked == 2
    assert check_gate(cmp, {"output_tokens_per_s": 0.25, "tpot_mean": 0.10}).passed
    text = rendered(cmp, gate)
    assert "c=1 output_tokens_per_s: 500.0 -> 400.0 tokens/s (fell 20.0%, limit 10%)" in text
    assert "c=8 tpot_mean" in text and "REGRESSION" in text


# ---- the command line, on real runs ---------------------------------------------------------------------------

SMALL_RUN = ["--num-requests", "8", "--output-len", "16", "--input-len", "32", "--sim-ttft-ms", "10", "--no-progress",
             "--no-telemetry"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs: ``fast`` at 2 ms between tokens (levels c=1, c=4), ``slow`` at 4 ms (levels c=4, c=8)."""
    root = tmp_path_factory.mktemp("compare")
    for name, itl, levels in (("fast", "2", "1,4"), ("slow", "4", "4,8")):
        res = bench_cli("run", "--concurrency", levels, "--sim-itl-ms", itl, *SMALL_RUN, "--out", str(root / name))
        assert res.returncode == 0, res.stderr
    return root


def level_of(run_dir, phase: str) -> dict:
    return next(lv for lv in json.loads((run_dir / "summary.json").read_text())["levels"] if lv["phase"] == phase)


def test_cli_slower_tokens_are_worse_and_the_gate_exits_3(runs):
    res = bench_cli("compare", str(runs / "fast"), str(runs / "slow"), "--json", "--fail-on-regression",
                    "tpot_mean=10%")
    assert res.returncode == 3, res.stderr
    out = json.loads(res.stdout)
    assert [lv["phase"] for lv in out["levels"]] == ["c=4"]
    assert out["only_in_baseline"] == ["c=1"] and out["only_in_candidate"] == ["c=8"]
    b, c = level_of(runs / "fast", "c=4")["tpot_ms"]["mean"], level_of(runs / "slow", "c=4")["tpot_ms"]["mean"]
    tpot = next(m for m in out["levels"][0]["metrics"] if m["metric"] == "tpot_mean")
    assert (tpot["baseline"], tpot["candidate"]) == (b, c)
    assert tpot["relative_change"] == pytest.approx((c - b) / b) and tpot["verdict"] == "worse"
    assert c / b > 1.5  # 4 ms instead of 2 ms between tokens: TPOT about doubles
    assert out["gate"]["passed"] is False
    assert [(x["phase"], x["metric"]) for x in out["gate"]["breaches"]] == [("c=4", "tpot_mean")]
    differs = {f["field"] for f in out["config"] if f["differs"]}
    assert differs == {"sim"}  # same model, lengths and requests; only the simulated inter-token latency


def test_cli_the_reverse_order_is_better_and_passes_the_gate(runs):
    res = bench_cli("compare", str(runs / "slow"), str(runs / "fast"), "--fail-on-regression", "tpot_mean=10%")
    assert res.returncode == 0, res.stdout + res.stderr
    tpot_line = next(line for line in res.stdout.splitlines() if "TPOT mean" in line)
    assert tpot_line.split("│")[-2].strip() == "better"
    assert "--fail-on-regression tpot_mean=10% passed" in res.stdout
    assert "Only in baseline (not compared): c=8" in res.stdout
    assert "Only in candidate (not compared): c=1" in res.stdout


def test_cli_text_output_names_the_broken_level_and_metric(runs):
    res = bench_cli("compare", str(runs / "fast"), str(runs / "slow"), "--fail-on-regression",
                    "tpot_mean=10%,error_rate=1%")
    assert res.returncode == 3 and "Traceback" not in res.stderr
    assert "What differs between the runs" in res.stdout and "itl_ms=2.0" in res.stdout
    assert "REGRESSION" in res.stdout and "c=4 tpot_mean:" in res.stdout
    assert "c=4 error_rate" not in res.stdout  # no errors in either run


def test_cli_a_run_compared_with_itself_is_the_same_everywhere(runs):
    res = bench_cli("compare", str(runs / "fast"), str(runs / "fast"), "--json", "--fail-on-regression",
                    "ttft_p99=0%,output_tokens_per_s=0%")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    verdicts = {m["verdict"] for lv in out["levels"] for m in lv["metrics"]}
    assert verdicts <= {"same", None} and "same" in verdicts
    assert out["only_in_baseline"] == [] == out["only_in_candidate"] and out["warnings"] == []


def test_cli_warns_when_the_workloads_differ(runs, tmp_path):
    other = tmp_path / "longer"
    shutil.copytree(runs / "slow", other)
    run = json.loads((other / "run.json").read_text())
    run["workload"]["output_len"] = "64"
    (other / "run.json").write_text(json.dumps(run))
    res = bench_cli("compare", str(runs / "slow"), str(other))
    assert res.returncode == 0, res.stderr
    assert "The workloads differ (output_len 16 vs 64)" in res.stdout


def _no_summary(runs, tmp_path):
    d = tmp_path / "unsummarized"
    shutil.copytree(runs / "fast", d)
    (d / "summary.json").unlink()
    return d


def _empty(runs, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def _run_json_only(runs, tmp_path):
    d = tmp_path / "run-json-only"
    d.mkdir()
    shutil.copy(runs / "fast" / "run.json", d / "run.json")
    return d


def _broken_summary(runs, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(runs / "fast", d)
    (d / "summary.json").write_text("{not json")
    return d


@pytest.mark.parametrize("make, words", [
    (_no_summary, ["BASELINE_RUN", "has no summary.json", "bench summarize"]),
    (_empty, ["BASELINE_RUN", "is not a run folder", "no run.json"]),
    (_run_json_only, ["BASELINE_RUN", "neither summary.json nor requests.jsonl"]),
    (_broken_summary, ["BASELINE_RUN", "summary.json cannot be read"]),
    (lambda runs, tmp_path: tmp_path / "missing", ["BASELINE_RUN", "does not exist"]),
    (lambda runs, tmp_path: runs / "fast" / "run.json", ["BASELINE_RUN", "is a file, not a run folder"]),
])
def test_cli_not_a_comparable_run_folder_is_one_sentence_and_exit_2(runs, tmp_path, make, words):
    res = bench_cli("compare", str(make(runs, tmp_path)), str(runs / "slow"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    message = res.stderr.strip().splitlines()[-1]
    assert message.startswith("bench compare: error: ")
    for w in words:
        assert w in message, (w, message)


@pytest.mark.parametrize("argv, words", [
    (["--fail-on-regression", "latency=10%"], ["--fail-on-regression", "ttft_p99", "output_tokens_per_s"]),
    (["--fail-on-regression", "ttft_p99=ten"], ["--fail-on-regression", "not a percentage"]),
    (["--fail-on-regression", ","], ["--fail-on-regression", "no limit given"]),
    (["--threshold", "5"], ["--threshold", "5%"]),
    (["--threshold=-1%"], ["--threshold", "not a percentage"]),
])
def test_cli_bad_flags_name_the_flag_and_exit_2(runs, argv, words):
    res = bench_cli("compare", str(runs / "fast"), str(runs / "slow"), *argv)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    message = res.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in message, (w, message)

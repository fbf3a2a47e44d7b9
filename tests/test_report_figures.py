"""`bench report`: figures written and readable, the HTML page embeds them, and every plotted series is the summary
(or the samples) it came from. The run folders are made here by `python -m bench run` against the simulated endpoint."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from bench.report import SizingTarget, build_report, load_runs, make_report
from bench.report.build import write_report
from bench.report.charts import pareto_front
from bench.report.html import redact
from bench.report.load import NotARunError, load_run
from bench.report.predict import predict
from bench.report.timeline import timeline_chart

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("throughput", "latency", "latency_cdf", "pareto", "timeline")
# small and fast: 2 levels x 8 requests x 8 tokens, telemetry every 50 ms
RUN_ARGS = ("--concurrency", "1,4", "--num-requests", "8", "--output-len", "8", "--sim-ttft-ms", "10",
            "--sample-interval", "0.05", "--no-progress")


def _bench_run(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "run", *RUN_ARGS, "--out", str(out), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs of the simulated endpoint, made at once: 'a' with an SLO, 'b' claiming '1x H100' hardware."""
    base = tmp_path_factory.mktemp("runs")
    procs = {"a": _bench_run(base / "a", "--label", "a", "--sim-itl-ms", "2", "--slo", "ttft=50ms,tpot=5ms"),
             "b": _bench_run(base / "b", "--label", "b", "--sim-itl-ms", "4", "--hardware", "1x H100")}
    for proc in procs.values():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    return {name: base / name for name in procs}


@pytest.fixture(scope="module")
def one(runs):
    return build_report(load_runs([runs["a"]]))


@pytest.fixture(scope="module")
def two(runs):
    return build_report(load_runs([runs["a"], runs["b"]]))


def _summary(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "summary.json").read_text())["levels"]


# -- files -----------------------------------------------------------------------------------------------------

def test_every_figure_is_written_as_a_valid_png_of_sensible_size_and_the_html_embeds_them(runs, tmp_path):
    html_path = make_report([runs["a"]], tmp_path / "rep")
    assert html_path == tmp_path / "rep" / "report.html"
    html = html_path.read_text()
    embedded = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(FIGURES)
    for name, data in zip(FIGURES, embedded):
        png = tmp_path / "rep" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64decode(data) == png.read_bytes()  # the page shows exactly the file
        pixels = mpimg.imread(png)
        height, width = pixels.shape[:2]
        assert 350 <= height <= 2500 and 600 <= width <= 2500, (name, pixels.shape)
        assert pixels[..., :3].std() > 0.05, f"{name}.png is blank"
        svg = (tmp_path / "rep" / f"{name}.svg").read_text()
        assert "<svg" in svg and "</svg>" in svg
    assert (tmp_path / "rep" / "field_table.csv").is_file()


def test_the_html_is_self_contained_and_never_shows_a_secret(runs, tmp_path):
    run = tmp_path / "secret-run"
    shutil.copytree(runs["a"], run)
    config = json.loads((run / "run.json").read_text())
    config["target"]["headers"] = {"Authorization": "Bearer sk-live-abcdef123456", "X-Api-Key": "hunter2hunter2",
                                   "X-Trace": "on"}
    config["target"]["api_key"] = "sk-proj-0123456789"
    (run / "run.json").write_text(json.dumps(config))
    html = make_report([run], tmp_path / "rep", formats=("png",)).read_text()
    for secret in ("sk-live-abcdef123456", "hunter2hunter2", "sk-proj-0123456789"):
        assert secret not in html
    assert "X-Trace" in html and "&quot;on&quot;" in html  # other headers are shown
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing loaded from elsewhere
    assert "a: simulated endpoint · gpucap-sim · no GPU (simulated)" in html


def test_redact_worked_example():
    config = {"target": {"headers": {"Authorization": "Bearer x", "X-Trace": "on"}, "api_key_set": True,
                         "model": "m"}, "workload": {"max_tokens": 5}, "note": "sk-abcdefgh1234"}
    assert redact(config) == {"target": {"headers": {"Authorization": "<redacted>", "X-Trace": "on"},
                                         "api_key_set": True, "model": "m"},
                              "workload": {"max_tokens": 5}, "note": "<redacted>"}


# -- the plotted series are the summary ------------------------------------------------------------------------

def test_throughput_series_are_the_summary_and_the_lines_draw_them(runs, two):
    chart = two.chart("throughput")
    data = chart.data[chart.data["source"] == "measured"]
    for run_dir, name in ((runs["a"], two.runs[0].name), (runs["b"], two.runs[1].name)):
        for level in _summary(run_dir):
            row = data[(data["run"] == name) & (data["level"] == level["phase"])]
            agg = row[row["metric"] == "output_tokens_per_s"]["value"].item()
            per = row[row["metric"] == "per_request_output_tokens_per_s_mean"]["value"].item()
            assert agg == level["output_tokens_per_s"]
            assert per == level["per_request_output_tokens_per_s"]["mean"]
            assert row["x"].iloc[0] == level["concurrency"]
    left = chart.figure.axes[0]
    drawn = {tuple(line.get_ydata()) for line in left.get_lines()}
    expected = tuple(lv["output_tokens_per_s"] for lv in _summary(runs["b"]))
    assert expected in drawn



def test_a_run_that_is_no_capacity_search_has_no_capacity_figure(one, two):
    assert one.chart("capacity") is None and two.chart("capacity") is None


def test_the_steady_state_series_is_drawn_beside_the_aggregate(runs):
    from bench.report.charts import throughput_chart
    from bench.report.tables import levels_table

    levels = levels_table(load_runs([runs["b"]]))
    # the fixture's levels are too short (< 1 s) for a steady window: give them one, as longer levels would have
    levels["steady_output_tokens_per_s"] = levels["output_tokens_per_s"] * 1.25
    chart = throughput_chart(levels, "here")
    drawn = {tuple(line.get_ydata()) for line in chart.figure.axes[0].get_lines()}
    expected = tuple(levels.sort_values("x")["steady_output_tokens_per_s"])
    assert expected in drawn
    rows = chart.data[chart.data["metric"] == "steady_output_tokens_per_s"]
    assert tuple(rows.sort_values("x")["value"]) == expected
    legend = [t.get_text() for lg in chart.figure.legends for t in lg.get_texts()]
    assert any("steady" in t for t in legend) and "steady-state" in chart.caption
    without = throughput_chart(levels_table(load_runs([runs["b"]])), "here")
    assert "steady-state" not in without.caption


def test_latency_series_are_the_summary_percentiles_and_slo_lines_are_drawn(runs, one):
    chart = one.chart("latency")
    for level in _summary(runs["a"]):
        for metric, scale in (("ttft_ms", 1.0), ("tpot_ms", 1.0), ("e2e_ms", 1e-3)):
            for pct in ("p50", "p90", "p99"):
                value = chart.data[(chart.data["level"] == level["phase"]) & (chart.data["metric"] == metric)
                                   & (chart.data["percentile"] == pct)]["value"].item()
                assert value == pytest.approx(level[metric][pct] * scale, rel=1e-12)
    ttft_ax, tpot_ax, _ = chart.figure.axes[:3]
    # --slo ttft=50ms,tpot=5ms: one horizontal line at 50 on the TTFT panel, at 5 on the TPOT panel
    assert any(tuple(line.get_ydata()) == (50.0, 50.0) for line in ttft_ax.get_lines())
    assert any(tuple(line.get_ydata()) == (5.0, 5.0) for line in tpot_ax.get_lines())


def test_cdf_curves_are_the_values_the_summary_percentiles_came_from(runs, one):
    data = one.chart("latency_cdf").data
    for level in _summary(runs["a"]):
        for metric in ("ttft_ms", "itl_ms"):
            curve = data[(data["level"] == level["phase"]) & (data["metric"] == metric)]
            assert (curve["kind"] == "values").all()  # few values: the exact empirical CDF
            x = curve["x"].to_numpy()
            for pct in ("p50", "p90", "p99"):
                assert np.percentile(x, int(pct[1:])) == pytest.approx(level[metric][pct], rel=1e-12), (metric, pct)
            assert curve["x"].is_monotonic_increasing
            np.testing.assert_allclose(curve["q"], np.arange(1, len(x) + 1) / len(x))
        assert curve["n"].iloc[0] == len(curve)


def test_many_values_are_drawn_through_quantiles_that_cross_the_percentiles_exactly():
    from bench.report.distributions import cdf_points
    from bench.stats import describe
    values = np.random.default_rng(7).lognormal(3.0, 0.5, 5000)
    x, q, steps = cdf_points(values)
    assert not steps and len(x) == 401
    stats = describe(values)
    for quantile, pct in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        assert x[np.isclose(q, quantile)].item() == pytest.approx(stats[pct], rel=1e-12)


def test_timeline_series_are_the_samples_and_the_levels_are_shaded(runs, one):
    chart = one.chart("timeline")
    samples = pd.read_csv(runs["a"] / "samples.csv")
    ram = chart.data[chart.data["column"] == "host_ram_used_bytes"]["value"].to_numpy()
    np.testing.assert_allclose(ram, samples["host_ram_used_bytes"].to_numpy() / 1e9)
    flight = chart.data[chart.data["panel"] == "in_flight"]["value"].to_numpy()
    np.testing.assert_array_equal(flight, samples["in_flight"].to_numpy())
    phases = json.loads((runs["a"] / "run.json").read_text())["phases"]
    first = chart.figure.axes[0]
    shaded = [p for ax in chart.figure.axes for p in ax.patches if p.get_width() > 0]
    assert len(shaded) == len(phases) * len([a for a in chart.figure.axes if a is not first and a.get_ylabel() ==
                                              "in flight"])
    assert {t.get_text() for t in first.texts} >= {p["label"] for p in phases}
    assert any("GPU memory used" in n for n in chart.notes)  # no GPU here: the panel is left out and said so


def test_gpu_panels_plot_the_gpu_columns():
    t = np.arange(6) * 0.5
    samples = pd.DataFrame({"t_s": t, "in_flight": [0, 1, 4, 4, 1, 0],
                            "gpu0_mem_used_bytes": [70e9, 71e9, 72e9, 72e9, 71e9, 70e9],
                            "gpu1_mem_used_bytes": [60e9] * 6, "gpu_mem_used_bytes_total": [130e9, 131e9, 132e9,
                                                                                             132e9, 131e9, 130e9],
                            "gpu0_util_pct": [0, 50, 100, 100, 50, 0], "gpu1_util_pct": [0, 40, 90, 90, 40, 0]})
    phases = pd.DataFrame({"level": ["c=1", "c=4"], "start_s": [0.4, 1.1], "end_s": [1.0, 2.4]})
    chart = timeline_chart(samples, phases, "test run")
    panels = list(dict.fromkeys(chart.data["panel"]))
    assert panels[:3] == ["in_flight", "GPU memory used", "GPU utilisation (a kernel was running)"]
    total = chart.data[chart.data["column"] == "gpu_mem_used_bytes_total"]["value"].to_numpy()
    np.testing.assert_allclose(total, [130, 131, 132, 132, 131, 130])  # GB = 1e9 bytes
    assert chart.notes == [("not in this run's telemetry: host RAM used, server process RES (with its children), "
                           "KV cache usage (server metrics)")]
    assert timeline_chart(samples[["t_s", "in_flight"]], phases, "no data") is None


# -- comparing runs --------------------------------------------------------------------------------------------

def test_runs_are_named_by_label_endpoint_model_and_hardware_and_keep_their_colour(two):
    names = [r.name for r in two.runs]
    assert names == ["a: simulated endpoint · gpucap-sim · no GPU (simulated)",
                     "b: simulated endpoint · gpucap-sim · 1x H100"]
    colours = {}
    for chart in (two.chart("throughput"), two.chart("latency")):
        legend_texts = [t.get_text() for legend in chart.figure.legends for t in legend.get_texts()]
        assert set(names) <= set(legend_texts)
        for legend in chart.figure.legends:
            for handle, text in zip(legend.legend_handles, legend.get_texts()):
                if text.get_text() in names:
                    assert colours.setdefault(text.get_text(), handle.get_color()) == handle.get_color()
    assert len(set(colours.values())) == 2
    assert two.chart("latency").figure.get_suptitle().endswith("\n2 runs compared: simulated endpoint · gpucap-sim")


def test_pareto_front_worked_example():
    # (per-request tok/s, aggregate tok/s): (100, 100) is beaten by (150, 400) on both axes; the others trade off
    points = np.array([[200.0, 200.0], [150.0, 400.0], [100.0, 100.0], [50.0, 900.0]])
    assert list(pareto_front(points, "higher")) == [0, 1, 3]
    # (TTFT ms, aggregate tok/s): lower TTFT is better; (80, 300) is beaten by (40, 300) at the same throughput
    points = np.array([[20.0, 100.0], [40.0, 300.0], [80.0, 300.0], [500.0, 900.0]])
    assert list(pareto_front(points, "lower")) == [0, 1, 3]


def test_pareto_points_are_the_levels(runs, two):
    data = two.chart("pareto").data
    level = _summary(runs["b"])[-1]
    row = data[(data["run"] == two.runs[1].name) & (data["level"] == level["phase"])
               & (data["x_metric"] == "ttft_ms_p99")]
    assert row["x"].item() == level["ttft_ms"]["p99"]
    assert row["output_tokens_per_s"].item() == level["output_tokens_per_s"]
    assert data["frontier"].any()


# -- the sizing overlay ----------------------------------------------------------------------------------------

def test_sizing_overlay_is_drawn_for_a_named_model_and_card_and_matches_sizing(runs):
    from sizing.api import plan
    from sizing.serving import estimate
    run = load_run(runs["b"])
    pred, note = predict(run, SizingTarget(model="qwen2.5-7b-instruct"))  # the card comes from '1x H100'
    assert note is None
    assert "qwen2.5-7b-instruct bf16 on 1x h100-sxm" in pred.description
    levels = run.levels
    n_in = round(sum(lv["input_tokens"]["mean"] * lv["ok"] for lv in levels) / sum(lv["ok"] for lv in levels))
    n_out = sum(lv["output_tokens"]["mean"] * lv["ok"] for lv in levels) / sum(lv["ok"] for lv in levels)
    p = plan("qwen2.5-7b-instruct", "h100", gpus=1, input_len=n_in, output_len=round(n_out))
    for c in (1, 4):
        e = estimate(p.evaluation.perf, c, p.max_concurrency, n_in, round(n_out), None)
        row = pred.table[pred.table["concurrency"] == c]
        assert row["measured_level"].item()
        assert row["output_tokens_per_s"].item() == pytest.approx(e.output_tokens_per_s)
        # per request on the measured definition N / E2E, E2E = TTFT + (N - 1) x TPOT
        assert row["per_request_output_tokens_per_s"].item() == pytest.approx(
            n_out / (e.ttft_s + (n_out - 1) * e.tpot_s))
    report = build_report([run], sizing=SizingTarget(model="qwen2.5-7b-instruct"))
    sizing_rows = report.chart("throughput").data.query("source == 'sizing'")
    assert len(sizing_rows) == 2 * len(pred.table)
    legend = [t.get_text() for lg in report.chart("throughput").figure.legends for t in lg.get_texts()]
    assert any(text.startswith("predicted (sizing: qwen2.5-7b-instruct") for text in legend)


def test_sizing_overlay_reads_hardware_and_model_from_run_json_or_says_why_not(runs, tmp_path):
    run = tmp_path / "vllm-like"
    shutil.copytree(runs["b"], run)
    config = json.loads((run / "run.json").read_text())
    config["target"].update(simulated=False, model="Qwen/Qwen2.5-7B-Instruct", base_url="http://10.0.0.5:8000/v1")
    config["hardware"] = "4x V100-32G"
    (run / "run.json").write_text(json.dumps(config))
    data = load_run(run)
    assert data.name == "b: 10.0.0.5 · Qwen/Qwen2.5-7B-Instruct · 4x V100-32G"
    pred, note = predict(data)
    assert note is None and "on 4x v100-32g-sxm2" in pred.description
    config["hardware"] = "2x Imaginary-GPU"
    (run / "run.json").write_text(json.dumps(config))
    pred, note = predict(load_run(run))
    assert pred is None and "unknown GPU 'Imaginary-GPU'" in note
    pred, note = predict(load_run(runs["a"]))  # the simulated endpoint has no model on a GPU
    assert pred is None and "simulated endpoint runs no model" in note
    assert not build_report(load_runs([runs["a"]])).chart("throughput").data.query("source == 'sizing'").shape[0]


# -- bad input and damaged runs --------------------------------------------------------------------------------

def test_a_folder_that_is_not_a_run_is_one_sentence_exit_2_no_traceback(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "missing", tmp_path / "empty", runs["a"] / "run.json"):
        proc = subprocess.run([sys.executable, "-m", "bench.report", str(runs["a"]), str(bad), "--out",
                               str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=60,
                              check=False)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and f"RUN_DIR {bad} is not a bench run folder" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_cli_writes_the_report_and_prints_where(runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.report", str(runs["a"]), str(runs["b"]), "--out",
                           str(tmp_path / "cmp"), "--no-svg"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"Report: {tmp_path / 'cmp' / 'report.html'}" in proc.stdout
    pngs = sorted(p.name for p in (tmp_path / "cmp").glob("*.png"))
    assert pngs == ["latency.png", "latency_cdf.png", "pareto.png", "throughput.png", "timeline_1.png",
                    "timeline_2.png"]
    assert not list((tmp_path / "cmp").glob("*.svg"))


def test_bad_json_and_a_missing_summary(runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs["a"], broken)
    (broken / "run.json").write_text("{not json")
    with pytest.raises(NotARunError, match="run.json cannot be read"):
        load_run(broken)
    crashed = tmp_path / "crashed"
    shutil.copytree(runs["a"], crashed)
    (crashed / "summary.json").unlink()
    data = load_run(crashed)  # a run killed before its summary: re-derived from requests.jsonl
    assert data.summary_rederived
    original = _summary(runs["a"])
    assert [lv["output_tokens_per_s"] for lv in data.levels] == [lv["output_tokens_per_s"] for lv in original]
    report = build_report([data])
    assert any("re-derived" in n for n in report.notes)
    write_report(report, tmp_path / "rep", formats=("png",))
    assert (tmp_path / "rep" / "throughput.png").is_file()


def test_failed_requests_are_said_and_a_level_with_no_success_draws_no_empty_axis(make_sim, tmp_path):
    from bench.sim import FaultRule
    half = make_sim(ttft_ms=2, itl_ms=1, faults=(FaultRule("status", status=500, probability=0.5),), seed=1)
    dead = make_sim(ttft_ms=2, itl_ms=1, faults=(FaultRule("status", status=500, probability=1.0),))
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "run", "--base-url", sim.url, "--concurrency", "2",
                               "--num-requests", "12", "--output-len", "4", "--no-progress", "--no-telemetry",
                               "--label", label, "--out", str(tmp_path / label)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for sim, label in ((half, "half"), (dead, "dead"))]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    half_level = _summary(tmp_path / "half")[0]
    assert 0 < half_level["ok"] < 12
    report = build_report(load_runs([tmp_path / "half"]))
    texts = [t.get_text() for t in report.chart("throughput").figure.axes[0].texts]
    assert texts == [f"{12 - half_level['ok']}/12 failed"]
    dead_report = build_report(load_runs([tmp_path / "dead"]))
    for chart in dead_report.charts:
        for ax in chart.figure.axes:
            drawn = ax.get_lines() or ax.texts or ax.patches or ax.collections
            assert drawn, f"{chart.name}: an empty axis"
    assert "no request succeeded" in dead_report.chart("throughput").figure.axes[0].texts[0].get_text()
    write_report(dead_report, tmp_path / "dead-report", formats=("png",))
    assert (tmp_path / "dead-report" / "latency_cdf.png").is_file()

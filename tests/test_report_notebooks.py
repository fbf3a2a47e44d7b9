"""Both notebooks run top to bottom in a real Jupyter kernel (nbclient + ipykernel) on a results folder this test
makes with `python -m bench run` against the simulated endpoint, and draw the figures they promise."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the jupyter extra: pip install '.[jupyter]'")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the jupyter extra: pip install '.[jupyter]'")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder holding one small run of the simulated endpoint."""
    results = tmp_path_factory.mktemp("results")
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--concurrency", "1,4,8", "--num-requests", "8",
                           "--output-len", "8", "--sim-ttft-ms", "10", "--sim-itl-ms", "2", "--sample-interval",
                           "0.05", "--label", "nb-test", "--no-progress", "--out", str(results / "nb-test")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return results


def _execute(name: str, parameters: str) -> nbformat.NotebookNode:
    """Run the notebook with its parameter cell (the one tagged 'parameters') replaced by `parameters`."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = parameters
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails
    return nb


def _images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.outputs)


@pytest.mark.parametrize("name", ["bench_report.ipynb", "sizing_explorer.ipynb"])
def test_notebooks_are_stored_without_outputs_and_start_with_parameters(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def test_bench_report_notebook_shows_every_chart_of_a_fresh_run(results, tmp_path):
    out = tmp_path / "report"
    nb = _execute("bench_report.ipynb", f"runs = [{str(results / 'nb-test')!r}]\nout_dir = {str(out)!r}\n"
                                        "sizing_model = 'qwen2.5-7b-instruct'\nsizing_gpu = 'h100'\nsizing_gpus = 1")
    # throughput, latency, latency_cdf, pareto and one timeline (no capacity search: a line instead)
    assert _images(nb) == 5
    assert {p.name for p in out.glob("*.png")} == {"throughput.png", "latency.png", "latency_cdf.png",
                                                    "pareto.png", "timeline.png"}
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 5
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "sizing: qwen2.5-7b-instruct bf16 on 1x h100-sxm" in text  # the overlay was drawn


def test_bench_report_notebook_shows_a_capacity_search(tmp_path):
    run = tmp_path / "cap"
    proc = subprocess.run([sys.executable, "-m", "bench", "capacity", "--slo", "ttft=60ms", "--limit", "8",
                           "--sim-max-batch", "2", "--num-requests", "6", "--output-len", "8", "--sim-ttft-ms", "20",
                           "--sim-itl-ms", "5", "--no-progress", "--no-telemetry", "--out", str(run)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nb = _execute("bench_report.ipynb", f"runs = [{str(run)!r}]\nout_dir = None\nsizing_model = None\n"
                                        "sizing_gpu = None\nsizing_gpus = None")
    cell = next(c for c in nb.cells if c.cell_type == "code" and 'report.chart("capacity")' in c.source)
    assert any("image/png" in o.get("data", {}) for o in cell.outputs)
    assert "concurrent requests" in "".join(o.get("text", "") for o in cell.outputs)


def test_sizing_explorer_notebook_draws_its_four_charts(tmp_path):
    out = tmp_path / "sizing"
    nb = _execute("sizing_explorer.ipynb",
                  "models = ['qwen2.5-7b-instruct', 'llama-3.1-70b-instruct']\ngpus = ['l40s', 'h100-sxm']\n"
                  "quants = [None, 'awq']\nfocus_model = 'llama-3.1-70b-instruct'\nconcurrency = [1, 8, 64]\n"
                  f"input_len, output_len = 512, 256\nout_dir = {str(out)!r}")
    assert _images(nb) == 4
    assert {p.name for p in out.glob("*.png")} == {"sizing_gpus_needed.png", "sizing_memory.png",
                                                    "sizing_throughput.png", "sizing_cost.png"}

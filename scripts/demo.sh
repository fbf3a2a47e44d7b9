#!/usr/bin/env bash
# Install gpucap into .venv and run the main job: a bench run sweep at concurrency 1, 10, 100 against the built-in
# simulated endpoint (no GPU, no network needed), ending with an HTML report. Extra arguments go to `bench run`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/bench run --concurrency 1,10,100 --report "$@"

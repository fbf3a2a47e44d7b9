#!/usr/bin/env bash
# Install gpucap with its test extras into .venv and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,jupyter]'
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Sets up .venv on a fresh machine: the CPU build of torch 2.13.0 first (an unpinned torch would pull
# gigabytes of CUDA packages), then this project with the extras the tests and the math pipeline need.
# Idempotent: re-running it only installs what is missing.  Usage: bash scripts/setup.sh [EXTRAS]
# (default math,test,cluster: Ray is installed so the tests of the Ray executor run in CI.)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-math,test,cluster}"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[${extras}]"

#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): one GPU, a few minutes, one JSON object on the last line.
#   bench/gpu_check.sh               exits 2 with an error: line when torch sees no CUDA GPU
#   bench/gpu_check.sh --cpu-smoke   the same code at tiny shapes on the CPU
# PYTHON picks the interpreter; default: the project's .venv, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" bench/gpu_check.py "$@"

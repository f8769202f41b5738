#!/bin/bash
# Determined runs this in every task container before the trial starts. The task image provides
# torch built for its CUDA; this adds what the trial needs on top, without touching that torch.
set -euo pipefail
grep -v -E '^(torch|determined)==' requirements.txt | python3 -m pip install --quiet -r /dev/stdin

#!/bin/bash
# Determined runs this in every task container before the trial starts. The task image provides
# PyTorch built for its CUDA (and Determined itself); this adds what the trial needs on top, never
# replacing either. task_image.py picks the pinned set that fits the image: requirements.txt
# (Python >= 3.11 and PyTorch >= 2.6) or requirements-oldest.txt (Python >= 3.10, PyTorch >= 2.3,
# such as Determined 0.38's default image), and refuses, naming what is missing, where none fits.
set -euo pipefail
requirements=$(python3 task_image.py)
grep -v -E '^(torch|determined)==' "$requirements" | python3 -m pip install --quiet -r /dev/stdin
python3 -c 'import sys, sentencepiece; from transformers.utils import is_torch_available; sys.exit(not is_torch_available())' || {
    echo "startup-hook.sh: after installing $requirements, transformers cannot use this image's PyTorch" \
         "($(python3 -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)); README, section \"Task image\"." >&2
    exit 1
}

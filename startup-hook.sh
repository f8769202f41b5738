#!/bin/bash
# Determined runs this in every task container before the trial starts. The task image provides
# torch built for its CUDA; this adds what the trial needs on top, without touching that torch.
# The image must have Python >= 3.11 and PyTorch >= 2.6 (transformers 5 needs both); Determined
# 0.38's default image does not (README: "Task image"), so the check comes first and says so.
set -euo pipefail
fail() {
    echo "startup-hook.sh: this task image has $1. The trial needs Python >= 3.11 and PyTorch >= 2.6" \
         "(transformers 5). Set environment.image in the experiment config to an image that has them;" \
         "README, section \"Task image\", shows how to build one." >&2
    exit 1
}
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "Python $(python3 -V 2>&1)"
grep -v -E '^(torch|determined)==' requirements.txt | python3 -m pip install --quiet -r /dev/stdin
python3 -c 'import sys; from transformers.utils import is_torch_available; sys.exit(not is_torch_available())' \
    || fail "PyTorch $(python3 -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null || echo 'not installed')"

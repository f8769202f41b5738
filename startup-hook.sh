#!/bin/bash
# Determined runs this in every task container before the trial starts. Its entrypoint SOURCES it
# (Determined 0.38.1, master/static/srv/entrypoint.sh: `set -e`, `set -x`, then
# `test -f startup-hook.sh && source startup-hook.sh`), so this file must not exit, set shell
# options or leave variables behind: one command, whose failure stops the task under `set -e`.
# task_image.py installs what the trial needs that the image lacks and changes nothing the image has,
# from the wheelhouse $SQUAD_WHEELHOUSE (default /mnt/data/wheelhouse) when there is one, else from
# PyPI; README, sections "Task image" and "Offline clusters".
"${DET_PYTHON_EXECUTABLE:-python3}" task_image.py install

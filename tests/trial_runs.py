"""Running the trial as a user does (model_def.py in a subprocess, under torchrun for several
processes) and reading what it wrote: shared by the end-to-end tests."""

import glob
import json
import os
import subprocess
import sys

import torch
import yaml
from conftest import ROOT

METRIC_KEYS = {
    "exact",
    "f1",
    "total",
    "HasAns_exact",
    "HasAns_f1",
    "HasAns_total",
    "NoAns_exact",
    "NoAns_f1",
    "NoAns_total",
    "best_exact",
    "best_exact_thresh",
    "best_f1",
    "best_f1_thresh",
}


def write_config(tmp_path, squad_files, tiny_model, name="config.yaml", slots=1, **hparams):
    with open(os.path.join(ROOT, "configs", "local_tiny.yaml")) as f:
        config = yaml.safe_load(f)
    config["data"].update(
        train_file=squad_files[0],
        validation_file=squad_files[1],
        cache_dir=str(tmp_path.parent / "feature-cache"),
    )
    config["hyperparameters"].update(
        {
            "pretrained_model_name": tiny_model,
            "global_batch_size": 8,
            "max_seq_length": 128,
            "doc_stride": 32,
            "reporting_period_batches": 2,
            "learning_rate": 1e-3,
            **hparams,
        }
    )
    config["resources"]["slots_per_trial"] = slots
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def torchrun(processes):
    """The launcher for `processes` local gloo processes (torchrun, one machine)."""
    return (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    )


def run(args, out_dir, launcher=(sys.executable,)):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, os.path.join(ROOT, "model_def.py"), *args, "--output-dir", str(out_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def checkpoints(out_dir):
    """{steps_completed: [checkpoint dirs]} in creation order."""
    found = {}
    for d in sorted(glob.glob(os.path.join(out_dir, "determined", "*")), key=os.path.getmtime):
        with open(os.path.join(d, "metadata.json")) as f:
            found.setdefault(json.load(f)["steps_completed"], []).append(d)
    return found


def weights(checkpoint_dir):
    state = torch.load(
        os.path.join(checkpoint_dir, "state_dict.pth"), map_location="cpu", weights_only=False
    )
    # A DistributedDataParallel model's keys carry a "module." prefix.
    return {k.removeprefix("module."): v for k, v in state["models_state_dict"][0].items()}

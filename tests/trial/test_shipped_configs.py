"""Each shipped cluster config runs, scaled down: only the model (tiny), the data (generated), the
sequence lengths, the slots (2 processes where the config has more than 1, the same per-slot
batch), the storage (no bind mount) and the length (a couple of dozen batches) change; every other
hyperparameter is kept, search ranges take a member (their lower bound), and each period keeps its
relation to the length (a checkpoint period that divides the length still does)."""

import glob
import math
import os
import sys

import pytest
import yaml
from conftest import ROOT
from trial_runs import METRIC_KEYS, checkpoints, run, torchrun

SQUAD_TRAIN_QUESTIONS = 130_319  # SQuAD 2.0 train: an epoch in batches, near enough for the ratios
LENGTH = 24  # batches, rounded up to a multiple of aggregation_frequency
PERIODS = ("reporting_period_batches", "validation_period_batches", "checkpoint_period_batches")
CLUSTER_CONFIGS = sorted(
    os.path.basename(p)
    for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml"))
    if "searcher" in yaml.safe_load(open(p)) and "bind_mounts" in yaml.safe_load(open(p))
)


def member(value):
    """A constant from a search range: the lower bound, or the first of the categorical values."""
    if not isinstance(value, dict):
        return value
    if value["type"] == "categorical":
        return value["vals"][0]
    if value["type"] == "log":
        return value["base"] ** value["minval"]
    if value["type"] == "const":
        return value["val"]
    return value["minval"]


def scale_period(period, total, length, agg):
    """`period` of `total` batches as a period of `length`: the same fraction, a multiple of
    aggregation_frequency, dividing the length exactly when it divided the total."""
    if not period:
        return period
    scaled = max(agg, agg * round(period * length / total / agg))
    while (length % scaled == 0) != (total % period == 0):
        scaled += agg
    return scaled


def scaled_down(name, squad_files, tiny_model, cache_dir):
    with open(os.path.join(ROOT, "configs", name)) as f:
        config = yaml.safe_load(f)
    hp = {k: member(v) for k, v in config["hyperparameters"].items()}
    slots = config["resources"]["slots_per_trial"]
    per_slot = hp["global_batch_size"] // slots
    processes = 2 if slots > 1 else 1
    agg = hp["aggregation_frequency"]
    total = hp.get("max_batches") or hp["epochs"] * math.ceil(
        SQUAD_TRAIN_QUESTIONS / hp["global_batch_size"]
    )
    length = agg * math.ceil(LENGTH / agg)
    for key in PERIODS:
        hp[key] = scale_period(hp[key], total, length, agg)
    hp.pop("epochs", None)
    hp.update(
        max_batches=length,
        global_batch_size=per_slot * processes,
        pretrained_model_name=tiny_model,
        max_seq_length=128,
        doc_stride=32,
        max_query_length=32,
    )
    config["hyperparameters"] = hp
    config["resources"]["slots_per_trial"] = processes
    config.pop("bind_mounts")
    config["data"] = {
        **config["data"],
        "train_file": squad_files[0],
        "validation_file": squad_files[1],
        "use_bind_mount": False,
        "cache_dir": cache_dir,
    }
    config["data"].pop("bind_mount_path")
    if "max_time" in config["searcher"]:
        config["searcher"]["max_time"] = length
    return config, processes


def test_scaling_keeps_the_periods_relations():
    # search_asha: checkpoints every 1500 of 16500 batches (divides), validates every 504 (does not).
    assert scale_period(1500, 16500, 24, 2) == 2 and 24 % 2 == 0
    assert 24 % scale_period(504, 16500, 24, 2) != 0
    assert 48 % scale_period(24000, 130319, 48, 24) != 0  # const.yaml: it does not divide either
    assert scale_period(0, 100, 24, 2) == 0


@pytest.mark.slow
# About 6 min in all with the machine busy (4 runs, 3 of them 2 processes): the only test that runs
# the shipped configs' own hyperparameters (aggregation 24, RAdam at 2e-4, the search's periods).
@pytest.mark.parametrize("name", CLUSTER_CONFIGS)
def test_shipped_config_runs_scaled_down(tmp_path, squad_files, tiny_model, name):
    config, processes = scaled_down(
        name, squad_files, tiny_model, str(tmp_path.parent / "feature-cache")
    )
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    launcher = torchrun(2) if processes > 1 else (sys.executable,)
    metrics, _ = run(["--config", str(path)], tmp_path / "out", launcher=launcher)
    assert METRIC_KEYS <= set(metrics) and metrics["total"] == 120
    length = config["hyperparameters"]["max_batches"]
    assert max(checkpoints(tmp_path / "out")) == length

"""Every shipped config loads, is valid for Determined 0.38 (script-style entrypoint, no deprecated
keys), carries the original example's hyperparameters, and the context directory stays small."""

import glob
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT
from hook_shell import source_hook

import errors
import settings
import task_image

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
DEPRECATED = {
    "min_validation_period",
    "min_checkpoint_period",
    "records_per_epoch",
    "optimizations",
    "batches_per_step",
    "scheduling_unit",
}


def load(name):
    with open(os.path.join(ROOT, "configs", name)) as f:
        return yaml.safe_load(f)


def trial_hyperparameters(raw):
    """Plain hyperparameter sets a trial of this config may start with: each search range at both
    ends, each categorical choice."""

    def ends(v):
        if not isinstance(v, dict):
            return [v]
        if v["type"] == "const":
            return [v["val"]]
        if v["type"] == "categorical":
            return v["vals"]
        if v["type"] == "log":
            return [v["base"] ** v["minval"], v["base"] ** v["maxval"]]
        return [v["minval"], v["maxval"]]

    return [
        {**{k: ends(v)[0] for k, v in raw.items()}, k: choice}
        for k in raw
        for choice in ends(raw[k])
    ]


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_valid_for_determined_038(path):
    with open(path) as f:
        config = yaml.safe_load(f)
    assert (
        config["entrypoint"]
        == "python3 -m determined.launch.torch_distributed python3 model_def.py"
    )
    assert not DEPRECATED & set(config), DEPRECATED & set(config)
    assert "max_length" not in config["searcher"]
    assert config["searcher"]["metric"] == "f1" and config["searcher"]["smaller_is_better"] is False
    # The values a trial can get pass the settings' rules: range ends and every categorical choice.
    for hp in trial_hyperparameters(config["hyperparameters"]):
        settings.hyperparameters(hp, slots=config["resources"]["slots_per_trial"])
    for key in ("train_file", "validation_file", "use_bind_mount"):
        assert key in config["data"]


@pytest.mark.parametrize(
    "name, slots, gbs, agg, optimizer, lr",
    [
        ("const.yaml", 1, 2, 24, "adamw", 5e-5),
        ("distributed_8gpu.yaml", 8, 16, 3, "adamw", 5e-5),
        ("distributed_64gpu.yaml", 64, 128, 2, "radam", 2e-4),
    ],
)
def test_cluster_configs_match_original_example(name, slots, gbs, agg, optimizer, lr):
    config = load(name)
    hp = config["hyperparameters"]
    assert config["resources"]["slots_per_trial"] == slots
    assert (hp["global_batch_size"], hp["aggregation_frequency"], hp["optimizer"]) == (
        gbs,
        agg,
        optimizer,
    )
    assert hp["learning_rate"] == pytest.approx(lr)
    expected = {
        "pretrained_model_name": "albert-xxlarge-v2",
        "warmup_fraction": 0.1,
        "epochs": 2,
        "max_seq_length": 384,
        "doc_stride": 128,
        "max_query_length": 64,
        "n_best_size": 20,
        "max_answer_length": 30,
        "do_lower_case": True,
        "adam_epsilon": 1e-8,
        "weight_decay": 0.0,
    }
    assert {k: hp[k] for k in expected} == expected
    assert config["data"]["use_bind_mount"] and config["data"]["bind_mount_path"] == "/mnt/data"
    assert [m["container_path"] for m in config["bind_mounts"]] == ["/mnt/data"]
    assert config["data"]["train_file"].startswith("https://")


def test_search_ranges_rejected_locally():
    hp = {"learning_rate": {"type": "log", "base": 10, "minval": -5, "maxval": -3}}
    with pytest.raises(errors.ConfigError, match="learning_rate: a 'log' search range"):
        settings.hyperparameters(hp)
    typed = settings.hyperparameters({"epochs": {"type": "const", "val": 3}, "seed": 4})
    assert (typed["epochs"], typed["seed"]) == (3, 4)


def test_context_directory_small_and_complete():
    from determined.common import context

    files = {f.path for f in context.read_v1_context(pathlib.Path(ROOT))}
    for needed in (
        "model_def.py",
        "data.py",
        "qa_features.py",
        "qa_pipeline.py",
        "constants.py",
        "postprocess.py",
        "squad_eval.py",
        "startup-hook.sh",
        "requirements.txt",
        "configs/const.yaml",
        "training.py",
        "evaluation.py",
        "callbacks.py",
        "cache.py",
        "samplers.py",
        "models.py",
        "squad_file.py",
        "files.py",
        "errors.py",
        "settings.py",
    ):
        assert needed in files
    assert not any(f.startswith(("tests", ".venv", "generated", "outputs", ".git/")) for f in files)


CLUSTER_CONFIGS = (
    "const.yaml",
    "distributed_8gpu.yaml",
    "distributed_64gpu.yaml",
    "search_asha.yaml",
)
# What the cluster configs may set differently: their scale (slots, batch, aggregation, optimizer
# and its learning rate, the periods that follow from them), the search and their names.
MAY_DIFFER = {
    "name",
    "description",
    "resources.slots_per_trial",
    "searcher",
    "hyperparameters.global_batch_size",
    "hyperparameters.aggregation_frequency",
    "hyperparameters.optimizer",
    "hyperparameters.learning_rate",
    "hyperparameters.warmup_fraction",
    "hyperparameters.max_batches",
    "hyperparameters.epochs",
    "hyperparameters.zero_optimizer",
    "hyperparameters.reporting_period_batches",
    "hyperparameters.validation_period_batches",
    "hyperparameters.checkpoint_period_batches",
}


def flat(config, prefix=""):
    """{"section.key": value} down to the keys of hyperparameters, data, resources, environment."""
    out = {}
    for key, value in config.items():
        name = prefix + key
        if isinstance(value, dict) and name in (
            "hyperparameters",
            "data",
            "resources",
            "environment",
        ):
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


def test_cluster_configs_agree_where_they_must():
    """Determined takes one file per experiment, so the cluster configs repeat their common lines:
    every key they share agrees, except those of MAY_DIFFER (README, "Cluster configs")."""
    configs = {name: flat(load(name)) for name in CLUSTER_CONFIGS}
    keys = set.union(*(set(c) for c in configs.values()))
    for key in sorted(keys - MAY_DIFFER):
        values = {name: c.get(key, "<missing>") for name, c in configs.items()}
        assert len({repr(v) for v in values.values()}) == 1, (key, values)
    assert MAY_DIFFER - {"hyperparameters.max_batches", "hyperparameters.epochs"} <= keys


@pytest.mark.parametrize("name", CLUSTER_CONFIGS)
def test_hugging_face_cache_is_on_the_bind_mount(name):
    """One download of the model per cluster: HF_HOME points under the bind mount every task shares."""
    config = load(name)
    env = dict(v.split("=", 1) for v in config["environment"]["environment_variables"])
    mounts = [m["container_path"].rstrip("/") + "/" for m in config["bind_mounts"]]
    assert "HF_HOME" in env, name
    home = os.path.normpath(env["HF_HOME"])
    assert any(home.startswith(m) for m in mounts), (home, mounts)
    shared = next(m for m in config["bind_mounts"] if home.startswith(m["container_path"]))
    assert not shared.get("read_only"), "the first task must be able to write the download there"


def test_search_config_is_adaptive_asha_matching_the_training_length():
    config = load("search_asha.yaml")
    searcher, hp = config["searcher"], config["hyperparameters"]
    assert searcher["name"] == "adaptive_asha" and searcher["max_trials"] > 1
    # Trainer.fit(max_length=Batch(max_batches)) must equal the searcher's max_time in batches.
    assert searcher["time_metric"] == "batches" and searcher["max_time"] == hp["max_batches"]
    assert hp["learning_rate"]["type"] == "log" and hp["warmup_fraction"]["type"] == "double"
    assert hp["aggregation_frequency"]["type"] == "categorical"
    assert {k for k, v in hp.items() if isinstance(v, dict)} == {
        "learning_rate",
        "warmup_fraction",
        "aggregation_frequency",
    }
    with pytest.raises(errors.ConfigError, match="search range"):
        settings.resolve(config, "search_asha.yaml")


def test_startup_hook_sourced_as_determined_does(tmp_path):
    # `python3` on the PATH is not the image's Python: the hook must use $DET_PYTHON_EXECUTABLE.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text('#!/bin/sh\necho "python3 from PATH ran: $*" >&2\nexit 97\n')
    (bin_dir / "python3").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "DET_PYTHON_EXECUTABLE": sys.executable,
        "SQUAD_WHEELHOUSE": "",
    }

    import torch

    expected, _ = task_image.choose(sys.version_info, torch.__version__)
    # This environment has exactly the pins of its set: nothing to install, no network.
    ok, before, after = source_hook(env, tmp_path / "ok", then='echo "flags after the hook: $-"')
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f"{expected} fits this image (Python" in ok.stderr and "nothing to install" in ok.stderr
    assert (
        before == after
        and "set -o errexit" in after
        and "set +o nounset" in after
        and "set +o pipefail" in after
    )
    assert "flags after the hook: ehB" in ok.stdout  # `set +x` ran: the entrypoint's shell went on
    # Without DET_PYTHON_EXECUTABLE the hook falls back to python3.
    unset = {k: v for k, v in env.items() if k != "DET_PYTHON_EXECUTABLE"}
    fallback, _, _ = source_hook(unset, tmp_path / "fallback")
    assert (
        fallback.returncode == 97
        and "python3 from PATH ran: task_image.py install" in fallback.stderr
    )
    # An image with PyTorch 2.2: a torch 2.2.2 distribution first on the path. Refused before pip
    # runs; under `set -e` the entrypoint's shell stops at the hook.
    (tmp_path / "torch-2.2.2.dist-info").mkdir()
    (tmp_path / "torch-2.2.2.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torch\nVersion: 2.2.2\n"
    )
    old, _, after = source_hook(
        {**env, "PYTHONPATH": str(tmp_path)}, tmp_path / "old", then="echo trial started"
    )
    assert old.returncode == 1 and after is None and "trial started" not in old.stdout
    assert "this task image has PyTorch 2.2.2; the trial needs PyTorch 2.3 or newer" in old.stderr
    assert "environment.image" in old.stderr and "installing" not in old.stderr


@pytest.mark.parametrize(
    "python, torch_version, expected",
    [
        ((3, 9, 18), "2.3.0", None),
        ((3, 10, 12), None, None),
        ((3, 10, 12), "2.2.2+cu121", None),
        ((3, 10, 12), "2.3.0a0+40ec155e58.nv24.03", task_image.OLDEST),  # an NGC build of 2.3
        ((3, 10, 12), "2.3.1", task_image.OLDEST),
        ((3, 10, 12), "2.8.0", task_image.OLDEST),  # transformers 5 needs Python 3.11
        ((3, 11, 7), "2.5.1+cu124", task_image.OLDEST),
        (
            (3, 12, 3),
            "2.6.0a0+ecf3bae40a.nv25.01",
            task_image.OLDEST,
        ),  # transformers 5 refuses pre-release 2.6
        ((3, 11, 7), "2.6.0", task_image.NEWEST),
        ((3, 12, 3), "2.13.0+cpu", task_image.NEWEST),
    ],
)
def test_task_image_picks_the_requirement_set(python, torch_version, expected):
    name, reason = task_image.choose(python, torch_version)
    assert name == expected
    assert "Python %d.%d" % python[:2] in reason or "PyTorch" in reason


def test_requirement_sets_pin_the_same_packages_exactly_and_fit_their_own_range():
    sets = {}
    for name in (task_image.NEWEST, task_image.OLDEST):
        lines = [
            line
            for line in open(os.path.join(ROOT, name)).read().splitlines()
            if line and not line.startswith("#")
        ]
        assert all("==" in line for line in lines), name
        sets[name] = dict(line.split("==") for line in lines)
    assert set(sets[task_image.NEWEST]) == set(sets[task_image.OLDEST])
    assert "sentencepiece" in sets[task_image.NEWEST]  # converts ALBERT's spiece.model
    for name, pins in sets.items():
        assert task_image.choose((3, 11), pins["torch"])[0] == name


def test_no_file_needs_a_python_newer_than_3_10(tmp_path):
    vermin = [
        os.path.join(os.path.dirname(sys.executable), "vermin"),
        "-t=3.10-",
        "--no-tips",
        "--violations",
    ]
    files = [
        f
        for pattern in ("*.py", "tools/*.py", "bench/*.py", "tests/*.py", "tests/*/*.py")
        for f in glob.glob(os.path.join(ROOT, pattern))
    ]
    proc = subprocess.run(vermin + files, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (tmp_path / "newer.py").write_text(
        "import tomllib\n"
    )  # the check can fail: tomllib is Python 3.11
    assert (
        subprocess.run(vermin + [str(tmp_path / "newer.py")], capture_output=True).returncode != 0
    )

"""Every shipped config loads, is valid for Determined 0.38 (script-style entrypoint, no deprecated
keys), carries the original example's hyperparameters, and the context directory stays small."""
import glob
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

import model_def
from conftest import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
DEPRECATED = {"min_validation_period", "min_checkpoint_period", "records_per_epoch", "optimizations",
              "batches_per_step", "scheduling_unit"}


def load(name):
    with open(os.path.join(ROOT, "configs", name)) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_valid_for_determined_038(path):
    with open(path) as f:
        config = yaml.safe_load(f)
    assert config["entrypoint"] == "python3 -m determined.launch.torch_distributed python3 model_def.py"
    assert not DEPRECATED & set(config), DEPRECATED & set(config)
    assert "max_length" not in config["searcher"]
    assert config["searcher"]["metric"] == "f1" and config["searcher"]["smaller_is_better"] is False
    if config["searcher"]["name"] == "single":
        hp = model_def.local_hparams(config, path)
    else:
        hp = config["hyperparameters"]
    assert hp["global_batch_size"] % config["resources"]["slots_per_trial"] == 0
    for key in ("train_file", "validation_file", "use_bind_mount"):
        assert key in config["data"]


@pytest.mark.parametrize("name, slots, gbs, agg, optimizer, lr", [
    ("const.yaml", 1, 2, 24, "adamw", 5e-5),
    ("distributed_8gpu.yaml", 8, 16, 3, "adamw", 5e-5),
    ("distributed_64gpu.yaml", 64, 128, 2, "radam", 2e-4),
])
def test_cluster_configs_match_original_example(name, slots, gbs, agg, optimizer, lr):
    config = load(name)
    hp = config["hyperparameters"]
    assert config["resources"]["slots_per_trial"] == slots
    assert (hp["global_batch_size"], hp["aggregation_frequency"], hp["optimizer"]) == (gbs, agg, optimizer)
    assert hp["learning_rate"] == pytest.approx(lr)
    expected = {"pretrained_model_name": "albert-xxlarge-v2", "warmup_fraction": 0.1, "epochs": 2,
                "max_seq_length": 384, "doc_stride": 128, "max_query_length": 64, "n_best_size": 20,
                "max_answer_length": 30, "do_lower_case": True}
    assert {k: hp[k] for k in expected} == expected
    assert config["data"]["use_bind_mount"] and config["data"]["bind_mount_path"] == "/mnt/data"
    assert [m["container_path"] for m in config["bind_mounts"]] == ["/mnt/data"]
    assert config["data"]["train_file"].startswith("https://")


def test_search_ranges_rejected_locally():
    config = {"hyperparameters": {"learning_rate": {"type": "log", "base": 10, "minval": -5, "maxval": -3}}}
    with pytest.raises(ValueError, match="learning_rate is a 'log' search range"):
        model_def.local_hparams(config, "x.yaml")
    assert model_def.local_hparams({"hyperparameters": {"a": {"type": "const", "val": 3}, "b": 4}}, "x") == {"a": 3, "b": 4}


def test_context_directory_small_and_complete():
    from determined.common import context

    files = {f.path for f in context.read_v1_context(pathlib.Path(ROOT))}
    for needed in ("model_def.py", "data.py", "qa_features.py", "qa_pipeline.py", "constants.py", "postprocess.py", "squad_eval.py",
                   "startup-hook.sh", "requirements.txt", "configs/const.yaml"):
        assert needed in files
    assert not any(f.startswith(("tests", ".venv", "generated", "outputs", ".git/")) for f in files)


def test_search_config_is_adaptive_asha_matching_the_training_length():
    config = load("search_asha.yaml")
    searcher, hp = config["searcher"], config["hyperparameters"]
    assert searcher["name"] == "adaptive_asha" and searcher["max_trials"] > 1
    # Trainer.fit(max_length=Batch(max_batches)) must equal the searcher's max_time in batches.
    assert searcher["time_metric"] == "batches" and searcher["max_time"] == hp["max_batches"]
    assert hp["learning_rate"]["type"] == "log" and hp["warmup_fraction"]["type"] == "double"
    assert hp["aggregation_frequency"]["type"] == "categorical"
    assert {k for k, v in hp.items() if isinstance(v, dict)} == {"learning_rate", "warmup_fraction", "aggregation_frequency"}
    with pytest.raises(ValueError, match="search range"):
        model_def.local_hparams(config, "search_asha.yaml")


def test_startup_hook_installs_and_refuses_an_image_transformers_cannot_use(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}

    def hook(**extra):
        return subprocess.run(["bash", "startup-hook.sh"], cwd=ROOT, env={**env, **extra}, capture_output=True,
                              text=True, timeout=600)

    ok = hook()  # this environment already has every pin: pip has nothing to fetch
    assert ok.returncode == 0, ok.stderr[-2000:]
    # An image with PyTorch 2.3 (Determined 0.38's default): a torch 2.3.0 distribution first on the path.
    (tmp_path / "torch-2.3.0.dist-info").mkdir()
    (tmp_path / "torch-2.3.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.3.0\n")
    old = hook(PYTHONPATH=str(tmp_path))
    assert old.returncode == 1
    assert "this task image has PyTorch 2.3.0" in old.stderr and "environment.image" in old.stderr

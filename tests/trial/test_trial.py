"""The real trial through Determined's local-mode Trainer, in subprocesses as a user runs it:
a few batches with metrics, outputs and checkpoints; resume; and 2 processes under torchrun."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT
from trial_runs import METRIC_KEYS, checkpoints, run, torchrun, weights, write_config


def test_local_run_reports_metrics_and_writes_outputs(tmp_path, squad_files, tiny_model):
    out = tmp_path / "out"
    metrics, log = run(
        ["--config", write_config(tmp_path, squad_files, tiny_model, max_batches=6)], out
    )
    assert METRIC_KEYS <= set(metrics)
    assert metrics["total"] == 120 and 0 <= metrics["f1"] <= 100
    for key in ("loss", "lr", "grad_norm", "examples_per_s", "tokens_per_s"):
        assert f"'{key}'" in log
    predictions = out / "predictions" / "batch_6"
    for name in ("predictions.json", "nbest_predictions.json", "null_odds.json", "metrics.json"):
        assert (predictions / name).is_file()
    assert len(json.loads((predictions / "predictions.json").read_text())) == 120
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "Determined/loss",
        "Determined/grad_norm",
        "Determined/tokens_per_s",
        "Determined/val_f1",
        "Determined/val_best_f1",
    } <= tags
    assert events.Scalars("Determined/val_f1")[-1].value == pytest.approx(metrics["f1"])
    # The official evaluation's curves and histograms: metrics, PNGs beside the predictions, TensorBoard images.
    assert {"pr_exact_ap", "pr_f1_ap", "pr_oracle_ap"} <= set(
        metrics
    ) and "Determined/val_pr_f1_ap" in tags
    for name in ("pr_exact", "pr_f1", "pr_oracle", "na_prob_hist_hasAns", "na_prob_hist_noAns"):
        assert (predictions / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"squad/{name}" in events.Tags()["images"]
    # The same APs as the evaluation program gives on the written files.
    cli = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "squad_eval.py"),
            squad_files[1],
            str(predictions / "predictions.json"),
            "-n",
            str(predictions / "null_odds.json"),
            "-p",
            str(tmp_path / "images"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    official = json.loads(cli.stdout)
    assert all(
        official[k] == pytest.approx(metrics[k])
        for k in ("pr_exact_ap", "pr_f1_ap", "pr_oracle_ap")
    )
    (final,) = checkpoints(out)[6]
    # The final validation's predictions reach checkpoint storage in the final checkpoint.
    assert json.loads(
        open(os.path.join(final, "predictions", "predictions.json")).read()
    ) == json.loads((predictions / "predictions.json").read_text())
    # Only event files in the TensorBoard directory: Determined uploads its other files once per rank.
    assert all("tfevents" in f for _, _, files in os.walk(out / "tensorboard") for f in files)


def test_resume_continues_where_it_stopped(tmp_path, squad_files, tiny_model):
    """8 batches straight vs. the same run's checkpoint at batch 4 resumed for the last 4."""
    out = tmp_path / "out"
    config = write_config(
        tmp_path, squad_files, tiny_model, max_batches=8, checkpoint_period_batches=4
    )
    straight, _ = run(["--config", config], out)
    (half,), (full,) = checkpoints(out)[4], checkpoints(out)[8]
    resumed, log = run(["--config", config, "--resume", half], out)
    assert "Restoring trial from checkpoint" in log
    resumed_full = [d for d in checkpoints(out)[8] if d != full][0]
    a, b = weights(full), weights(resumed_full)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    assert resumed["f1"] == pytest.approx(straight["f1"], abs=1e-6)


def test_two_processes_match_one(tmp_path, squad_files, tiny_model):
    """Same global batch on 1 and 2 gloo processes: weights within 1e-4, F1 within 1 point."""
    one, _ = run(
        ["--config", write_config(tmp_path, squad_files, tiny_model, "one.yaml", max_batches=6)],
        tmp_path / "one",
    )
    two, log = run(
        [
            "--config",
            write_config(tmp_path, squad_files, tiny_model, "two.yaml", slots=2, max_batches=6),
        ],
        tmp_path / "two",
        launcher=torchrun(2),
    )
    (w1,), (w2,) = checkpoints(tmp_path / "one")[6], checkpoints(tmp_path / "two")[6]
    a, b = weights(w1), weights(w2)
    for name in a:
        torch.testing.assert_close(a[name], b[name].to(a[name].dtype), rtol=0, atol=1e-4, msg=name)
    assert METRIC_KEYS <= set(two) and two["total"] == one["total"]
    assert two["f1"] == pytest.approx(one["f1"], abs=1.0)
    # Determined's loader takes a distributed run's checkpoint ("module."-prefixed weights) too.
    from test_export_predict import assert_loader_matches_export

    assert_loader_matches_export(w2, tmp_path / "loader")


def test_evaluation_split_by_question_matches_one_process(tmp_path, squad_files, tiny_model):
    """With weights that cannot move (learning rate 1e-30), 2 processes that each post-process their
    own questions give the 1-process predictions and metrics exactly (null odds to float noise)."""
    common = dict(max_batches=2, learning_rate=1e-30, global_batch_size=6)
    one, _ = run(
        ["--config", write_config(tmp_path, squad_files, tiny_model, "one.yaml", **common)],
        tmp_path / "one",
    )
    two, log = run(
        [
            "--config",
            write_config(tmp_path, squad_files, tiny_model, "two.yaml", slots=2, **common),
        ],
        tmp_path / "two",
        launcher=torchrun(2),
    )
    files = {
        name: [
            json.loads((tmp_path / out / "predictions" / "batch_2" / name).read_text())
            for out in ("one", "two")
        ]
        for name in ("predictions.json", "null_odds.json", "nbest_predictions.json")
    }
    assert (
        files["predictions.json"][0] == files["predictions.json"][1]
        and len(files["predictions.json"][0]) == 120
    )
    assert files["null_odds.json"][1] == pytest.approx(files["null_odds.json"][0], abs=1e-4)
    assert {q: [x["text"] for x in v] for q, v in files["nbest_predictions.json"][1].items()} == {
        q: [x["text"] for x in v] for q, v in files["nbest_predictions.json"][0].items()
    }
    assert {k: v for k, v in two.items() if not k.endswith("_thresh")} == {
        k: v for k, v in one.items() if not k.endswith("_thresh")
    }
    answered = [int(n) for n in re.findall(r"rank \d answered its (\d+) questions", log)]
    assert sorted(answered) == [60, 60]  # each rank its own half


def test_schedule_counts_optimizer_steps_with_aggregation(tmp_path, squad_files, tiny_model):
    """8 batches with aggregation_frequency 2 are 4 optimizer steps, taken at rates 1, 3/4, 1/2, 1/4
    of the peak (linear decay to 0 at the end of training), reported once per step (the reporting
    period must be a multiple of the aggregation). Counted in batches, the last step would still run
    at 5/8 of the peak."""
    config = write_config(
        tmp_path,
        squad_files,
        tiny_model,
        max_batches=8,
        aggregation_frequency=2,
        reporting_period_batches=2,
        warmup_fraction=0.0,
        learning_rate=1e-3,
    )
    _, log = run(["--config", config], tmp_path / "out")
    lrs = [
        float(re.search(r"'lr': ([0-9.e-]+)", line).group(1))
        for line in log.splitlines()
        if "report_training_metrics(" in line
    ]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_sharded_optimizer_matches_unsharded_and_resumes(tmp_path, squad_files, tiny_model):
    """2 gloo processes with the optimizer state sharded (ZeroRedundancyOptimizer) train the same
    weights as unsharded within 1e-5 after 6 batches; its checkpoints hold the whole (consolidated)
    optimizer state, and resuming one continues exactly (1e-6)."""
    common = dict(slots=2, max_batches=6, checkpoint_period_batches=3)
    run(
        ["--config", write_config(tmp_path, squad_files, tiny_model, "plain.yaml", **common)],
        tmp_path / "plain",
        launcher=torchrun(2),
    )
    zero_config = write_config(
        tmp_path, squad_files, tiny_model, "zero.yaml", zero_optimizer=True, **common
    )
    _, log = run(["--config", zero_config], tmp_path / "zero", launcher=torchrun(2))
    assert "AdamW state sharded across 2 ranks" in log
    (plain,) = checkpoints(tmp_path / "plain")[6]
    half, full = checkpoints(tmp_path / "zero")[3][0], checkpoints(tmp_path / "zero")[6][0]
    a, b = weights(plain), weights(full)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)
    state = torch.load(os.path.join(half, "state_dict.pth"), map_location="cpu", weights_only=False)
    optimizer = state["optimizers_state_dict"][0]
    n_params = sum(len(g["params"]) for g in optimizer["param_groups"])
    assert (
        n_params == len(a) - sum(1 for k in a if "position_ids" in k)
        and len(optimizer["state"]) == n_params
    )
    run(["--config", zero_config, "--resume", half], tmp_path / "zero", launcher=torchrun(2))
    resumed = [d for d in checkpoints(tmp_path / "zero")[6] if d != full][0]
    c = weights(resumed)
    for name in b:
        torch.testing.assert_close(b[name], c[name], rtol=0, atol=1e-6, msg=name)


def test_quick_run_on_the_first_questions(tmp_path, squad_files, tiny_model):
    """data.max_train_examples / max_eval_examples: the first N questions only, scored on the kept
    ones; part of the cache key, so the full files' features are never mistaken for them."""
    path = write_config(tmp_path, squad_files, tiny_model, max_batches=2)
    config = yaml.safe_load(open(path))
    config["data"].update(
        max_train_examples=40, max_eval_examples=30, cache_dir=str(tmp_path / "cache")
    )
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump(config))
    metrics, log = run(["--config", str(tmp_path / "quick.yaml")], tmp_path / "out")
    assert metrics["total"] == 30
    assert (
        "keeping the first 40 of 400 questions" in log
        and "keeping the first 30 of 120 questions" in log
    )
    predictions = json.loads(
        (tmp_path / "out" / "predictions" / "batch_2" / "predictions.json").read_text()
    )
    assert len(predictions) == 30
    assert len(os.listdir(tmp_path / "cache" / "features")) == 4  # 2 entries + their lock files


@pytest.mark.slow
def test_four_processes_match_one_with_a_rank_owning_no_question(tmp_path, squad_files, tiny_model):
    """4 gloo processes, the same global batch and a validation batch of its own (3 per slot, not the
    training's 2), on a 3-question validation file: one rank owns no question. With weights that
    cannot move, the predictions and metrics are the 1-process run's. Ranks 1-3 take the data
    files' keys from their chief instead of hashing them. Over 60 s (378 s measured on 2 busy cores,
    5 trial processes): worth it as the only run with more ranks than questions and with several
    non-chief ranks on one node; kept to 2 batches of the tiny model."""
    import make_squad_data

    dev = tmp_path / "dev-3.json"
    dev.write_text(json.dumps(make_squad_data.make_dataset(3, 7, 1, "dev")))
    common = dict(
        max_batches=2, learning_rate=1e-30, global_batch_size=8, per_slot_validation_batch_size=3
    )
    files = (squad_files[0], str(dev))
    one, _ = run(
        ["--config", write_config(tmp_path, files, tiny_model, "one.yaml", **common)],
        tmp_path / "one",
    )
    four, log = run(
        ["--config", write_config(tmp_path, files, tiny_model, "four.yaml", slots=4, **common)],
        tmp_path / "four",
        launcher=torchrun(4),
    )
    predictions = [
        json.loads((tmp_path / out / "predictions" / "batch_2" / "predictions.json").read_text())
        for out in ("one", "four")
    ]
    assert predictions[0] == predictions[1] and len(predictions[0]) == 3
    assert {k: v for k, v in four.items() if not k.endswith("_thresh")} == {
        k: v for k, v in one.items() if not k.endswith("_thresh")
    }
    answered = [int(n) for n in re.findall(r"rank \d answered its (\d+) questions", log)]
    assert sorted(answered) == [0, 1, 1, 1]

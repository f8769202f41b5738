"""The last checkpoint holds the final validation's predictions and the threshold tuned on it,
whatever the periods (callbacks.CheckpointPeriod)."""

import json

import pytest
from trial_runs import checkpoints, run, write_config


@pytest.mark.parametrize(
    "validation_period",
    [
        5,  # the checkpoint period (4) divides the length (12), the validation period does not
        0,  # validation only at the end
    ],
)
def test_last_checkpoint_holds_final_predictions_and_threshold(
    tmp_path, squad_files, tiny_model, validation_period
):
    # About 50 s each on 2 busy cores: 12 batches and up to 3 validations, each its own process.
    out = tmp_path / "out"
    config = write_config(
        tmp_path,
        squad_files,
        tiny_model,
        max_batches=12,
        checkpoint_period_batches=4,
        validation_period_batches=validation_period,
        export_hf_model=False,
    )
    metrics, _ = run(["--config", config], out)
    found = checkpoints(out)
    # Every checkpoint period and (Determined's rule) every validation has one; one at batch 12.
    assert {4, 8} <= set(found) and max(found) == 12 and len(found[12]) == 1
    last = found[12][0]
    with open(f"{last}/predictions/metrics.json") as f:
        assert json.load(f)["f1"] == pytest.approx(metrics["f1"])
    with open(f"{last}/predictions/predictions.json") as f:
        assert len(json.load(f)) == metrics["total"]
    with open(f"{last}/hf/config.json") as f:
        carried = json.load(f)["squad_settings"]
    assert carried["null_score_diff_threshold"] == pytest.approx(metrics["best_f1_thresh"])
    assert carried["null_score_diff_threshold_source"].startswith(
        "tuned on the validation after batch 12"
    ), carried

"""Every value settings.py accepts for every switch runs to metrics: a few batches and a
validation each. Independent switches share a run; each accepted value is run at least once.
Precision is checked inside the forward pass: the autocast state the model's output layer runs
under, for the run's device type (this CPU), as a GPU run would take the same branch."""

import pytest
import torch
from trial_runs import METRIC_KEYS, checkpoints, run, torchrun, write_config

import model_def
import models

# Each accepted value of every switch, once at least (settings.py: amp none/bf16/fp16, optimizer
# adamw/radam, booleans both ways, aggregation_frequency 1 and more).
RUNS = {
    "defaults": dict(
        amp="none",
        optimizer="adamw",
        pad_to_max_length=False,
        bucket_by_length=True,
        gradient_checkpointing=False,
        export_hf_model=False,
        aggregation_frequency=1,
    ),
    "bf16_checkpointing": dict(
        amp="bf16", gradient_checkpointing=True, export_hf_model=True, bucket_by_length=False
    ),
    "fp16_radam_padded_aggregated": dict(
        amp="fp16",
        optimizer="radam",
        pad_to_max_length=True,
        aggregation_frequency=2,
        export_hf_model=True,
    ),
}
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(device: str = "cpu"):
    """The autocast dtype in effect for `device`, None when autocast is off (torch 2.4 has the
    device-type functions; torch 2.3 only the per-device ones)."""
    if hasattr(torch, "get_autocast_dtype"):
        on, dtype = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    else:
        on, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return dtype if on else None


@pytest.mark.parametrize("name", list(RUNS))
def test_switch_values_run_to_metrics(tmp_path, squad_files, tiny_model, monkeypatch, name):
    # In this process (model_def.main), so a hook can look inside the forward pass.
    switches = RUNS[name]
    seen = {"train": set(), "eval": set()}
    load_model = models.load_model

    def load_with_probe(hp):
        model = load_model(hp)

        def probe(module, args):
            seen["train" if module.training else "eval"].add(autocast_dtype())

        model.qa_outputs.register_forward_pre_hook(probe)
        return model

    monkeypatch.setattr(models, "load_model", load_with_probe)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # main() points it at --output-dir
    out = tmp_path / "out"
    config = write_config(tmp_path, squad_files, tiny_model, max_batches=4, **switches)
    metrics = model_def.main(["--config", config, "--output-dir", str(out)])
    assert METRIC_KEYS <= set(metrics) and metrics["total"] == 120
    expected = AUTOCAST[switches["amp"]]
    assert seen == {"train": {expected}, "eval": {expected}}
    (last,) = checkpoints(out)[4]
    state = torch.load(f"{last}/state_dict.pth", map_location="cpu", weights_only=False)
    if switches["amp"] == "fp16":
        # The gradient scaler ran (scale, unscale, step, update) and Determined saved its state.
        scaler = state["scaler_state_dict"]
        assert scaler["scale"] >= 1 and scaler["_growth_tracker"] >= 1, scaler
    else:
        assert "scaler_state_dict" not in state
    has_weights = any(p.name.endswith(".safetensors") for p in (tmp_path / last / "hf").iterdir())
    assert has_weights == switches["export_hf_model"]


def test_sharded_optimizer_fp16_aggregated_on_two_processes(tmp_path, squad_files, tiny_model):
    # ZeRO needs several processes; with fp16 the scaler unscales the sharded optimizer's gradients.
    config = write_config(
        tmp_path,
        squad_files,
        tiny_model,
        slots=2,
        max_batches=4,
        amp="fp16",
        zero_optimizer=True,
        aggregation_frequency=2,
    )
    metrics, log = run(["--config", config], tmp_path / "out", launcher=torchrun(2))
    assert METRIC_KEYS <= set(metrics) and metrics["total"] == 120
    assert "precision: fp16 on cpu with a gradient scaler" in log
    assert "state sharded across 2 ranks" in log
    (last,) = checkpoints(tmp_path / "out")[4]
    state = torch.load(f"{last}/state_dict.pth", map_location="cpu", weights_only=False)
    assert state["scaler_state_dict"]["_growth_tracker"] >= 1

"""Turn a Determined checkpoint of this trial into a Hugging Face model directory.

    python export.py CHECKPOINT_DIR OUT_DIR [--threshold tuned|config|VALUE]

OUT_DIR gets the model (safetensors), its config (with `squad_settings`: the feature and
post-processing settings it was trained and evaluated with) and tokenizer, and the pipeline code
(qa_pipeline.py), so all of these load it directly:

    transformers.pipeline("question-answering", model=OUT_DIR, trust_remote_code=True)
    transformers.AutoModelForQuestionAnswering.from_pretrained(OUT_DIR)
    python predict.py OUT_DIR --question Q --context C
"""
import argparse
import json
import os
import pickle
from typing import Any, Dict, Optional, Tuple

import torch
from transformers import AutoConfig, AutoModelForQuestionAnswering

import data
import model_def  # also allowlists the NumPy types in Determined's checkpoints for torch.load
import qa_pipeline
import settings


def load_checkpoint(checkpoint_dir: str) -> Tuple[torch.nn.Module, Any, Dict[str, Any]]:
    """(model, tokenizer, hyperparameters) from a Determined checkpoint directory written by this trial."""
    state_path = os.path.join(checkpoint_dir, "state_dict.pth")
    if not os.path.isfile(state_path):
        raise settings.UserError(f"{checkpoint_dir}: no state_dict.pth; pass a Determined checkpoint directory "
                                 "(det checkpoint download UUID) or an exported model directory")
    try:
        with open(os.path.join(checkpoint_dir, "load_data.json")) as f:
            # Only the model's settings matter here: a checkpoint written under older rules still loads.
            hp = settings.hyperparameters(json.load(f)["hparams"] or {}, problems=[])
        source = model_def.checkpoint_model_source(checkpoint_dir, hp)
        model = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(source))
        # Before torch 2.6 there is no allowlist for the NumPy RNG state Determined saves beside the
        # weights (model_def.WEIGHTS_ONLY_LOADS): there, as in Determined's own loads, torch.load unpickles.
        state = torch.load(state_path, map_location="cpu", weights_only=model_def.WEIGHTS_ONLY_LOADS)
        model.load_state_dict({k.removeprefix("module."): v for k, v in state["models_state_dict"][0].items()})
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError, settings.ConfigError) as err:
        raise settings.UserError(f"{checkpoint_dir}: not a readable checkpoint of this trial "
                                 f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    return model.eval(), data.load_tokenizer(source, hp["do_lower_case"]), hp


def validation_metrics(checkpoint_dir: str) -> Optional[Dict[str, Any]]:
    """The metrics of the validation a checkpoint carries the predictions of, if any."""
    try:
        with open(os.path.join(checkpoint_dir, "predictions", "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def export(checkpoint_dir: str, out_dir: str, threshold="tuned") -> Dict[str, Any]:
    """Writes the model directory; returns the settings it carries."""
    model, tokenizer, hp = load_checkpoint(checkpoint_dir)
    carried = data.squad_settings(hp, model.config, validation_metrics(checkpoint_dir), threshold)
    with data.atomic_dir(out_dir) as tmp:
        qa_pipeline.save(model, tokenizer, carried, tmp)
    return carried


def threshold_choice(text: str):
    if text in ("tuned", "config"):
        return text
    try:
        return settings.finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: give tuned, config or a number") from None


def check_out_dir(out_dir: str) -> None:
    """OUT_DIR is replaced as a whole, so it must be new, empty, or an earlier export: nothing else
    in it may be lost."""
    if os.path.isdir(out_dir):
        files = set(os.listdir(out_dir))
        if files and not {"config.json", "qa_pipeline.py"} <= files:
            raise settings.ConfigError(f"{out_dir}: exists and is not an earlier export (export replaces the "
                                       "whole directory); choose a new directory")
    elif os.path.exists(out_dir):
        raise settings.ConfigError(f"{out_dir}: exists and is not a directory; choose a new directory")


def main(argv=None) -> None:
    parser = settings.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--threshold", type=threshold_choice, default="tuned",
                        help="the no-answer threshold the model carries: tuned (default: the one that maximized F1 on "
                             "the checkpoint's validation), config (the config's null_score_diff_threshold) or a number")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.checkpoint_dir):
        parser.error(f"{args.checkpoint_dir}: no such checkpoint directory")
    check_out_dir(args.out_dir)
    carried = export(args.checkpoint_dir, args.out_dir, args.threshold)
    print(json.dumps({"exported": os.path.abspath(args.out_dir),
                      "null_score_diff_threshold": carried["null_score_diff_threshold"],
                      "null_score_diff_threshold_source": carried["null_score_diff_threshold_source"]}))


if __name__ == "__main__":
    settings.run_command(main)

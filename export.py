"""Turn a Determined checkpoint of this trial into a Hugging Face model directory.

    python export.py CHECKPOINT_DIR OUT_DIR

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
from typing import Any, Dict, Tuple

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
            hp = settings.hyperparameters(json.load(f)["hparams"])
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


def export(checkpoint_dir: str, out_dir: str) -> str:
    model, tokenizer, hp = load_checkpoint(checkpoint_dir)
    with data.atomic_dir(out_dir) as tmp:
        qa_pipeline.save(model, tokenizer, data.squad_settings(hp, model.config), tmp)
    return out_dir


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
    args = parser.parse_args(argv)
    if not os.path.isdir(args.checkpoint_dir):
        parser.error(f"{args.checkpoint_dir}: no such checkpoint directory")
    check_out_dir(args.out_dir)
    export(args.checkpoint_dir, args.out_dir)
    print(json.dumps({"exported": os.path.abspath(args.out_dir)}))


if __name__ == "__main__":
    settings.run_command(main)

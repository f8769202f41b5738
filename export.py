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
from typing import Any, Dict

import errors
import files
import models
import qa_pipeline


def export(checkpoint_dir: str, out_dir: str, threshold="tuned") -> Dict[str, Any]:
    """Writes the model directory; returns the settings it carries."""
    model, tokenizer, hp = models.load_checkpoint(checkpoint_dir)
    carried = models.squad_settings(
        hp, model.config, models.validation_metrics(checkpoint_dir), threshold
    )
    with files.atomic_dir(out_dir) as tmp:
        qa_pipeline.save(model, tokenizer, carried, tmp)
    return carried


def threshold_choice(text: str):
    if text in ("tuned", "config"):
        return text
    try:
        return errors.finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: give tuned, config or a number") from None


def check_out_dir(out_dir: str) -> None:
    """OUT_DIR is replaced as a whole, so it must be new, empty, or an earlier export: nothing else
    in it may be lost."""
    if os.path.isdir(out_dir):
        files = set(os.listdir(out_dir))
        if files and not {"config.json", "qa_pipeline.py"} <= files:
            raise errors.ConfigError(
                f"{out_dir}: exists and is not an earlier export (export replaces the "
                "whole directory); choose a new directory"
            )
    elif os.path.exists(out_dir):
        raise errors.ConfigError(
            f"{out_dir}: exists and is not a directory; choose a new directory"
        )


def main(argv=None) -> None:
    parser = errors.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint_dir")
    parser.add_argument("out_dir")
    parser.add_argument(
        "--threshold",
        type=threshold_choice,
        default="tuned",
        help="the no-answer threshold the model carries: tuned (default: the one that maximized F1 on "
        "the checkpoint's validation), config (the config's null_score_diff_threshold) or a number",
    )
    args = parser.parse_args(argv)
    if not os.path.isdir(args.checkpoint_dir):
        parser.error(f"{args.checkpoint_dir}: no such checkpoint directory")
    check_out_dir(args.out_dir)
    carried = export(args.checkpoint_dir, args.out_dir, args.threshold)
    print(
        json.dumps(
            {
                "exported": os.path.abspath(args.out_dir),
                "null_score_diff_threshold": carried["null_score_diff_threshold"],
                "null_score_diff_threshold_source": carried["null_score_diff_threshold_source"],
            }
        )
    )


if __name__ == "__main__":
    errors.run_command(main)

"""Answer questions with a trained model, on a CPU or a GPU; prints JSON.

    python predict.py MODEL_DIR --question Q --context C [--nbest N]
    python predict.py MODEL_DIR --file SQUAD.json [--out DIR] [--nbest N]

MODEL_DIR is a directory written by export.py (or any Hugging Face extractive-QA model directory)
or a Determined checkpoint directory of this trial. The features, n-best search, null score and
threshold are the same as in evaluation. With --file, it is an evaluation-only run: predictions.json,
nbest_predictions.json, null_odds.json and metrics.json (the official SQuAD 2.0 keys) go to --out,
and the metrics are printed on the last line.
"""

import argparse
import json
import os
from typing import Any, Dict

import numpy as np
import torch

import cache
import data
import errors
import models
import postprocess
import samplers
import settings
import squad_eval
import squad_file


def load(model_dir: str):
    """(model, tokenizer, settings) from an exported directory or a Determined checkpoint."""
    if os.path.isfile(os.path.join(model_dir, "state_dict.pth")):
        model, tokenizer, hp = models.load_checkpoint(model_dir)
        # As export.py would: the threshold tuned on the checkpoint's validation, where it has one.
        carried = models.squad_settings(hp, model.config, models.validation_metrics(model_dir))
        hp["null_score_diff_threshold"] = carried["null_score_diff_threshold"]
        return model, tokenizer, hp
    model = models.load_pretrained_model(model_dir).eval()
    carried = getattr(model.config, "squad_settings", None) or {}
    try:  # a directory without squad_settings (any Hugging Face QA model) gets the defaults
        hp = settings.hyperparameters({k: v for k, v in carried.items() if k in settings.HPARAMS})
    except errors.ConfigError as err:
        raise errors.UserError(f"{model_dir}/config.json: squad_settings: {err}") from err
    return model, models.load_tokenizer(model_dir, hp["do_lower_case"]), hp


@torch.no_grad()
def predict(model, tokenizer, hp: Dict[str, Any], examples: data.Examples, batch_size: int = 32):
    """(predictions, nbest, null_odds) for `examples`, exactly as the trial's evaluation computes them."""
    spec = models.feature_spec(
        hp, model.config.model_type, getattr(model.config, "type_vocab_size", 0)
    )
    arrays = data.featurize(examples, tokenizer, spec, training=False)
    collate = data.Collator(arrays)
    device = next(model.parameters()).device
    parts = []
    for idx in samplers.LengthBucketBatchSampler(arrays["lengths"], batch_size, shuffle=False):
        batch = collate(idx)
        rows = batch.pop("feature_index").numpy()
        out = model(**{k: v.to(device) for k, v in batch.items()})
        parts.append(
            (rows, out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy())
        )
    index, batched_start, batched_end = postprocess.stack_logits(parts)
    # Back in feature order: the batches cover every feature once.
    start, end = np.empty_like(batched_start), np.empty_like(batched_end)
    start[index], end[index] = batched_start, batched_end
    contexts = [examples.contexts[c] for c in examples.context_index]
    return postprocess.postprocess(
        examples.ids,
        contexts,
        arrays["example_index"],
        arrays["offsets"],
        start,
        end,
        n_best_size=hp["n_best_size"],
        max_answer_length=hp["max_answer_length"],
        null_score_diff_threshold=hp["null_score_diff_threshold"],
    )


def main(argv=None) -> None:
    parser = errors.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("--question")
    parser.add_argument("--context")
    parser.add_argument(
        "--file",
        help="a SQuAD-format file: answer (and, where it has answers, score) every question",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="with --file: skip invalid records (logged and counted) instead of stopping",
    )
    parser.add_argument(
        "--out", help="with --file: where to write the predictions and metrics files"
    )
    parser.add_argument("--nbest", type=int, default=0, help="also print the N best answers")
    parser.add_argument(
        "--threshold",
        type=errors.finite_float,
        help="null_score_diff_threshold (default: the model's)",
    )
    args = parser.parse_args(argv)
    # Every usage mistake before the model is loaded or a question answered.
    if bool(args.file) == (args.question is not None or args.context is not None) or (
        args.question is None
    ) != (args.context is None):
        parser.error("give either --question and --context, or --file")
    for flag, text in (("--question", args.question), ("--context", args.context)):
        if text is not None and not text.strip():
            parser.error(f"{flag} is empty")
    if args.nbest < 0:
        parser.error(f"--nbest {args.nbest}: give 0 or more")
    if args.out and not args.file:
        parser.error("--out goes with --file")
    if args.skip_invalid and not args.file:
        parser.error("--skip-invalid goes with --file")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out}: exists and is not a directory")
    if not os.path.isdir(args.model_dir):
        parser.error(
            f"{args.model_dir}: no such model directory (an export.py output or a checkpoint directory)"
        )
    records = None
    if args.file:  # read and checked before the model is loaded
        try:
            records = squad_file.read(
                args.file, "validation", args.skip_invalid, squad_file.COMMAND_ADVICE
            )
        except OSError as err:
            raise cache.unreadable(args.file, err) from err
    model, tokenizer, hp = load(args.model_dir)
    if args.threshold is not None:
        hp["null_score_diff_threshold"] = args.threshold
    if torch.cuda.is_available():
        model.cuda()
    if args.file:
        predictions, nbest, null_odds = predict(model, tokenizer, hp, data.examples(records))
        metrics = squad_eval.evaluate(
            records.articles(),
            predictions,
            null_odds,
            hp["null_score_diff_threshold"],
            span_preds=postprocess.best_spans(nbest),
        )
        if args.out:
            squad_eval.write_predictions(args.out, predictions, nbest, null_odds, metrics)
        print(json.dumps(metrics))
        return
    examples = data.Examples(
        ["question"], [args.question], [args.context], [0], [-1], [""], [False]
    )
    predictions, nbest, null_odds = predict(model, tokenizer, hp, examples)
    best = next((x for x in nbest["question"] if x["text"]), None)
    result = {
        "answer": predictions["question"],
        "no_answer": predictions["question"] == "",
        "score": best["score"] if best else None,
        "probability": best["probability"] if best else None,
        "null_score_diff": null_odds["question"],
        "threshold": hp["null_score_diff_threshold"],
    }
    if args.nbest:
        result["nbest"] = nbest["question"][: args.nbest]
    print(json.dumps(result))


if __name__ == "__main__":
    errors.run_command(main)
